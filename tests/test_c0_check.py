"""The C0 check (notebook 04's task-level observation) on hand-made numbers, and the int-list parameters."""
import pandas as pd
import pytest

from mdrl_lib.claims import check_c0, precondition_warning, record_check, ledger


def drops(changes, high=None):
    return pd.DataFrame({"rl_seed": range(len(changes)), "change": changes,
                         "ci_low": [c - 0.02 for c in changes],
                         "ci_high": high if high is not None else [c + 0.02 for c in changes],
                         "p_value": [0.001] * len(changes)})


def test_c0_supported_when_every_seed_falls_tested_as_outcome():
    check = check_c0(drops([-0.05, -0.04, -0.06]))
    assert check.supported is True and check.claim == "C0" and check.name == "math-falls-after-later-stages"
    assert check.tested == "outcome" and check.verdict == "supported (outcome only)"
    # mean -0.05, sd 0.01, t_{0.975, 2} = 4.303: half-width 4.303 * 0.01 / sqrt(3) = 0.0248
    assert check.figures["mean_change"] == pytest.approx(-0.05)
    assert check.figures["mean_ci_high"] == pytest.approx(-0.05 + 4.302653 * 0.01 / 3 ** 0.5, abs=1e-6)
    assert not any("one RL seed" in c for c in check.caveats)


def test_c0_not_supported_when_the_seed_spread_reaches_zero():
    check = check_c0(drops([-0.08, -0.01, 0.02]))
    assert check.supported is False and "not below 0" in check.why


def test_c0_with_one_seed_uses_its_paired_interval_and_says_so_in_a_caveat():
    one = check_c0(drops([-0.05]))
    assert one.supported is True and any(c.startswith("one RL seed") for c in one.caveats)
    assert check_c0(drops([-0.05], high=[0.001])).supported is False


def test_c0_not_testable_on_a_base_that_misses_a_precondition():
    check = check_c0(drops([-0.05, -0.04, -0.06]), preconditions_hold=False)
    assert check.supported is None and "preconditions" in check.why
    assert check.figures["verdict_if_premises_held"] == "supported (outcome only)"
    with pytest.raises(ValueError, match="lacks columns"):
        check_c0(pd.DataFrame({"change": [0.1]}))


def test_c0_is_recorded_and_reported_first_in_the_ledger(tmp_path):
    record_check(tmp_path, check_c0(drops([-0.05, -0.04])), notebook="04_sequential_rl")
    table = ledger(tmp_path)
    assert table.iloc[0]["claim"] == "C0" and table.iloc[0]["notebook"] == "04_sequential_rl"


def test_precondition_warning_names_each_failed_row():
    table = pd.DataFrame({"check": ["a", "math: right numbers"], "value": [0.5, 0.6], "threshold": [0.95, 0.8],
                          "holds": [True, False], "why": ["", ""]})
    message = precondition_warning(table)
    assert message.startswith("THIS BASE MISSES 1 PRECONDITION") and "math: right numbers: 0.600" in message
    assert precondition_warning(table.assign(holds=True)) == ""


def test_integer_list_parameters():
    from mdrl_lib.config import ConfigError
    from mdrl_lib.recipes.nb04 import Params

    assert Params(rl_seeds="2, 0,1").rl_seeds == "2,0,1"
    assert Params(rl_seeds=4).rl_seeds == "4" and Params(world_seeds="").world_seeds == ""
    for bad in ("0,1.5", "x", "-1", True):
        with pytest.raises(ConfigError, match="rl_seeds"):
            Params(rl_seeds=bad)


def test_c0_names_the_spread_it_judged_the_fall_against():
    assert check_c0(drops([-0.05, -0.04])).baseline.endswith("against the RL-seed spread on one base")
    assert check_c0(drops([-0.05])).baseline.endswith("against the one RL seed's paired interval")
