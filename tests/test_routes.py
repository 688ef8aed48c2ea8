"""Shared routes (mdrl_lib.routes): activity by hooks against manual forwards, padding and position
masks, top-q selection, ablation against edited weights, matched random controls, gradient geometry
on linear losses with known gradients, and delta cosines on hand tensors."""
from __future__ import annotations

import copy
import json
import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from transformers import Qwen2Config, Qwen2ForCausalLM

from mdrl_lib import routes
from mdrl_lib.domains.base import Domain, Example, Splits
from mdrl_lib.edits import top_neurons
from mdrl_lib.evaluation import generate, score_domains

L0, L1 = "model.layers.0", "model.layers.1"
PROMPTS = ["m:12+7=", "q:bax age?=", "w:bg12=", "c:17,3=", "m:3-1="]
ANSWERS = ["19", "17 yr", "2 bat", "(1+2)", "2"]


def tiny_model(tokenizer, layers=2, hidden=16, intermediate=24, heads=2, seed=0, scale=0.5):
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=64, tie_word_embeddings=True,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, attn_implementation="eager")
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # large weights, so that channels and prompts differ visibly
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=generator) * scale)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model.eval()


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_model(tokenizer)


def ids_of(tokenizer, prompt, answer=""):
    return tokenizer(prompt)["input_ids"] + tokenizer(answer, add_special_tokens=False)["input_ids"]


# --------------------------------------------------------------------------------------------------
# Activity
# --------------------------------------------------------------------------------------------------

def mlp_only_activity(model, token_ids):
    """With every o_proj zeroed, a token's MLP activations depend on its own embedding only: compute
    act(gate) * up per layer by hand from the embedding, RMSNorm and the projection weights."""
    h = model.model.embed_tokens.weight[torch.tensor(token_ids)]
    out = []
    for layer in model.model.layers:
        norm = layer.post_attention_layernorm
        x = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon) * norm.weight
        a = F.silu(x @ layer.mlp.gate_proj.weight.T) * (x @ layer.mlp.up_proj.weight.T)
        out.append(a)
        h = h + a @ layer.mlp.down_proj.weight.T
    return out


