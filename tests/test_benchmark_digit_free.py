"""benchmarks/digit_free_world.py: it loads, names both worlds, and its options parse (no training here)."""
from __future__ import annotations

import pytest

from tests.script_runner import ROOT, load_script


def test_the_digit_free_benchmark_builds_both_worlds_from_one_run_setting(capsys):
    module = load_script(ROOT / "benchmarks" / "digit_free_world.py", keep_threads=True)
    assert module.WORLDS == {"default world": False, "digit-free world": True}
    with pytest.raises(SystemExit) as stop:
        module.main(["--help"])
    assert stop.value.code == 0 and "--seeds" in capsys.readouterr().out
