"""The nulls and matched controls of notebook 02's C3 and C4: closed forms, invariants and cases that must hold
and must fail."""
from __future__ import annotations

import math

import pytest
import torch

from mdrl_lib import routes

L0, L1 = "model.layers.0", "model.layers.1"


def gradient(seed: int, scale: float = 1.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = {"model.embed_tokens.weight": (20, 8), f"{L0}.self_attn.q_proj.weight": (8, 8),
              f"{L0}.self_attn.q_proj.bias": (8,), f"{L0}.mlp.up_proj.weight": (16, 8),
              f"{L0}.input_layernorm.weight": (8,), f"{L1}.mlp.down_proj.weight": (8, 16)}
    return {n: scale * torch.randn(s, generator=g) for n, s in shapes.items()}


def test_module_of_gives_the_embeddings_their_own_module_only_when_asked():
    assert routes.module_of("model.embed_tokens.weight") == routes.OTHER
    assert routes.module_of("model.embed_tokens.weight", embeddings=True) == routes.EMBEDDINGS
    assert routes.module_of("lm_head.weight", embeddings=True) == routes.EMBEDDINGS
    assert routes.module_of(f"{L0}.input_layernorm.weight", embeddings=True) == routes.OTHER
    split = routes.split_by_module(gradient(0), embeddings=True)
    assert list(split) == [f"{L0}.self_attn", f"{L0}.mlp", f"{L1}.mlp", routes.EMBEDDINGS, routes.OTHER]


def test_row_contributions_add_up_to_each_modules_cosine():
    a, b = gradient(0), gradient(1)
    rows = routes.row_contributions(a, b)
    comparison = routes.gradient_cosines(routes.split_by_module(a, True), routes.split_by_module(b, True))
    cosines = comparison.modules.set_index("module")["cosine"]
    for module, values in rows.items():
        assert float(values.sum()) == pytest.approx(cosines[module], abs=1e-9)
    assert rows[routes.EMBEDDINGS].numel() == 20 and rows[f"{L0}.self_attn"].numel() == 8 + 8  # rows, bias entries


def test_cosine_without_a_module_is_the_cosine_of_the_rest():
    a, b = routes.split_by_module(gradient(0), True), routes.split_by_module(gradient(1), True)
    comparison = routes.gradient_cosines(a, b)
    rest = [m for m in a if m != routes.EMBEDDINGS]
    flat_a, flat_b = torch.cat([a[m] for m in rest]).double(), torch.cat([b[m] for m in rest]).double()
    expected = float(flat_a @ flat_b / (flat_a.norm() * flat_b.norm()))
    assert comparison.cosine_without(routes.EMBEDDINGS) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="unknown module"):
        comparison.cosine_without("nope")


def test_the_null_finds_a_planted_conflict_and_no_module_in_unrelated_gradients():
    # unrelated gradients: no module should pass (p > 0.05 for every module on most seeds; here: every module)
    pairs = [(gradient(10 + r), gradient(20 + r)) for r in range(3)]
    null = routes.module_cosine_null(pairs, draws=2000, seed=0)
    assert all(p > 0.05 for p in null.p_values().values())
    # a planted conflict: B's embedding gradient (20 rows) is minus A's plus a little noise, on every replicate
    planted, name = [], "model.embed_tokens.weight"
    for r in range(3):
        a, b = gradient(10 + r), gradient(20 + r)
        b[name] = -a[name] + 0.5 * b[name]
        planted.append((a, b))
    null = routes.module_cosine_null(planted, draws=2000, seed=0)
    assert null.observed[routes.EMBEDDINGS] < -0.8
    assert null.p_values()[routes.EMBEDDINGS] < 0.005  # no draw of 2000 gives every row the same sign
    assert abs(null.observed[routes.EMBEDDINGS]) > null.bands(0.95)[routes.EMBEDDINGS]


def test_the_null_sd_of_a_module_is_the_root_sum_of_squares_of_its_units():
    pairs = [(gradient(0), gradient(1))]
    null = routes.module_cosine_null(pairs, draws=20000, seed=1)
    rows = routes.row_contributions(*pairs[0])
    for module, values in rows.items():  # Var(sum eps_u w_u) = sum w_u^2 for random signs
        assert null.null_sd[module] == pytest.approx(math.sqrt(float(values.pow(2).sum())), rel=0.03)
    assert null.threshold(0.95) > 1.96  # the max of several standardized modules exceeds one normal's quantile
    with pytest.raises(ValueError, match="at least 100"):
        routes.module_cosine_null(pairs, draws=50, seed=0)
    with pytest.raises(ValueError, match="level"):
        null.threshold(1.0)


def test_activation_bins_split_by_rank_into_equal_bins():
    values = torch.tensor([5.0, 1.0, 3.0, 2.0, 4.0, 0.0])
    assert routes.activation_bins(values, 3).tolist() == [2, 0, 1, 1, 2, 0]
    assert routes.activation_bins(values, 1).tolist() == [0] * 6
    with pytest.raises(ValueError, match="bins"):
        routes.activation_bins(values, 0)


def test_matched_channels_keep_layer_counts_and_bins_and_never_reuse_the_set():
    activity = {L0: torch.arange(40, dtype=torch.float32), L1: torch.arange(40, 0, -1, dtype=torch.float32)}
    chosen = {(L0, 20), (L0, 21), (L1, 5)}  # mid-range in layer 0 and high in layer 1
    draw = routes.matched_random_channels(activity, chosen, seed=0, bins=10)
    assert draw.isdisjoint(chosen) and len(draw) == 3
    assert sorted(layer for layer, _ in draw) == [L0, L0, L1]
    bins = {layer: routes.activation_bins(v, 10) for layer, v in activity.items()}
    assert sorted(int(bins[l][i]) for l, i in draw) == sorted(int(bins[l][i]) for l, i in chosen)
    assert draw == routes.matched_random_channels(activity, chosen, seed=0, bins=10)  # seeded
    ratio = routes.set_activation(activity, draw) / routes.set_activation(activity, chosen)
    assert ratio == pytest.approx(1.0, abs=0.1)


def test_matched_channels_fall_back_to_the_nearest_bin_and_then_cannot_match_the_top():
    activity = {L0: torch.arange(20, dtype=torch.float32)}
    top = {(L0, i) for i in range(16, 20)}  # the four busiest: bin 4 of 5 holds exactly them
    draw = routes.matched_random_channels(activity, top, seed=0, bins=5)
    assert {i for _, i in draw} == {12, 13, 14, 15}  # the next bin down, all of it
    assert routes.set_activation(activity, draw) / routes.set_activation(activity, top) < 0.9  # a failed match
    with pytest.raises(ValueError, match="too few free channels"):
        routes.matched_random_channels({L0: torch.arange(4.0)}, {(L0, 0), (L0, 1), (L0, 2)}, seed=0, bins=2)