def test_channel_activity_matches_a_manual_forward_per_position_kind(tokenizer):
    model = tiny_model(tokenizer, seed=1)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
    # The manual forward must agree with the model's own hidden states (the hand model is right).
    ids = ids_of(tokenizer, PROMPTS[0], ANSWERS[0])
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
        manual = mlp_only_activity(model, ids)
        down = model.model.layers[0].mlp.down_proj.weight
        h = model.model.embed_tokens.weight[torch.tensor(ids)] + manual[0] @ down.T
    torch.testing.assert_close(hidden[1][0], h, rtol=1e-5, atol=1e-5)

    special = set(tokenizer.all_special_ids)
    for positions in ("prompt", "answer", "all"):
        got = routes.channel_activity(model, tokenizer, PROMPTS, ANSWERS, positions=positions, batch_size=2)
        rows = {0: [], 1: []}
        for prompt, answer in zip(PROMPTS, ANSWERS):
            p, a = ids_of(tokenizer, prompt), tokenizer(answer, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                acts = mlp_only_activity(model, p + a)
            chosen = [i for i, t in enumerate(p + a) if t not in special
                      and (positions == "all" or (positions == "prompt") == (i < len(p)))]
            for layer in (0, 1):
                rows[layer].append(acts[layer][chosen])
        for layer, name in ((0, L0), (1, L1)):
            expected = torch.cat(rows[layer]).abs().mean(0)
            torch.testing.assert_close(got[name], expected, rtol=1e-5, atol=1e-6)


def test_answer_positions_average_exactly_the_completion_tokens(tokenizer):
    model = tiny_model(tokenizer, seed=2)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
    got = routes.route_activity(model, tokenizer, ["m:1+2=", "m:40-1="], ["3", "39"], positions="answer")
    digits = tokenizer("339", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        expected = mlp_only_activity(model, digits)
    assert got.tokens == 3
    torch.testing.assert_close(got.channels[L1], expected[1].abs().mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.channel_means[L0], expected[0].mean(0), rtol=1e-5, atol=1e-6)


def test_special_tokens_count_only_when_asked(tokenizer):
    model = tiny_model(tokenizer, seed=2)
    plain = routes.route_activity(model, tokenizer, PROMPTS)
    with_bos = routes.route_activity(model, tokenizer, PROMPTS, exclude_special=False)
    assert with_bos.tokens == plain.tokens + len(PROMPTS)
    assert not torch.allclose(plain.channels[L0], with_bos.channels[L0])


def test_padding_and_batching_do_not_change_activity(model, tokenizer):
    for positions in ("prompt", "answer"):
        batched = routes.route_activity(model, tokenizer, PROMPTS, ANSWERS, positions=positions, batch_size=5)
        singles = [routes.route_activity(model, tokenizer, [p], [a], positions=positions)
                   for p, a in zip(PROMPTS, ANSWERS)]
        total = sum(s.tokens for s in singles)
        assert batched.tokens == total
        for name in (L0, L1):
            for field in ("channels", "heads"):
                expected = sum(getattr(s, field)[name] * s.tokens for s in singles) / total
                torch.testing.assert_close(getattr(batched, field)[name], expected, rtol=1e-4, atol=1e-5)


def test_prompt_and_answer_positions_differ(model, tokenizer):
    prompt = routes.channel_activity(model, tokenizer, PROMPTS, ANSWERS, positions="prompt")
    answer = routes.channel_activity(model, tokenizer, PROMPTS, ANSWERS, positions="answer")
    assert not torch.allclose(prompt[L0], answer[L0])


def test_head_activity_is_zero_for_a_head_whose_values_are_zero(tokenizer):
    model = tiny_model(tokenizer, seed=3)
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    with torch.no_grad():
        v = model.model.layers[1].self_attn.v_proj
        v.weight[head_dim:2 * head_dim].zero_()
        v.bias[head_dim:2 * head_dim].zero_()
    heads = routes.head_activity(model, tokenizer, PROMPTS)
    assert heads[L1].shape == (2,) and heads[L1][1] == 0 and heads[L1][0] > 0
    assert (heads[L0] > 0).all()


def test_activity_checks_its_input(model, tokenizer):
    with pytest.raises(ValueError, match="positions must be one of"):
        routes.channel_activity(model, tokenizer, PROMPTS, positions="middle")
    with pytest.raises(ValueError, match="needs completions"):
        routes.channel_activity(model, tokenizer, PROMPTS, positions="answer")
    with pytest.raises(ValueError, match="no answer tokens"):
        routes.channel_activity(model, tokenizer, PROMPTS[:2], ["", ""], positions="answer")
    with pytest.raises(ValueError, match="no decoder layers"):
        routes.channel_activity(torch.nn.Linear(2, 2), tokenizer, PROMPTS)


# --------------------------------------------------------------------------------------------------
# Route sets and overlap
# --------------------------------------------------------------------------------------------------

def test_active_routes_takes_the_top_fraction_across_layers_with_ties_in_order():
    activity = {L0: torch.tensor([5.0, 1.0, 3.0, 3.0]), L1: torch.tensor([3.0, 9.0, 0.0, 2.0])}
    assert routes.active_routes(activity, 0.25) == {(L1, 1), (L0, 0)}
    # 3.0 ties three ways: layer order, then index, decides.
    assert routes.active_routes(activity, 0.375) == {(L1, 1), (L0, 0), (L0, 2)}
    assert routes.active_routes(activity, 0.5) == {(L1, 1), (L0, 0), (L0, 2), (L0, 3)}
    assert routes.active_routes(activity, 0.5) == top_neurons(activity, 0.5)
    with pytest.raises(ValueError, match="fraction"):
        routes.active_routes(activity, 0)


def test_overlap_matrix_is_pairwise_jaccard():
    sets = {"math": {(L0, 0), (L0, 1)}, "qa": {(L0, 1), (L0, 2)}, "cw": {(L1, 0)}}
    table = routes.overlap_matrix(sets)
    assert list(table.index) == list(table.columns) == ["math", "qa", "cw"]
    assert table.loc["math", "qa"] == table.loc["qa", "math"] == pytest.approx(1 / 3)
    assert table.loc["math", "cw"] == 0 and (pd.Series(table.values.diagonal()) == 1).all()


def test_chance_jaccard_matches_random_sets():
    assert routes.chance_jaccard(1.0) == 1.0
    assert routes.chance_jaccard(0.1) == pytest.approx(0.1 / 1.9)
    generator = torch.Generator().manual_seed(0)
    n, k, trials = 1000, 100, 200
    inter = union = 0
    for _ in range(trials):
        a = set(torch.randperm(n, generator=generator)[:k].tolist())
        b = set(torch.randperm(n, generator=generator)[:k].tolist())
        inter, union = inter + len(a & b), union + len(a | b)
    assert inter / union == pytest.approx(routes.chance_jaccard(k / n), rel=0.05)


# --------------------------------------------------------------------------------------------------
# Ablation
# --------------------------------------------------------------------------------------------------

def down_inputs(model, ids):
    seen = {}
    handles = [layer.mlp.down_proj.register_forward_pre_hook(
        lambda m, args, i=i: seen.__setitem__(i, args[0].detach().clone()))
        for i, layer in enumerate(model.model.layers)]
    try:
        with torch.no_grad():
            logits = model(input_ids=ids).logits
    finally:
        for h in handles:
            h.remove()
    return seen, logits


def test_zero_ablation_changes_exactly_the_chosen_channels(model, tokenizer):
    ids = torch.tensor([ids_of(tokenizer, PROMPTS[1])])
    before, logits_before = down_inputs(model, ids)
    chosen = {(L0, 3), (L0, 7), (L1, 0)}
    with routes.ablate_channels(model, chosen):
        after, logits_after = down_inputs(model, ids)  # registered after: still sees the ablated input
    others = [i for i in range(24) if i not in (3, 7)]
    assert (after[0][..., [3, 7]] == 0).all()
    assert torch.equal(after[0][..., others], before[0][..., others])
    assert (after[1][..., 0] == 0).all()
    assert not torch.equal(logits_after, logits_before)
    # The same as zeroing those columns of down_proj's weight.
    edited = copy.deepcopy(model)
    with torch.no_grad():
        edited.model.layers[0].mlp.down_proj.weight[:, [3, 7]] = 0
        edited.model.layers[1].mlp.down_proj.weight[:, 0] = 0
        torch.testing.assert_close(edited(input_ids=ids).logits, logits_after, rtol=1e-5, atol=1e-5)
    # Hooks are gone after the block, also after an error.
    assert torch.equal(down_inputs(model, ids)[1], logits_before)
    with pytest.raises(RuntimeError, match="boom"):
        with routes.ablate_channels(model, chosen):
            raise RuntimeError("boom")
    assert all(not layer.mlp.down_proj._forward_pre_hooks for layer in model.model.layers)


def test_ablation_runs_before_hooks_registered_earlier(model, tokenizer):
    ids = torch.tensor([ids_of(tokenizer, PROMPTS[0])])
    seen = []
    handle = model.model.layers[0].mlp.down_proj.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    try:
        with routes.ablate_channels(model, {(L0, 1)}), torch.no_grad():
            model(input_ids=ids)
    finally:
        handle.remove()
    assert (seen[0][..., 1] == 0).all() and (seen[0][..., 0] != 0).any()


def test_layer1_ablation_leaves_layer1_other_channels_untouched(model, tokenizer):
    ids = torch.tensor([ids_of(tokenizer, PROMPTS[2], ANSWERS[2])])
    before, _ = down_inputs(model, ids)
    with routes.ablate_channels(model, {(L1, 5)}):
        after, _ = down_inputs(model, ids)
    assert torch.equal(after[0], before[0])
    keep = [i for i in range(24) if i != 5]
    assert torch.equal(after[1][..., keep], before[1][..., keep]) and (after[1][..., 5] == 0).all()


def test_mean_ablation_equals_a_constant_bias_through_down_proj(model, tokenizer):
    ids = torch.tensor([ids_of(tokenizer, PROMPTS[3])])
    means = routes.route_activity(model, tokenizer, PROMPTS).channel_means
    chosen = [2, 11]
    with routes.ablate_channels(model, {(L0, i) for i in chosen}, mode="mean", means=means):
        after, logits = down_inputs(model, ids)
    torch.testing.assert_close(after[0][0, :, chosen], means[L0][chosen].expand(ids.shape[1], -1))
    edited = copy.deepcopy(model)
    with torch.no_grad():
        down = edited.model.layers[0].mlp.down_proj
        bias = down.weight[:, chosen] @ means[L0][chosen]
        down.weight[:, chosen] = 0
        down.bias = torch.nn.Parameter(bias)
        torch.testing.assert_close(edited(input_ids=ids).logits, logits, rtol=1e-5, atol=1e-5)


def test_ablation_checks_its_input(model):
    with pytest.raises(ValueError, match="unknown layer"):
        with routes.ablate_channels(model, {("model.layers.9", 0)}):
            pass
    with pytest.raises(ValueError, match="out of range"):
        with routes.ablate_channels(model, {(L0, 24)}):
            pass
    with pytest.raises(ValueError, match="mode must be one of"):
        with routes.ablate_channels(model, {(L0, 0)}, mode="noise"):
            pass
    with pytest.raises(ValueError, match="needs means"):
        with routes.ablate_channels(model, {(L0, 0)}, mode="mean"):
            pass


def test_random_channels_match_per_layer_counts_avoid_exclusions_and_are_seeded(model):
    shared = {(L0, 0), (L0, 1), (L0, 2), (L1, 4)}
    control = routes.random_channels(model, shared, seed=0, exclude=shared)
    assert not control & shared
    assert sum(l == L0 for l, _ in control) == 3 and sum(l == L1 for l, _ in control) == 1
    assert control == routes.random_channels(model, shared, seed=0, exclude=shared)
    assert control != routes.random_channels(model, shared, seed=1, exclude=shared)
    total = routes.random_channels({L0: 10, L1: 10}, 7, seed=3, exclude={(L0, i) for i in range(10)})
    assert len(total) == 7 and all(layer == L1 for layer, _ in total)
    assert routes.random_channels(model, {L1: 24}, seed=0) == {(L1, i) for i in range(24)}
    with pytest.raises(ValueError, match="cannot draw"):
        routes.random_channels({L0: 4}, {L0: 3}, seed=0, exclude={(L0, 0), (L0, 1)})
    with pytest.raises(ValueError, match="unknown layer"):
        routes.random_channels({L0: 4}, {"x": 1}, seed=0)


class EchoDomain(Domain):
    """Scores 1 when the completion equals the spec's ``text``: specs built from the unablated model's
    own completions make its score exactly 1."""

    name, title = "echo", "Echo"

    def build_splits(self, seed, train_size, eval_size):
        return Splits([], [])

    def score_one(self, completion, spec):
        return float(completion == spec["text"])


def test_ablation_effects_scores_each_set_against_the_unablated_model(model, tokenizer):
    prompts = [f"m:{a}+{b}=" for a in range(4) for b in range(3)]
    texts = generate(model, tokenizer, prompts, max_new_tokens=3)
    evals = {"echo": (EchoDomain(), [Example("echo", p, t, json.dumps({"text": t})) for p, t in zip(prompts, texts)])}
    sets = {"first": {(L0, i) for i in range(12)}, "none": set()}
    table = routes.ablation_effects(model, tokenizer, evals, sets, max_new_tokens=3)
    assert list(table["ablated"]) == ["first", "none"] and list(table["channels"]) == [12, 0]
    assert (table["base_score"] == 1.0).all()
    none = table[table["ablated"] == "none"].iloc[0]
    assert none["score"] == 1.0 and none["change"] == 0.0
    edited = copy.deepcopy(model)
    with torch.no_grad():
        edited.model.layers[0].mlp.down_proj.weight[:, :12] = 0
    expected = score_domains(edited, tokenizer, evals, max_new_tokens=3)["score"].iloc[0]
    first = table[table["ablated"] == "first"].iloc[0]
    assert first["score"] == expected < 1.0
    assert first["change"] == pytest.approx(expected - 1.0)
    with pytest.raises(ValueError, match="channel set 'bad'"):
        routes.ablation_effects(model, tokenizer, evals, {"bad": {(L0, 99)}}, max_new_tokens=3)


# --------------------------------------------------------------------------------------------------
# Gradient geometry
# --------------------------------------------------------------------------------------------------

def linear_loss(coefficients):
    """L(θ) = Σ <c_p, p>: its gradient is exactly c."""
    return lambda m: sum((c * p).sum() for (_, p), c in zip(m.named_parameters(), coefficients))


def test_module_gradients_group_every_parameter_once(model):
    names = [n for n, _ in model.named_parameters()]
    coefficients = [torch.randn(p.shape, generator=torch.Generator().manual_seed(i)) for i, (_, p)
                    in enumerate(model.named_parameters())]
    grads = routes.module_gradients(linear_loss(coefficients), model)
    assert list(grads) == [f"{L0}.self_attn", f"{L0}.mlp", f"{L1}.self_attn", f"{L1}.mlp", "other"]
    assert sum(g.numel() for g in grads.values()) == sum(p.numel() for p in model.parameters())
    by_module = {}
    for name, c in zip(names, coefficients):
        by_module.setdefault(routes.module_of(name), []).append(c.flatten())
    for module, pieces in by_module.items():
        torch.testing.assert_close(grads[module], torch.cat(pieces))
    assert routes.module_of(f"{L0}.self_attn.q_proj.bias") == f"{L0}.self_attn"
    assert routes.module_of(f"{L1}.mlp.down_proj.weight") == f"{L1}.mlp"
    assert routes.module_of(f"{L0}.input_layernorm.weight") == "other"
    assert routes.module_of("model.embed_tokens.weight") == "other"
    assert all(p.grad is None for p in model.parameters())


def test_gradient_cosines_with_a_known_angle_and_module_dots_that_add_up(model):
    shapes = [p.shape for p in model.parameters()]
    generator = torch.Generator().manual_seed(0)
    a = [torch.randn(s, generator=generator) for s in shapes]
    noise = [torch.randn(s, generator=generator) for s in shapes]
    flat_a, flat_n = torch.cat([x.flatten() for x in a]), torch.cat([x.flatten() for x in noise])
    perp = flat_n - (flat_n @ flat_a) / (flat_a @ flat_a) * flat_a
    angle_cos = 0.3
    flat_b = angle_cos * flat_a / flat_a.norm() + math.sqrt(1 - angle_cos ** 2) * perp / perp.norm()
    b, offset = [], 0
    for s in shapes:
        b.append(flat_b[offset:offset + math.prod(s)].view(s))
        offset += math.prod(s)
    comparison = routes.gradient_cosines(routes.module_gradients(linear_loss(a), model),
                                         routes.module_gradients(linear_loss(b), model))
    assert comparison.cosine == pytest.approx(angle_cos, abs=1e-5)
    table = comparison.modules
    assert table["dot"].sum() == pytest.approx(comparison.dot, rel=1e-9)
    assert table["contribution"].sum() == pytest.approx(comparison.cosine, rel=1e-9)
    assert comparison.positive + comparison.negative == pytest.approx(comparison.cosine, rel=1e-9)
    assert table["share"].abs().sum() == pytest.approx(1.0)
    assert comparison.norm_a == pytest.approx(float(flat_a.norm()), rel=1e-6)


def test_cancellation_conflict_and_synergy_on_hand_gradients():
    ga = {"l.0.self_attn": torch.tensor([1.0, 0.0]), "l.0.mlp": torch.tensor([2.0, 0.0]),
          "other": torch.tensor([1.0])}
    gb = {"l.0.self_attn": torch.tensor([1.0, 0.0]), "l.0.mlp": torch.tensor([-0.5, 0.0]),
          "other": torch.tensor([-3.0])}
    c = routes.gradient_cosines(ga, gb)
    # dots: +1, -1, -3; global -3; |a| = sqrt(6), |b| = sqrt(10.25)
    assert c.dot == pytest.approx(-3.0)
    assert c.cosine == pytest.approx(-3 / math.sqrt(6 * 10.25))
    assert list(c.modules["cosine"]) == pytest.approx([1.0, -1.0, -1.0])
    assert c.cancellation == pytest.approx(1 - 3 / 5)
    assert c.positive == pytest.approx(1 / math.sqrt(6 * 10.25))
    assert list(routes.most_conflicting(c)["module"]) == ["l.0.mlp"]  # "other" left out by default
    assert list(routes.most_conflicting(c, by="contribution", include_other=True)["module"]) == ["other"]
    assert list(routes.most_synergistic(c, k=2)["module"]) == ["l.0.self_attn", "l.0.mlp"]
    with pytest.raises(ValueError, match="different modules"):
        routes.gradient_cosines(ga, {"other": torch.tensor([1.0])})
    with pytest.raises(ValueError, match="by must be"):
        routes.most_conflicting(c, by="dot")


def test_module_gradients_needs_a_scalar_loss(model):
    with pytest.raises(TypeError, match="scalar"):
        routes.module_gradients(lambda m: m.model.embed_tokens.weight.sum(0), model)


# --------------------------------------------------------------------------------------------------
# Deltas on route coordinates
# --------------------------------------------------------------------------------------------------

def test_route_coordinate_mask_selects_rows_and_columns(model):
    masks = routes.route_coordinate_mask(model, {(L0, 2), (L0, 5)})
    gate, up, down = (masks[f"{L0}.mlp.{p}.weight"] for p in ("gate_proj", "up_proj", "down_proj"))
    assert gate.shape == (24, 16) and down.shape == (16, 24)
    assert gate[[2, 5]].all() and gate.sum() == 2 * 16 and torch.equal(gate, up)
    assert down[:, [2, 5]].all() and down.sum() == 2 * 16
    assert not masks[f"{L1}.mlp.up_proj.weight"].any()
    assert not any("self_attn" in n for n in masks)
    shapes = {n: t.shape for n, t in model.state_dict().items()}
    assert all(torch.equal(m, routes.route_coordinate_mask(shapes, {(L0, 2), (L0, 5)})[n]) for n, m in masks.items())
    with pytest.raises(ValueError, match="out of range"):
        routes.route_coordinate_mask(model, {(L0, 24)})


def test_delta_cosine_on_and_off_the_mask_by_hand():
    delta_a = {"w": torch.tensor([[1.0, 0.0], [0.0, 1.0]]), "v": torch.tensor([2.0])}
    delta_b = {"w": torch.tensor([[1.0, 5.0], [3.0, -1.0]]), "v": torch.tensor([1.0])}
    mask = {"w": torch.tensor([[True, False], [False, True]])}
    result = routes.delta_cosine_on_coordinates(delta_a, delta_b, mask)
    # on: a = (1, 1), b = (1, -1) -> 0; off: a = (0, 0, 2), b = (5, 3, 1) -> 2 / (2 sqrt(35))
    assert result.on == pytest.approx(0.0) and result.on_size == 2
    assert result.off == pytest.approx(1 / math.sqrt(35)) and result.off_size == 3
    flipped = routes.delta_cosine_on_coordinates(delta_a, {"w": -delta_a["w"], "v": delta_b["v"]}, mask)
    assert flipped.on == pytest.approx(-1.0)
    assert math.isnan(routes.delta_cosine_on_coordinates(delta_a, delta_b, {}).on)
    with pytest.raises(ValueError, match="mask of w"):
        routes.delta_cosine_on_coordinates(delta_a, delta_b, {"w": torch.ones(3, dtype=torch.bool)})
