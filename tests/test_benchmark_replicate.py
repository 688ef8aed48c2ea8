"""benchmarks/replicate_determinism.py: the command it runs twice and the manifests it compares (no training)."""
from __future__ import annotations

from pathlib import Path

from tests.script_runner import ROOT, load_script


def test_the_determinism_check_runs_replicate_with_a_min_seeds_of_its_own_seed_count(tmp_path):
    module = load_script(ROOT / "benchmarks" / "replicate_determinism.py", keep_threads=True)
    command = module.command(tmp_path, "1000-1001", 2, ["00", "01"])
    assert command[1:4] == ["-m", "mdrl_lib", "replicate"]
    assert command[command.index("--min-seeds") + 1] == "2" and command[-3:] == ["--only", "00", "01"]
    assert command[command.index("--out") + 1] == str(tmp_path / "ledger.json")


def test_manifests_are_found_per_seed_with_their_times(tmp_path):
    module = load_script(ROOT / "benchmarks" / "replicate_determinism.py", keep_threads=True)
    manifest = tmp_path / "seed-1000" / "store" / "base-1" / "manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("{}")
    (tmp_path / "seed-1000" / "store" / "debris").mkdir()
    found = module.manifests(tmp_path)
    assert list(found) == [str(Path("seed-1000/store/base-1/manifest.json"))]
    assert found[str(Path("seed-1000/store/base-1/manifest.json"))] == manifest.stat().st_mtime
