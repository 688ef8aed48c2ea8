"""Claim checks C1 and C2 on hand-made numbers."""
import pandas as pd
import pytest

from mdrl_lib.claims import C2_PAPER_MAX, check_c1, check_c2


def _experts(rows):
    return pd.DataFrame(rows, columns=["regime", "expert", "share", "gain", "gain_p"])


GRID = [("bf16 lr=5e-4", "math", 0.05, 0.20, 1e-9),
        ("bf16 lr=1e-5", "math", 0.50, 0.04, 0.01),
        ("bf16 lr=1e-6", "math", 0.88, 0.01, 0.02)]


# ---- C1 ---------------------------------------------------------------------------------------------

def test_c1_supported_when_some_regime_is_sparse_and_learned():
    check = check_c1(_experts(GRID), name="paper-regime")
    assert check.supported is True and check.claim == "C1" and check.name == "paper-regime"
    assert "'bf16 lr=1e-6'" in check.why and check.figures["qualifying_regimes"] == 1
    assert check.figures["min_share[bf16 lr=1e-6]"] == 0.88 and check.figures["max_share"] == 0.88
    assert "math 0.88 unchanged, gain +0.010 (p=0.02)" in check.measured


def test_c1_sparse_without_a_significant_gain_is_not_support():
    no_gain = GRID[:2] + [("bf16 lr=1e-6", "math", 0.95, 0.004, 0.4)]
    check = check_c1(_experts(no_gain), name="paper-regime")
    assert check.supported is False and "sparse only where RL learned nothing measurable ('bf16 lr=1e-6')" in check.why
    lost = GRID[:2] + [("bf16 lr=1e-6", "math", 0.95, -0.03, 1e-4)]  # significant, but a loss
    assert check_c1(_experts(lost), name="paper-regime").supported is False


def test_c1_dense_everywhere_says_so_and_the_threshold_is_inclusive():
    dense = [("fp32 lr=5e-4", d, share, 0.3, 1e-6) for d, share in (("math", 1.5e-5), ("code", 3e-6))]
    check = check_c1(_experts(dense), name="default-regime")
    assert check.supported is False and "no expert is sparse" in check.why and "1.5e-05" in check.why
    at_low = [("fp32", "math", 0.77, 0.1, 0.001)]
    assert check_c1(_experts(at_low), name="x").supported is True
    assert check_c1(_experts(at_low), name="x", low=0.8).supported is False


def test_c1_a_regime_needs_every_expert_sparse_and_learned():
    mixed = [("fp32", "math", 0.9, 0.1, 0.001), ("fp32", "qa", 0.9, 0.1, 0.2)]
    check = check_c1(_experts(mixed), name="default-regime")
    assert check.supported is False and check.figures["learned[fp32]"] == "1/2"
    one_dense = [("fp32", "math", 0.9, 0.1, 0.001), ("fp32", "qa", 0.5, 0.1, 0.001)]
    assert check_c1(_experts(one_dense), name="default-regime").supported is False


def test_c1_not_testable_without_experts_and_rejects_malformed_input():
    check = check_c1(_experts([]), name="paper-regime")
    assert check.supported is None and check.verdict == "not testable here"
    with pytest.raises(ValueError, match="lacks columns .'gain_p'."):
        check_c1(_experts(GRID).drop(columns="gain_p"), name="x")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        check_c1(_experts([("r", "math", 1.5, 0.1, 0.01)]), name="x")
    with pytest.raises(TypeError, match="DataFrame"):
        check_c1(GRID, name="x")
    with pytest.raises(ValueError, match="slug"):
        check_c1(_experts(GRID), name="Paper regime")


# ---- C2 ---------------------------------------------------------------------------------------------

CROSS = {"math-code": 0.06, "math-qa": 0.08, "code-qa": 0.10}  # mean 0.08


