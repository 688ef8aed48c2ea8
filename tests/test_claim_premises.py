"""The verdict framework: premises force "not testable here", outcome-only support is marked, the ledger counts
every kind, and every threshold comes from the versioned rules file."""
import json

import numpy as np
import pandas as pd
import pytest

from mdrl_lib.claims.record import (VERDICTS, ClaimCheck, checks_table, ledger, load_check, premise, premises_text,
                                    record_check, verdict_counts)
from mdrl_lib.claims.rules import RULES_VERSION, load_rules, rule


def _check(**kw):
    base = dict(claim="C6", name="gd-contraction", statement="s", paper="p", measured="m", baseline="b",
                supported=True, why="ratio 0.5 <= bound 0.9")
    return ClaimCheck(**{**base, **kw})


def test_a_failed_premise_makes_the_verdict_not_testable_and_keeps_the_rules_verdict():
    check = _check(premises=[premise("stationarity", 3.61, 0.1, False), premise("curvature on S", 0.2, 0.0, True)])
    assert check.supported is None and check.verdict == "not testable here"
    assert check.why.startswith("not testable here: stationarity: 3.61 (threshold 0.1) FAILS")
    assert check.figures["verdict_if_premises_held"] == "supported"
    assert [p["name"] for p in check.failed_premises] == ["stationarity"]


def test_premises_that_hold_leave_the_verdict_alone():
    check = _check(supported=False, premises=[premise("curvature on S", 0.2, 0.0, np.bool_(True))])
    assert check.verdict == "not supported" and "verdict_if_premises_held" not in check.figures


def test_outcome_only_support_is_marked_and_tested_is_validated():
    assert _check(tested="outcome").verdict == "supported (outcome only)"
    assert _check(tested="outcome", supported=False).verdict == "not supported"
    with pytest.raises(ValueError, match="mechanism, outcome"):
        _check(tested="both")


def test_premise_rejects_a_non_bool_and_a_record_rejects_a_malformed_premise():
    with pytest.raises(TypeError, match="holds must be a bool"):
        premise("x", 1.0, 0.5, "yes")
    with pytest.raises(ValueError, match="lacks"):
        _check(premises=[{"name": "x", "value": 1.0}])
    with pytest.raises(TypeError, match="caveats"):
        _check(caveats="one seed")


def test_premises_text_lists_failures_first():
    text = premises_text([premise("a", 1.0, 2.0, True), premise("b", 5.0, 2.0, False)])
    assert text.index("b: 5 (threshold 2) FAILS") < text.index("a: 1 (threshold 2) holds")


def test_a_record_round_trips_premises_caveats_and_the_rules_version(tmp_path):
    check = _check(tested="outcome", caveats=["one domain, one seed"], premises=[premise("p", 1, 2, True)])
    path = record_check(tmp_path, check, "03_perturbation_theory")
    record = json.loads(path.read_text())
    assert record["rules_version"] == RULES_VERSION and record["verdict"] == "supported (outcome only)"
    assert load_check(path) == check
    table = ledger(tmp_path)
    row = table[table["claim"] == "C6"].iloc[0]
    assert row["tested"] == "outcome" and row["caveats"] == "one domain, one seed" and row["rules"] == RULES_VERSION


def test_verdict_counts_lists_every_kind_and_refuses_an_unknown_one():
    table = checks_table([_check(), _check(name="b", tested="outcome"), _check(name="c", supported=None)])
    counts = verdict_counts(table)
    assert list(counts) == list(VERDICTS) and counts == {"supported": 1, "supported (outcome only)": 1,
                                                          "not supported": 0, "not testable here": 1}
    with pytest.raises(ValueError, match="unknown verdict"):
        verdict_counts(pd.DataFrame({"verdict": ["maybe"]}))


def test_rules_come_from_the_versioned_file_with_clear_errors(tmp_path):
    assert rule("C5", "rtol") == load_rules()["C5"]["rtol"] and rule("C1", "paper_range") == (0.77, 0.89)
    with pytest.raises(KeyError, match="valid sections: .*C0"):
        rule("C9", "alpha")
    with pytest.raises(KeyError, match="valid: alpha"):
        rule("C7", "beta")
    bad = tmp_path / "rules.toml"
    bad.write_text("[C0]\nalpha = 0.05\n")
    with pytest.raises(ValueError, match="version"):
        load_rules(bad)
    with pytest.raises(FileNotFoundError):
        load_rules(tmp_path / "none.toml")


def test_the_claim_modules_read_their_thresholds_from_the_rules_file():
    from mdrl_lib import claims

    assert claims.C5_RTOL == rule("C5", "rtol") and claims.C0_ALPHA == rule("C0", "alpha")
    assert claims.SCORE_CEILING == rule("base", "score_ceiling") and claims.C4_MIN_SHARE == rule("C4", "min_share")
