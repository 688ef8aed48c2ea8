import math

import numpy as np
import pandas as pd
import pytest

from mdrl_lib.stats import (
    mcnemar_exact,
    newcombe_paired_interval,
    paired_bootstrap,
    paired_difference,
    paired_difference_table,
    seed_mean_interval,
    signed_rank,
)


def _pairs(both=0, b=0, c=0, neither=0):
    """0/1 vectors with the given paired counts: both right, b (1 -> 0), c (0 -> 1), both wrong."""
    before = [1] * both + [1] * b + [0] * c + [0] * neither
    after = [1] * both + [0] * b + [1] * c + [0] * neither
    return np.array(before), np.array(after)


# ---- McNemar ---------------------------------------------------------------------------------------

def test_mcnemar_counts_and_exact_p_by_hand():
    before, after = _pairs(both=30, b=1, c=9, neither=20)
    result = mcnemar_exact(before, after)
    assert (result.n, result.b, result.c) == (60, 1, 9)
    # 2 * P(X <= 1), X ~ Binomial(10, 1/2) = 2 * (1 + 10) / 1024
    assert result.p_value == pytest.approx(0.021484375, abs=1e-15)
    assert result.diff == pytest.approx((9 - 1) / 60)
    assert result.mean_after - result.mean_before == pytest.approx(result.diff)
    assert result.ci_low < result.diff < result.ci_high


def test_mcnemar_order_of_items_does_not_matter_but_pairing_does():
    before, after = _pairs(both=5, b=2, c=6, neither=7)
    order = np.random.default_rng(3).permutation(before.size)
    assert mcnemar_exact(before[order], after[order]) == mcnemar_exact(before, after)
    unpaired = mcnemar_exact(before, after[::-1])
    assert (unpaired.b, unpaired.c) != (2, 6)


def test_mcnemar_equal_discordant_counts_caps_p_at_one():
    before, after = _pairs(both=4, b=3, c=3, neither=4)
    result = mcnemar_exact(before, after)
    # 2 * P(X <= 3), X ~ Binomial(6, 1/2) = 2 * 42 / 64 > 1, capped
    assert 2 * sum(math.comb(6, i) for i in range(4)) / 64 > 1
    assert result.p_value == 1.0 and result.diff == 0.0
    assert result.ci_low < 0 < result.ci_high


def test_mcnemar_without_discordant_items():
    before, after = _pairs(both=7, neither=5)
    result = mcnemar_exact(before, after)
    assert (result.b, result.c, result.p_value, result.diff) == (0, 0, 1.0, 0.0)
    assert result.ci_low <= 0 <= result.ci_high


def test_mcnemar_matches_the_published_cavo_example():
    # Fagerland, Lydersen and Laake, Statistical Analysis of Contingency Tables (2017), ch. 8: complete
    # response before and after consolidation therapy (Cavo et al. 2012), table [[59, 6], [16, 80]]
    # with the row proportion first: estimate -0.0621, Newcombe 95% CI -0.1186 to -0.0046.
    after, before = _pairs(both=59, b=6, c=16, neither=80)  # rows are "after" here: diff = row - column
    result = mcnemar_exact(before, after)
    assert result.diff == pytest.approx(-10 / 161)
    assert (round(result.ci_low, 4), round(result.ci_high, 4)) == (-0.1186, -0.0046)
    assert result.p_value == pytest.approx(2 * sum(math.comb(22, i) for i in range(7)) / 2**22)


def test_newcombe_interval_flips_with_the_direction_and_stays_in_bounds():
    low, high = newcombe_paired_interval(10, 3, 12, 25)
    back_low, back_high = newcombe_paired_interval(10, 12, 3, 25)
    assert (back_low, back_high) == pytest.approx((-high, -low))
    everything_lost = mcnemar_exact(np.ones(8), np.zeros(8))
    assert everything_lost.diff == -1.0
    assert -1.0 <= everything_lost.ci_low < everything_lost.ci_high < 0
    wider = newcombe_paired_interval(10, 3, 12, 25, level=0.99)
    assert wider[0] < low and wider[1] > high


