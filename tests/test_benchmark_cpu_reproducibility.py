"""benchmarks/cpu_reproducibility.py: its grid of settings and the rule that finds a setting identical across the
emulated instruction sets (no training here)."""
from __future__ import annotations


from tests.script_runner import ROOT, load_script


def _module():
    return load_script(ROOT / "benchmarks" / "cpu_reproducibility.py", keep_threads=True)


def test_the_grid_crosses_every_instruction_set_with_mkl_and_onednn():
    module = _module()
    assert len(module.SETTINGS) == 1 + 3 * 2 * 2
    assert module.SETTINGS["ATEN avx2, MKL_CBWR=COMPATIBLE, oneDNN off"] == {
        "ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE", "MDRL_ONEDNN": "0"}


def test_a_setting_counts_only_when_every_instruction_set_agrees_under_it():
    module = _module()
    rows = [{"setting": "as found", "sha256": "x"}]
    rows += [{"setting": f"ATEN {c}", "sha256": c} for c in module.CAPABILITIES]  # all differ
    rows += [{"setting": f"ATEN {c}, MKL_CBWR=COMPATIBLE", "sha256": "same"} for c in module.CAPABILITIES]
    rows += [{"setting": f"ATEN {c}, oneDNN off", "sha256": "same"} for c in module.CAPABILITIES[:2]]  # one missing
    assert module.identical_across_capabilities(rows) == ["MKL_CBWR=COMPATIBLE"]