def test_c2_supported_when_low_and_well_below_the_same_domain_overlap():
    check = check_c2(CROSS, {"math": 0.40}, 0.053, fraction=0.1)
    assert check.supported is True and check.name == "top-neuron-overlap"
    assert check.figures["mean_cross_domain"] == pytest.approx(0.08)
    assert check.figures["largest_pair"] == "code-qa" and check.figures["mean_same_domain"] == 0.40
    assert "0.053" in check.baseline and "0.400" in check.baseline


def test_c2_not_supported_when_two_seeds_of_one_domain_overlap_as_little_as_two_domains():
    check = check_c2(CROSS, {"math": 0.12}, 0.053, fraction=0.1)  # 0.08 > 0.5 x 0.12
    assert check.supported is False and "> 0.5 x the mean same-domain" in check.why
    assert check_c2(CROSS, {"math": 0.16}, 0.053, fraction=0.1).supported is True  # 0.08 <= 0.08: inclusive


def test_c2_not_supported_above_the_papers_bound_even_when_distinct():
    high = {"math-code": 0.25, "math-qa": 0.20}
    check = check_c2(high, {"math": 0.9}, 0.053, fraction=0.1)
    assert check.supported is False and f">= {C2_PAPER_MAX}" in check.why


def test_c2_not_testable_without_a_same_domain_pair_and_rejects_bad_input():
    check = check_c2(CROSS, {}, 0.053, fraction=0.1)
    assert check.supported is None and "no same-domain" in check.why
    with pytest.raises(ValueError, match="empty"):
        check_c2({}, {"math": 0.4}, 0.053, fraction=0.1)
    with pytest.raises(ValueError, match="math-qa"):
        check_c2({"math-qa": 1.2}, {"math": 0.4}, 0.053, fraction=0.1)


# ---- what was tested, and the caveats (issue: verdicts a reader can trust) ---------------------------

def test_c1_tests_only_the_outcome_and_its_caveats_name_domain_seed_best_of_and_rounding():
    grid = _experts(GRID).assign(dense_share=[0.04, 0.47, 0.87])  # 0.88 vs a dense edit's 0.87: rounding
    check = check_c1(grid, name="paper-regime")
    assert check.tested == "outcome" and check.verdict == "supported (outcome only)"
    assert "rests on one domain (math)" in check.caveats and "rests on one RL seed" in check.caveats
    best = [c for c in check.caveats if c.startswith("the best of 3 settings")]
    assert best and "1 of 3 qualifies (bf16 lr=1e-6; math gain +0.010 (p=0.02))" in best[0]
    assert any("0.88 vs 0.87" in c and "rounding of a dense edit" in c for c in check.caveats)
    assert "dense edit of the same size" in check.baseline


def test_c1_no_rounding_caveat_when_the_share_clearly_beats_the_dense_edit_and_none_for_four_seeds():
    grid = _experts(GRID).assign(dense_share=[0.04, 0.47, 0.70])  # 0.88 vs 0.70: beyond the margin
    check = check_c1(grid, name="paper-regime", seeds=4)
    assert not any("rounding" in c for c in check.caveats) and "rests on one RL seed" not in check.caveats
    four = _experts([("fp32", d, 0.9, 0.1, 0.001) for d in ("math", "qa", "code", "cw")])
    assert check_c1(four, name="default-regime", seeds=2).caveats == []  # four domains, one setting, two seeds


def test_c2_tests_only_the_outcome_and_says_its_reference_is_one_domain():
    check = check_c2(CROSS, {"math": 0.40}, 0.053, fraction=0.1)
    assert check.tested == "outcome" and check.verdict == "supported (outcome only)"
    assert "the same-domain reference rests on one domain (math) with two RL seeds" in check.caveats
    two = check_c2(CROSS, {"math": 0.40, "qa": 0.5}, 0.053, fraction=0.1)
    assert not any("one domain" in c for c in two.caveats)


def test_c1_dense_edits_get_no_rounding_caveat_however_close_to_their_dense_control():
    dense = _experts([("fp32", "math", 4e-5, 0.2, 1e-9), ("fp32", "qa", 6e-5, 0.3, 1e-9)]).assign(dense_share=[3e-5] * 2)
    assert not any("rounding" in c for c in check_c1(dense, name="default-regime").caveats)