def test_newcombe_approaches_the_wald_interval_for_many_items():
    both, first, second, neither = 4000, 700, 500, 4800
    n = both + first + second + neither
    diff = (first - second) / n
    se = math.sqrt((first + second) / n - diff**2) / math.sqrt(n)  # Wald SE of a paired difference
    low, high = newcombe_paired_interval(both, first, second, neither)
    assert low == pytest.approx(diff - 1.959963984540054 * se, abs=5e-4)
    assert high == pytest.approx(diff + 1.959963984540054 * se, abs=5e-4)


@pytest.mark.parametrize("before, after, message", [
    ([1, 0, 1], [1, 0], "same items"),
    ([1, 0.5, 1], [1, 0, 1], "only 0 and 1"),
    ([1, 0, 1], [1, 2, 1], "only 0 and 1"),
    ([], [], "empty"),
    ([1, float("nan")], [1, 0], "NaN"),
    ([[1, 0]], [[1, 0]], "1-D"),
    (["a", "b"], [1, 0], "numeric"),
])
def test_mcnemar_rejects_bad_input(before, after, message):
    with pytest.raises((ValueError, TypeError), match=message):
        mcnemar_exact(before, after)


def test_bad_level_is_named():
    with pytest.raises(ValueError, match="between 0 and 1"):
        mcnemar_exact([1, 0], [0, 1], level=95)
    with pytest.raises(ValueError, match="between 0 and 1"):
        seed_mean_interval([1.0, 2.0], level=1.0)


# ---- paired bootstrap ------------------------------------------------------------------------------

# A joint law of (before, after) over the fractional scores 0, 0.5, 1 with a known mean difference.
_LEVELS = np.array([0.0, 0.5, 1.0])
_JOINT = np.array([[0.20, 0.05, 0.00],
                   [0.10, 0.20, 0.05],
                   [0.05, 0.10, 0.25]])


