"""benchmarks/local_regime.py: its rates and options (no training here)."""
from __future__ import annotations

import pytest

from tests.script_runner import ROOT, load_script


def test_the_local_regime_sweep_parses_and_spans_the_default_rates(capsys):
    module = load_script(ROOT / "benchmarks" / "local_regime.py", keep_threads=True)
    from mdrl_lib.recipes.nb03 import Params

    assert module.RATES == tuple(sorted(module.RATES)) and Params().local_lr in module.RATES
    with pytest.raises(SystemExit) as stop:
        module.main(["--help"])
    assert stop.value.code == 0 and "--rates" in capsys.readouterr().out
