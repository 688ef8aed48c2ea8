"""K1, the kit's own comparison (mdrl_lib.claims.nb06): the single refresh on the Pareto front, on hand-made rows;
its sentences about the front; and its place in the ledger after C7."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from mdrl_lib.claims import CLAIM_IDS, check_k1, ledger, record_check
from mdrl_lib.claims import nb06 as k1
from mdrl_lib.claims.rules import rule

CAP = 1000.0
DAMAGE = {"diff": -0.1, "se": 0.02, "z": -5.0, "n": 500}  # a fall of 5 paired standard errors


def row(method, family, cost, damaged, others, items=500):
    return {"method": method, "family": family, "cost": cost, "items": items, "damaged_change": damaged,
            "others_mean": others}


def rows(**extra):
    out = [row("refresh 150 steps", "refresh", CAP, 0.10, 0.00),
           row("rollback magnitude k=0.1", "rollback", 0.0, 0.05, 0.03),  # better on the others only: no dominance
           row("merge ties density 0.2", "merge", 0.0, 0.02, -0.01),
           row("Math expert", "expert", float("nan"), 0.20, 0.10)]  # no cost: never dominates
    return out + [row(**e) for e in extra.get("more", [])]


def test_the_refresh_on_the_front_is_supported_as_an_outcome():
    check = check_k1(rows(), DAMAGE, cost_cap=CAP, domain="math")
    assert check.claim == "K1" and check.name == "recovery-front" and check.tested == "outcome"
    assert check.supported is True and check.verdict == "supported (outcome only)"
    assert check.statement == rule("K1", "statement")
    assert check.figures["compared"] == 2 and check.figures["dominated_by"] is None
    assert "not a claim of the paper" in check.paper
    assert any("one world seed" in c for c in check.caveats) and any("kit's own choice" in c for c in check.caveats)


def test_a_method_no_dearer_and_better_on_both_makes_it_not_supported():
    better = {"method": "rollback revert_stage", "family": "rollback", "cost": 0.0, "damaged": 0.12, "others": 0.01}
    check = check_k1(rows(more=[better]), DAMAGE, cost_cap=CAP, domain="math")
    assert check.supported is False and check.verdict == "not supported"
    assert check.figures["dominated_by"] == "rollback revert_stage"
    # equal changes at a lower cost also dominate (the front is of changes and cost)
    tie = {"method": "merge x", "family": "merge", "cost": 0.0, "damaged": 0.10, "others": 0.00}
    assert check_k1(rows(more=[tie]), DAMAGE, cost_cap=CAP, domain="math").supported is False
    # a dearer method than the cap is left out, however good
    dear = {"method": "long refresh", "family": "alternating", "cost": 2 * CAP, "damaged": 0.5, "others": 0.5}
    assert check_k1(rows(more=[dear]), DAMAGE, cost_cap=CAP, domain="math").supported is True


def test_too_little_damage_or_too_few_items_is_not_testable():
    small = {"diff": -0.02, "se": 0.02, "z": -1.0, "n": 500}
    check = check_k1(rows(), small, cost_cap=CAP, domain="math")
    assert check.supported is None and check.verdict == "not testable here"
    assert check.figures["verdict_if_premises_held"] == "supported (outcome only)"
    assert check.premises[0]["value"] == 1.0 and check.premises[0]["threshold"] == rule("premises",
                                                                                        "damage_min_standard_errors")
    few = [dict(r, items=40) for r in rows()]
    assert check_k1(few, DAMAGE, cost_cap=CAP, domain="math").verdict == "not testable here"
    no_refresh = [r for r in rows() if r["family"] != "refresh"]
    assert check_k1(no_refresh, DAMAGE, cost_cap=CAP, domain="math").supported is None


def test_dominated_by_reads_cost_and_both_changes():
    table = rows(more=[{"method": "r", "family": "rollback", "cost": 10.0, "damaged": 0.05, "others": 0.03}])
    # "r" ties the magnitude rollback on both changes but costs more: the magnitude rollback dominates it
    assert k1.dominated_by(table, "r") == ["rollback magnitude k=0.1"]
    # "r" is better on both changes than the merge but dearer (10 passes against 0): no dominance
    assert k1.dominated_by(table, "merge ties density 0.2") == ["rollback magnitude k=0.1"]
    assert k1.dominated_by(table, "refresh 150 steps") == []
    with pytest.raises(ValueError, match="no row 'nothing'"):
        k1.dominated_by(table, "nothing")


def test_the_front_text_names_the_front_and_who_dominates():
    table = pd.DataFrame(rows())
    table.attrs["damaged"] = "math"
    text = k1.front_text(table)
    assert text.startswith("On the Pareto front (Math's change, the others' mean change, cost; report half): "
                           "refresh 150 steps (Math +0.100, others +0.000, 1,000 passes); rollback magnitude k=0.1")
    assert "rollback magnitude k=0.1 dominates 1 method(s): merge ties density 0.2." in text
    assert "No one method dominates all the others" in text
    assert "Beside the front, with no cost counted: Math expert (Math +0.200, others +0.100)." in text
    alone = pd.DataFrame(rows()[:1] + [row("merge y", "merge", 0.0, 0.2, 0.1)])
    assert "merge y dominates every other method with a cost." in k1.front_text(alone, "math")


def test_k1_is_the_kits_own_and_the_ledger_lists_it_after_c7(tmp_path):
    assert CLAIM_IDS[-2:] == ("C7", "K1")
    path = record_check(tmp_path, check_k1(rows(), DAMAGE, cost_cap=CAP, domain="math"),
                        notebook="06_recovery_methods")
    assert path.name == "K1-recovery-front.json"
    table = ledger(tmp_path)
    assert list(table["claim"])[-1] == "K1"
    assert table.iloc[-1]["verdict"] == "supported (outcome only)" and table.iloc[-1]["notebook"] == "06_recovery_methods"
    assert math.isclose(rule("K1", "min_report_items"), 100)
