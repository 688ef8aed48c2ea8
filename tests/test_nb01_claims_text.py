"""The closing summary of notebook 01 (mdrl_lib.claims.nb01.explain_c1_c2): each sentence follows the checks."""
from __future__ import annotations

import pandas as pd

from mdrl_lib.claims.nb01 import check_c1, check_c2, explain_c1_c2

RATES = (2e-4, 1e-5, 1e-6)


def grid(shares, controls, gains, ps) -> pd.DataFrame:
    return pd.DataFrame({"unchanged, bf16 checkpoint": shares, "unchanged, dense control in bf16": controls,
                         "held-out gain": gains, "gain p": ps}, index=pd.Index(RATES, name="rate"))


def checks(table, same=None):
    regimes = pd.DataFrame([{"regime": f"bf16, lr {r:g}", "expert": "math", "share": row["unchanged, bf16 checkpoint"],
                             "gain": row["held-out gain"], "gain_p": row["gain p"]} for r, row in table.iterrows()])
    default = pd.DataFrame([{"regime": "fp32", "expert": d, "share": 1e-4, "gain": 0.1, "gain_p": 0.001}
                            for d in ("math", "qa")])
    c2 = check_c2({"math-qa": 0.08, "math-cw": 0.09}, {"math": 0.5} if same is None else same, 0.05, fraction=0.1)
    return check_c1(regimes, name="paper-regime"), check_c1(default, name="default-regime"), c2


SHARES = pd.DataFrame({"fp32": [4.5e-5, 6e-5], "bf16": [0.037, 0.043]}, index=["math", "qa"])


def test_the_baseline_run_reads_as_it_did_in_the_notebook():
    table = grid([0.059, 0.6, 0.8742], [0.063, 0.615, 0.8792], [0.3, 0.1, 0.008], [1e-9, 1e-4, 0.01])
    text = explain_c1_c2(*checks(table), default_label="fp32, lr 0.0002, 200 steps", expert_shares=SHARES, grid=table)
    assert text.splitlines() == [
        "C1 at the run's defaults (fp32, lr 0.0002, 200 steps): 4.5e-05 to 6.0e-05 of the entries are unchanged by "
        "the paper's criterion in fp32, and 0.037 to 0.043 once both checkpoints are rounded to bf16, against the "
        "paper's 77%-89%: not supported.",
        "C1 on the bf16 grid: the bf16 checkpoint leaves 0.059 to 0.874 unchanged across rates 0.0002, 1e-05, 1e-06; "
        "rates with a significant gain: 0.0002, 1e-05, 1e-06; rates at or above 77%: 1e-06: supported (outcome only).",
        "  The largest rate that is both: 1e-06, with 0.8742 unchanged (+0.1042 from the bottom of the paper's "
        "range) and a gain of +0.008.",
        "  The bf16 share minus that of a dense edit of the same size, rounded the same way: -0.004 at 0.0002, "
        "-0.015 at 1e-05, -0.005 at 1e-06. Near zero everywhere: the toy's bf16 sparsity is the size of a dense "
        "edit meeting bf16 rounding, not RL choosing few weights.",
        "C2: the mean cross-domain Jaccard at the top 10% is 0.085 (paper: below 0.19; random sets 0.050), against "
        "0.500 for the same domain with two RL seeds: supported (outcome only).",
    ]


def test_a_grid_that_never_both_learns_and_stays_sparse_has_no_largest_rate():
    table = grid([0.1, 0.5, 0.9], [0.1, 0.3, 0.5], [0.3, 0.1, 0.0], [1e-9, 1e-4, 1.0])
    c1_paper, c1_default, c2 = checks(table)
    text = explain_c1_c2(c1_paper, c1_default, c2, default_label="fp32", expert_shares=SHARES, grid=table)
    assert c1_paper.supported is False
    assert "rates with a significant gain: 0.0002, 1e-05; rates at or above 77%: 1e-06: not supported." in text
    assert "The largest rate that is both" not in text
    # the bf16 share clearly above its dense control's at two rates
    assert "+0.200 at 1e-05, +0.400 at 1e-06. Where it is clearly positive, the edit is more concentrated" in text


def test_nothing_learned_or_sparse_is_named_none():
    table = grid([0.1, 0.2, 0.3], [0.1, 0.2, 0.3], [-0.1, 0.0, 0.0], [0.5, 1.0, 1.0])
    text = explain_c1_c2(*checks(table), default_label="fp32", expert_shares=SHARES, grid=table)
    assert "rates with a significant gain: none; rates at or above 77%: none: not supported." in text


def test_c2_without_a_second_seed_is_not_testable():
    table = grid([0.1, 0.2, 0.9], [0.1, 0.2, 0.9], [0.1, 0.1, 0.1], [0.01, 0.01, 0.01])
    c1_paper, c1_default, c2 = checks(table, same={})
    text = explain_c1_c2(c1_paper, c1_default, c2, default_label="fp32", expert_shares=SHARES, grid=table)
    assert text.splitlines()[-1] == f"C2: not testable: {c2.why}."
    assert "no same-domain two-seed pair" in c2.why