def _draw(n, rng):
    cells = rng.choice(9, size=n, p=_JOINT.ravel())
    return _LEVELS[cells // 3], _LEVELS[cells % 3]


def test_bootstrap_interval_covers_the_true_difference_at_its_level():
    true_diff = float((_JOINT * (_LEVELS[None, :] - _LEVELS[:, None])).sum())
    assert true_diff == pytest.approx(0.475 - 0.575)  # column means minus row means of _JOINT
    rng = np.random.default_rng(2024)
    runs, covered = 100, 0
    for run in range(runs):
        before, after = _draw(150, rng)
        result = paired_bootstrap(before, after, n_boot=1000, seed=run)
        covered += result.ci_low <= true_diff <= result.ci_high
    assert 88 <= covered <= 100  # 95% nominal; the binomial sd over 100 runs is about 2.2


def test_bootstrap_is_deterministic_for_a_seed():
    before, after = _draw(80, np.random.default_rng(0))
    first = paired_bootstrap(before, after, n_boot=2000, seed=7)
    assert paired_bootstrap(before, after, n_boot=2000, seed=7) == first
    assert paired_bootstrap(before, after, n_boot=2000, seed=8) != first
    assert first.diff == pytest.approx(float(np.mean(after - before)))


def test_bootstrap_agrees_with_the_normal_theory_for_many_items():
    # 400 items: 60 up by 0.5, 40 down by 0.5, the rest unchanged (z near 2, p near 0.04).
    before = np.full(400, 0.5)
    after = before + np.array([0.5] * 60 + [-0.5] * 40 + [0.0] * 300)
    d = after - before
    se = d.std() / math.sqrt(d.size)  # the bootstrap's own variance uses ddof=0
    result = paired_bootstrap(before, after, n_boot=20_000, seed=0)
    z_p = 2 * (1 - 0.5 * (1 + math.erf(abs(d.mean()) / se / math.sqrt(2))))
    assert 0.01 < z_p < 0.1
    assert result.p_value == pytest.approx(z_p, abs=0.01)
    assert result.ci_low == pytest.approx(d.mean() - 1.96 * se, abs=0.006)
    assert result.ci_high == pytest.approx(d.mean() + 1.96 * se, abs=0.006)


def test_bootstrap_p_value_limits():
    same = np.array([0.0, 0.5, 1.0, 0.5])
    result = paired_bootstrap(same, same, n_boot=500, seed=0)
    assert (result.diff, result.ci_low, result.ci_high, result.p_value) == (0.0, 0.0, 0.0, 1.0)
    all_up = paired_bootstrap(np.zeros(200), np.full(200, 0.5), n_boot=999, seed=0)
    assert all_up.p_value == pytest.approx(1 / 1000)  # never 0: (1 + hits) / (1 + n_boot)


def test_bootstrap_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_boot"):
        paired_bootstrap([0.5, 1.0], [1.0, 1.0], n_boot=0)
    with pytest.raises(ValueError, match="seed"):
        paired_bootstrap([0.5, 1.0], [1.0, 1.0], seed=-1)
    with pytest.raises(ValueError, match="same items"):
        paired_bootstrap([0.5, 1.0], [1.0])


# ---- signed rank -----------------------------------------------------------------------------------

def _exact_signed_rank_p(ranks_sum, n):
    """Two-sided exact p of the signed-rank statistic by counting sign patterns (no ties, no zeros)."""
    ways = [1] + [0] * (n * (n + 1) // 2)
    for rank in range(1, n + 1):
        for total in range(len(ways) - 1, rank - 1, -1):
            ways[total] += ways[total - rank]
    return min(1.0, 2 * sum(ways[:ranks_sum + 1]) / 2**n)


def test_signed_rank_on_scipys_documented_example():
    # Darwin's Zea mays height differences, the example in scipy.stats.wilcoxon's documentation.
    d = np.array([6, 8, 14, 16, 23, 24, 28, 29, 41, -48, 49, 56, 60, -67, 75], dtype=float)
    result = signed_rank(np.zeros_like(d), d)
    assert result.statistic == 24.0  # the negative differences hold ranks 10 and 14
    assert result.p_value == pytest.approx(_exact_signed_rank_p(24, 15), rel=1e-12)
    assert result.diff == pytest.approx(d.mean())
    assert (result.n, result.n_nonzero) == (15, 15)


def test_signed_rank_normal_approximation_with_ties_and_zeros_by_hand():
    # 60 items: 40 unchanged, 12 up by 0.5, 5 up by 1, 3 down by 0.5.
    before = np.full(60, 0.5)
    before[52:57] = 0.0  # these five move from 0 to 1
    after = before + np.array([0.0] * 40 + [0.5] * 12 + [1.0] * 5 + [-0.5] * 3)
    # Zeros dropped: 20 changed. |0.5| x 15 share rank 8, |1| x 5 share rank 18.
    r_plus, r_minus = 12 * 8 + 5 * 18, 3 * 8
    variance = 20 * 21 * 41 / 24 - ((15**3 - 15) + (5**3 - 5)) / 48
    z = (r_plus - 20 * 21 / 4) / math.sqrt(variance)
    result = signed_rank(before, after)
    assert result.n_nonzero == 20 and result.statistic == r_minus
    assert result.p_value == pytest.approx(math.erfc(abs(z) / math.sqrt(2)), rel=1e-9)
    swapped = signed_rank(after, before)
    assert swapped.p_value == pytest.approx(result.p_value) and swapped.diff == pytest.approx(-result.diff)


def test_signed_rank_without_any_change_and_bad_zero_method():
    same = np.array([0.0, 0.5, 1.0])
    assert signed_rank(same, same).p_value == 1.0
    with pytest.raises(ValueError, match="wilcox"):
        signed_rank(same, same, zero_method="drop")


# ---- paired_difference and its table ---------------------------------------------------------------

def test_paired_difference_picks_the_test_by_the_scores():
    before, after = _pairs(both=30, b=1, c=9, neither=20)
    binary = paired_difference(before, after)
    m = mcnemar_exact(before, after)
    assert (binary.test, binary.b, binary.c, binary.p_value) == ("mcnemar_exact", 1, 9, m.p_value)
    assert (binary.ci_low, binary.ci_high) == (m.ci_low, m.ci_high)

    fb, fa = _draw(120, np.random.default_rng(5))
    fractional = paired_difference(fb, fa, seed=3, n_boot=2000)
    boot = paired_bootstrap(fb, fa, seed=3, n_boot=2000)
    assert (fractional.test, fractional.b, fractional.c) == ("wilcoxon_signed_rank", None, None)
    assert (fractional.ci_low, fractional.ci_high) == (boot.ci_low, boot.ci_high)
    assert fractional.p_value == signed_rank(fb, fa).p_value

    forced = paired_difference(before, after, kind="fractional", n_boot=500)
    assert forced.test == "wilcoxon_signed_rank"
    with pytest.raises(ValueError, match="only 0 and 1"):
        paired_difference(fb, fa, kind="binary")
    with pytest.raises(ValueError, match="auto"):
        paired_difference(before, after, kind="mcnemar")


def _tidy():
    rng = np.random.default_rng(11)
    math_before, math_after = _pairs(both=20, b=8, c=2, neither=10)
    code_before, code_after = _draw(40, rng)
    rows = []
    for domain, b, a in (("math", math_before, math_after), ("code", code_before, code_after)):
        for checkpoint, values in (("stage1", b), ("stage2", a), ("stage3", 1 - a)):
            rows += [{"item": f"{domain}-{i}", "domain": domain, "checkpoint": checkpoint, "score": float(v)}
                     for i, v in enumerate(values)]
    frame = pd.DataFrame(rows).sample(frac=1.0, random_state=0).reset_index(drop=True)
    return frame, (math_before, math_after), (code_before, code_after)


def test_table_pairs_items_by_name_per_domain():
    frame, (mb, ma), (cb, ca) = _tidy()
    table = paired_difference_table(frame, "stage1", "stage2", n_boot=500, seed=1)
    table = table.set_index("domain")
    assert set(table.index) == {"math", "code"}
    assert table.loc["math", "test"] == "mcnemar_exact"
    assert (table.loc["math", "b"], table.loc["math", "c"]) == (8, 2)
    assert table.loc["math", "diff"] == pytest.approx(ma.mean() - mb.mean())
    assert table.loc["code", "test"] == "wilcoxon_signed_rank"
    assert table.loc["code", "diff"] == pytest.approx(ca.mean() - cb.mean())
    assert table.loc["code", "p_value"] == pytest.approx(signed_rank(cb, ca).p_value)
    assert list(paired_difference_table(frame, "stage1", "stage2", {"code": "fractional"}, n_boot=500)
                .set_index("domain")["test"].sort_index()) == ["wilcoxon_signed_rank", "mcnemar_exact"]


def test_table_rejects_bad_tables():
    frame, _, _ = _tidy()
    with pytest.raises(ValueError, match=r"unknown checkpoint 'stage9'.*stage1"):
        paired_difference_table(frame, "stage1", "stage9")
    with pytest.raises(ValueError, match="lacks columns"):
        paired_difference_table(frame.drop(columns="item"), "stage1", "stage2")
    with pytest.raises(ValueError, match="only one of"):
        paired_difference_table(frame.drop(index=frame.index[frame["checkpoint"] == "stage2"][0]),
                                "stage1", "stage2")
    with pytest.raises(ValueError, match="more than once"):
        paired_difference_table(pd.concat([frame, frame.iloc[:1]]), "stage1", "stage2")
    with pytest.raises(ValueError, match="unknown kind"):
        paired_difference_table(frame, "stage1", "stage2", {"math": "exact"})
    with pytest.raises(TypeError, match="DataFrame"):
        paired_difference_table(frame.to_dict(), "stage1", "stage2")


# ---- across seeds ----------------------------------------------------------------------------------

def test_seed_mean_interval_by_hand():
    result = seed_mean_interval([0.30, 0.50, 0.40])
    assert result.mean == pytest.approx(0.40) and result.sd == pytest.approx(0.10)
    # Student t with 2 degrees of freedom has the closed-form quantile (2p - 1) / sqrt(2p(1 - p)).
    t = (2 * 0.975 - 1) / math.sqrt(2 * 0.975 * 0.025)
    half = t * 0.10 / math.sqrt(3)
    assert (result.ci_low, result.ci_high) == pytest.approx((0.40 - half, 0.40 + half))
    assert seed_mean_interval([0.30, 0.50, 0.40], level=0.5).ci_high < result.ci_high


def test_seed_mean_interval_needs_two_seeds():
    with pytest.raises(ValueError, match="at least 2 seeds"):
        seed_mean_interval([0.4])
