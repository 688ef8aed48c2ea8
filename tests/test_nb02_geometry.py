"""Notebook 02's analysis helpers in mdrl_lib.routes, on hand-made cases: the ablated sets, the mean patch,
a gradient split by module, the gradient geometry's tables and the random-channel control."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from mdrl_lib import routes
from mdrl_lib.routes import GradientGeometry, RouteActivity

L0, L1 = "model.layers.0", "model.layers.1"


def test_ablation_channels_only_shared_and_the_most_shared_pair():
    sets = {"code": {(L0, 0), (L0, 1), (L1, 0)}, "math": {(L0, 1), (L1, 0), (L1, 5)},
            "qa": {(L1, 0), (L1, 7)}, "cw": {(L0, 9)}}
    assert routes.ablation_channels(sets, "only", ("math",)) == ({(L1, 5)}, ("math",))
    assert routes.ablation_channels(sets, "only", ("code",)) == ({(L0, 0)}, ("code",))
    assert routes.ablation_channels(sets, "shared", ("qa", "math")) == ({(L1, 0)}, ("qa", "math"))
    # code-math: Jaccard 2/4, the largest; the pair keeps the domains' order
    assert routes.ablation_channels(sets, "shared") == ({(L0, 1), (L1, 0)}, ("code", "math"))
    tied = {"a": {1, 2}, "b": {2, 3}, "c": {3, 4}}  # a-b and b-c both 1/3: the first pair in order wins
    assert routes.ablation_channels(tied, "shared")[1] == ("a", "b")
    with pytest.raises(ValueError, match="ablate must be one of"):
        routes.ablation_channels(sets, "all")


def test_token_weighted_means_weight_each_domain_by_its_tokens():
    def activity(mean, tokens):
        return RouteActivity(channels={}, channel_means={L0: torch.tensor(mean)}, heads={}, tokens=tokens)

    means = routes.token_weighted_means([activity([1.0, 0.0], 1), activity([4.0, 3.0], 3)])
    assert torch.allclose(means[L0], torch.tensor([13 / 4, 9 / 4]))


def test_off_diagonal_blanks_only_the_diagonal():
    matrix = pd.DataFrame([[1.0, 0.2], [0.2, 1.0]], index=["a", "b"], columns=["a", "b"])
    out = routes.off_diagonal(matrix)
    assert out.isna().to_numpy().tolist() == [[True, False], [False, True]] and out.loc["a", "b"] == 0.2


def test_split_by_module_is_module_gradients_of_the_same_loss(tokenizer):
    from tests.test_routes import linear_loss, tiny_model

    model = tiny_model(tokenizer)
    coefficients = [torch.randn(p.shape, generator=torch.Generator().manual_seed(i))
                    for i, (_, p) in enumerate(model.named_parameters())]
    loss = linear_loss(coefficients)
    named = dict(zip([n for n, _ in model.named_parameters()], coefficients))
    split = routes.split_by_module(named)
    direct = routes.module_gradients(loss, model)
    assert list(split) == list(direct) and list(split)[-1] == routes.OTHER
    assert all(torch.equal(split[m], direct[m]) for m in split)


def gradient(values: dict[str, list[float]]) -> dict[str, torch.Tensor]:
    return {name: torch.tensor(v) for name, v in values.items()}


ATTN, MLP = "model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj.weight"
EMB = "model.embed_tokens.weight"


def test_gradient_geometry_floors_pairs_tables_and_matrix():
    # replicate 0 and 1 of two domains; modules: attention [2 entries], mlp [2], other [1]
    grads = {("a", 0): gradient({ATTN: [1, 0], MLP: [0, 1], EMB: [1]}),
             ("a", 1): gradient({ATTN: [1, 0], MLP: [0, 2], EMB: [0]}),
             ("b", 0): gradient({ATTN: [-1, 0], MLP: [0, 1], EMB: [0]}),
             ("b", 1): gradient({ATTN: [0, 1], MLP: [0, 1], EMB: [1]})}
    geometry = GradientGeometry.of(grads)
    assert list(geometry.comparisons) == [("a", "b")] and geometry.pair("b", "a") is geometry.pair("a", "b")
    # a's floor: dot 1 + 2 = 3, |a0| = sqrt 3, |a1| = sqrt 5
    assert geometry.floors["a"].cosine == pytest.approx(3 / math.sqrt(15))
    reps = geometry.pair("a", "b")
    assert reps[0].cosine == pytest.approx(0.0)  # attention -1 and mlp +1 cancel
    assert reps[0].cancellation == pytest.approx(1.0)
    assert reps[1].cosine == pytest.approx(2 / (math.sqrt(5) * math.sqrt(3)))
    floors = geometry.module_floors("a", "b")
    assert floors["model.layers.0.self_attn"] == pytest.approx(0.0)  # b's two attention gradients are orthogonal
    assert floors["model.layers.0.mlp"] == pytest.approx(1.0)
    table = geometry.module_table("a", "b")
    assert list(table.index) == ["model.layers.0.self_attn", "model.layers.0.mlp"]  # "other" left out
    assert table.loc["model.layers.0.self_attn", "cosine (min)"] == pytest.approx(-1.0)
    assert table.loc["model.layers.0.self_attn", "cosine (max)"] == pytest.approx(0.0)
    assert table.loc["model.layers.0.mlp", "cosine (mean)"] == pytest.approx(1.0)
    assert geometry.module_cosines("a", "b") == {"model.layers.0.self_attn": [pytest.approx(-1.0), pytest.approx(0.0)],
                                                 "model.layers.0.mlp": [pytest.approx(1.0), pytest.approx(1.0)]}
    assert geometry.noise_floor("a", "b") == min(geometry.floors["a"].cosine, geometry.floors["b"].cosine)
    assert geometry.cancellation("a", "b") == pytest.approx((reps[0].cancellation + reps[1].cancellation) / 2)
    matrix = geometry.cosine_matrix()
    assert matrix.loc["a", "b"] == matrix.loc["b", "a"] == pytest.approx((reps[0].cosine + reps[1].cosine) / 2)
    assert matrix.loc["b", "b"] == pytest.approx(geometry.floors["b"].cosine)
    modules = geometry.replicate_modules("a", "b")
    assert sorted(set(modules["replicate"])) == ["batch 0", "batch 1"] and len(modules) == 6


def test_on_random_channels_draws_matched_sets_and_averages_their_cosines():
    shapes = {f"{L0}.mlp.gate_proj.weight": (4, 2), f"{L0}.mlp.up_proj.weight": (4, 2),
              f"{L0}.mlp.down_proj.weight": (2, 4)}
    first = {n: torch.randn(s, generator=torch.Generator().manual_seed(i)) for i, (n, s) in enumerate(shapes.items())}
    mean, sd = routes.on_random_channels(first, first, {(L0, 0)}, {L0: 4}, seed=3, draws=5)
    assert mean == pytest.approx(1.0) and sd == pytest.approx(0.0, abs=1e-12)  # a map against itself
    second = {n: -t for n, t in first.items()}
    assert routes.on_random_channels(first, second, {(L0, 0)}, {L0: 4}, seed=3, draws=5)[0] == pytest.approx(-1.0)
    # the mean is the mean of the drawn sets' cosines, seeds seed, seed + 1, ...
    other = {n: torch.randn(s, generator=torch.Generator().manual_seed(10 + i))
             for i, (n, s) in enumerate(shapes.items())}
    draws = [routes.on_channels(first, other, routes.random_channels({L0: 4}, {(L0, 0)}, seed=3 + k,
                                                                      exclude={(L0, 0)})).on for k in range(3)]
    mean, sd = routes.on_random_channels(first, other, {(L0, 0)}, {L0: 4}, seed=3, draws=3)
    assert mean == pytest.approx(sum(draws) / 3)
    assert sd == pytest.approx(pd.Series(draws).std(ddof=1))
