"""Merging baselines (mdrl_lib.merging): task arithmetic and TIES against hand-computed cases, DARE's
seeded drop and rescale, the settings' checks, the keys, and a merge built through a kit."""
from __future__ import annotations

import pytest
import torch

from mdrl_lib.config import ConfigError, RunConfig
from mdrl_lib.kit import Base, Stage, Stored, open_kit
from mdrl_lib.store import cache_key
from mdrl_lib.merging import (DARE_DROP_RATES, MERGE_METHODS, TASK_ARITHMETIC_SCALES, TIES_DENSITIES, Merge,
                              check_merge, merge_grid, merge_task_vectors, merge_tensors, stage_references,
                              task_vectors, tensor_seed)

# Three models' tensor (6 entries) over one base. Their task vectors (model - base):
BASE = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
TAU = [torch.tensor([0.5, -0.1, 0.3, -0.8, 0.05, 0.9]),
       torch.tensor([0.2, 0.6, -0.4, 0.1, 0.0, -0.3]),
       torch.tensor([0.3, 0.02, -0.7, 0.9, -0.01, -0.35])]
MODELS = [BASE + t for t in TAU]


def close(a, b):
    return torch.allclose(a, torch.as_tensor(b, dtype=a.dtype), atol=1e-6)


def test_task_vectors_are_model_minus_base():
    vectors = task_vectors(BASE, MODELS)
    assert all(close(v, t) for v, t in zip(vectors, TAU))
    with pytest.raises(ValueError, match="shape"):
        task_vectors(BASE, [torch.zeros(5)])


def test_task_arithmetic_by_hand():
    """base [1, -1, 0.5, 2]; tau1 [0.2, -0.4, 0, 1], tau2 [-0.6, 0.2, 0.3, 0.5]; weights (0.5, 1):
    0.5 tau1 + tau2 = [0.1 - 0.6, -0.2 + 0.2, 0 + 0.3, 0.5 + 0.5] = [-0.5, 0, 0.3, 1.0]."""
    base = torch.tensor([1.0, -1.0, 0.5, 2.0])
    models = [base + torch.tensor([0.2, -0.4, 0.0, 1.0]), base + torch.tensor([-0.6, 0.2, 0.3, 0.5])]
    assert close(merge_tensors("task_arithmetic", base, models, weights=(0.5, 1.0)), [0.5, -1.0, 0.8, 3.0])
    assert close(merge_tensors("task_arithmetic", base, models, weights=(1.0, 1.0)), [0.6, -1.2, 0.8, 3.5])
    assert close(merge_tensors("task_arithmetic", base, models, weights=(-1.0, 0.0)), [0.8, -0.6, 0.5, 1.0])


def test_ties_by_hand():
    """Density 0.5 keeps int(0.5 x 6) = 3 entries of each vector by magnitude:
    tau1 -> [0.5, 0, 0, -0.8, 0, 0.9], tau2 -> [0, 0.6, -0.4, 0, 0, -0.3], tau3 -> [0, 0, -0.7, 0.9, 0, -0.35].
    Signs by total mass: + (0.5), + (0.6), - (-1.1), + (0.1), + (nothing: a tie counts +), + (0.25).
    Disjoint merge, the sum of the agreeing entries over their count (peft's disjoint_merge):
    [0.5/1, 0.6/1, (-0.4 - 0.7)/2, 0.9/1, 0 (none agrees), 0.9/1]."""
    merged = merge_tensors("ties", BASE, MODELS, density=0.5)
    assert close(merged - BASE, [0.5, 0.6, -0.55, 0.9, 0.0, 0.9])
    # by frequency the last entry's signs (+, -, -) elect -, and the mean of -0.3 and -0.35 wins
    frequency = merge_tensors("ties", BASE, MODELS, density=0.5, majority_sign="frequency")
    assert close(frequency - BASE, [0.5, 0.6, -0.55, 0.9, 0.0, -0.325])
    # weights (1, 0.5, 2) scale the entries after the (unweighted) sign election; the count still divides:
    # [0.5, 0.5 x 0.6, (0.5 x -0.4 + 2 x -0.7) / 2, 2 x 0.9, 0, 0.9]
    weighted = merge_tensors("ties", BASE, MODELS, weights=(1.0, 0.5, 2.0), density=0.5)
    assert close(weighted - BASE, [0.5, 0.3, -0.8, 1.8, 0.0, 0.9])
    # density 1 trims nothing: entry 3 is then (0.1 and 0.9 agree on +) / 2 = 0.5, entry 4 is 0.05 alone
    full = merge_tensors("ties", BASE, MODELS, density=1.0)
    assert close(full[3] - BASE[3], 0.5) and close(full[4] - BASE[4], 0.05)


def test_the_merges_are_peft_s_on_random_tensors():
    from peft.utils import merge_utils

    generator = torch.Generator().manual_seed(0)
    vectors = [torch.randn(7, 5, generator=generator) for _ in range(3)]
    weights = torch.tensor([0.3, 1.0, 0.7])
    assert torch.equal(merge_task_vectors("ties", vectors, (0.3, 1.0, 0.7), density=0.4),
                       merge_utils.ties(vectors, weights, 0.4))
    assert torch.equal(merge_task_vectors("task_arithmetic", vectors, (0.3, 1.0, 0.7)),
                       merge_utils.task_arithmetic(vectors, weights))


def test_one_model_at_weight_one_is_that_model():
    generator = torch.Generator().manual_seed(1)
    base = torch.randn(4, 6, generator=generator)
    model = base + torch.randn(4, 6, generator=generator)
    assert torch.allclose(merge_tensors("task_arithmetic", base, [model]), model, atol=1e-6)
    assert torch.allclose(merge_tensors("ties", base, [model], density=1.0), model, atol=1e-6)
    assert torch.allclose(merge_tensors("dare_linear", base, [model], density=1.0), model, atol=1e-6)


def test_tensors_no_model_changes_and_non_floating_ones_are_the_base_s():
    base = torch.tensor([1.0, 2.0, 3.0])
    same = merge_tensors("task_arithmetic", base, [base.clone(), base.clone()], weights=(0.5, 0.5))
    assert torch.equal(same, base) and same.data_ptr() != base.data_ptr()
    counts = torch.tensor([1, 2, 3])
    assert torch.equal(merge_tensors("dare_ties", counts, [counts + 1], density=0.5), counts)


def test_dare_is_deterministic_by_seed_and_name_and_leaves_the_global_rng_alone():
    generator = torch.Generator().manual_seed(2)
    base = torch.zeros(50, 40)
    models = [torch.randn(50, 40, generator=generator) for _ in range(2)]
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    one = merge_tensors("dare_ties", base, models, density=0.3, seed=5, name="layer.weight")
    assert torch.equal(torch.random.get_rng_state(), before)
    merge_tensors("dare_linear", base, models, density=0.3, seed=5, name="other.weight")  # another tensor first
    assert torch.equal(merge_tensors("dare_ties", base, models, density=0.3, seed=5, name="layer.weight"), one)
    assert not torch.equal(merge_tensors("dare_ties", base, models, density=0.3, seed=6, name="layer.weight"), one)
    assert not torch.equal(merge_tensors("dare_ties", base, models, density=0.3, seed=5, name="layer.bias"), one)
    assert tensor_seed(5, "layer.weight") == tensor_seed(5, "layer.weight") != tensor_seed(5, "layer.bias")


@pytest.mark.parametrize("density", [0.1, 0.3, 0.5])
def test_dare_drops_at_its_rate_and_rescales_by_one_over_density(density):
    """One model, task vector of 200,000 ones: each entry is kept with probability ``density`` and then worth
    1/density, so the zero share is 1 - density (binomial sd <= 0.0012; tolerance 0.005) and the mean is 1 in
    expectation (sd <= 0.007 at density 0.1; tolerance 0.03)."""
    base = torch.full((400, 500), 2.0)
    merged = merge_tensors("dare_linear", base, [base + 1.0], density=density, seed=0, name="w") - base
    kept = merged != 0
    assert abs(1 - kept.float().mean().item() - (1 - density)) < 0.005
    assert torch.allclose(merged[kept], torch.tensor(1.0 / density), rtol=1e-5)
    assert abs(merged.mean().item() - 1.0) < 0.03
    # with one positive model, dare_ties keeps the same entries (all agree with +), each over a count of 1
    assert torch.equal(merge_tensors("dare_ties", base, [base + 1.0], density=density, seed=0, name="w"), merged + base)


@pytest.mark.parametrize("settings, message", [
    (dict(method="average"), "valid choices: task_arithmetic, ties, dare_linear, dare_ties"),
    (dict(method="ties"), "needs a density"),
    (dict(method="ties", density=0.0), "merge density"),
    (dict(method="dare_linear", density=1.5), "merge density"),
    (dict(method="task_arithmetic", density=0.5), "density applies to ties, dare_linear, dare_ties only"),
    (dict(method="task_arithmetic", weights=(1.0,)), "expected 2 numbers"),
    (dict(method="task_arithmetic", weights=(1.0, float("nan"))), "weights\\[1\\]"),
    (dict(method="task_arithmetic", weights=(1.0, 11.0)), "<= 10"),
    (dict(method="ties", density=0.3, majority_sign="mean"), "valid choices: total, frequency"),
    (dict(method="dare_linear", density=0.3, majority_sign="frequency"), "applies to ties, dare_ties only"),
    (dict(method="ties", density=0.3, seed=1), "seed applies to dare_linear, dare_ties only"),
    (dict(method="dare_ties", density=0.3, seed=-1), "merge seed"),
])
def test_bad_settings_are_refused_with_the_valid_choices(settings, message):
    with pytest.raises(ConfigError, match=message):
        check_merge(count=2, **settings)
    with pytest.raises(ConfigError, match=message):
        Merge(Stored("base-0"), (Stored("stage-1"), Stored("stage-2")), **settings)
    with pytest.raises(ConfigError, match=message):
        merge_tensors(tensors=[BASE, BASE], base=BASE, **settings)


def test_bad_models_are_refused():
    with pytest.raises(ConfigError, match="at least one model"):
        Merge(Base(), (), "task_arithmetic")
    with pytest.raises(ConfigError, match="more than once"):
        Merge(Base(), (Stage(Base(), "math"), Stage(Base(), "math")), "task_arithmetic")
    with pytest.raises(ConfigError, match="the base"):
        Merge(Base(), (Base(), Stage(Base(), "math")), "task_arithmetic")
    with pytest.raises(ConfigError, match="expected an artifact spec"):
        Merge(Base(), ("math",), "task_arithmetic")


@pytest.fixture()
def kit(tmp_path):
    return open_kit(RunConfig.from_params(scale="toy", seed=0, run_dir=str(tmp_path / "run")))


def test_keys_change_with_every_setting_and_are_stable(kit):
    base, a, b = Stored("base-000000000000"), Stored("stage-aaaaaaaaaaaa"), Stored("stage-bbbbbbbbbbbb")
    ta = Merge(base, (a, b), "task_arithmetic", weights=(0.5, 0.5))
    # hard-coded: a change to what the key covers must be deliberate
    assert kit.key(ta) == "merge-b7f20917974e"
    assert kit.key(ta) == cache_key("merge", {"base": "base-000000000000", "dtype": "fp32", "method": "task_arithmetic",
                                              "models": ["stage-aaaaaaaaaaaa", "stage-bbbbbbbbbbbb"],
                                              "weights": [0.5, 0.5]})
    assert kit.key(Merge(base, [a, b], "task_arithmetic", weights=[0.5, 0.5])) == kit.key(ta)
    assert kit.key(Merge(base, (a, b), "task_arithmetic")) == kit.key(Merge(base, (a, b), "task_arithmetic",
                                                                             weights=(1, 1)))
    dare = Merge(base, (a, b), "dare_ties", density=0.3, seed=0)
    variants = [ta, dare,
                Merge(base, (a, b), "task_arithmetic", weights=(0.5, 0.7)),
                Merge(base, (b, a), "task_arithmetic", weights=(0.5, 0.5)),
                Merge(base, (a,), "task_arithmetic", weights=(0.5,)),
                Merge(Stored("base-111111111111"), (a, b), "task_arithmetic", weights=(0.5, 0.5)),
                Merge(base, (a, b), "ties", density=0.3),
                Merge(base, (a, b), "ties", density=0.5),
                Merge(base, (a, b), "ties", density=0.3, majority_sign="frequency"),
                Merge(base, (a, b), "dare_linear", density=0.3),
                Merge(base, (a, b), "dare_ties", density=0.3, seed=1),
                Merge(base, (a, b), "dare_ties", density=0.5),
                Merge(base, (a, b), "dare_ties", density=0.3, majority_sign="frequency")]
    keys = [kit.key(v) for v in variants]
    assert len(set(keys)) == len(keys)
    assert all(k.startswith("merge-") for k in keys)
    assert dare.drop_rate == 0.7 and ta.drop_rate is None
    # settings a method does not use stay out of its key
    assert "seed" not in ta.key_fields(kit) and "density" not in ta.key_fields(kit)
    assert "majority_sign" not in Merge(base, (a, b), "dare_linear", density=0.3).key_fields(kit)


def test_merge_grid_names_the_kit_s_sweep():
    base, models = Base(), (Stage(Base(), "math"), Stage(Base(), "qa"))
    grid = merge_grid(base, models)
    assert [m.method for m in grid] == (["task_arithmetic"] * 4 + ["ties"] * 3 + ["dare_linear"] * 3
                                        + ["dare_ties"] * 3)
    assert [m.weights for m in grid[:4]] == [(s, s) for s in TASK_ARITHMETIC_SCALES] == [
        (0.3, 0.3), (0.5, 0.5), (0.7, 0.7), (1.0, 1.0)]
    assert [m.density for m in grid[4:7]] == list(TIES_DENSITIES) == [0.1, 0.3, 0.5]
    assert [m.drop_rate for m in grid[7:10]] == list(DARE_DROP_RATES) == [0.5, 0.7, 0.9]
    assert [m.density for m in grid[10:]] == [0.5, 0.3, 0.1]
    assert all(m.weights == (1.0, 1.0) for m in grid[4:]) and len(set(grid)) == len(grid)
    assert [m.method for m in merge_grid(base, models, "ties", densities=(0.2,))] == ["ties"]
    with pytest.raises(ConfigError, match="valid choices: " + ", ".join(MERGE_METHODS)):
        merge_grid(base, models, ("ties", "slerp"))
    with pytest.raises(ConfigError, match="drop rate"):
        merge_grid(base, models, ("dare_linear",), drop_rates=(1.0,))


def _toy_models(kit):
    """A toy base and two 'experts', each changing some tensors of the base, stored under made-up keys."""
    from mdrl_lib.models import build_toy_model, save_model

    tokenizer = kit.tokenizer
    model = build_toy_model(kit.config.model, tokenizer, seed=0)
    names = sorted(model.state_dict())
    changed = {"a": [n for n in names if "layers.0." in n], "b": [n for n in names if "layers.0.mlp" in n
                                                                   or "layers.1.self_attn" in n]}
    stored = {}
    for label, seed in (("base", None), ("a", 1), ("b", 2)):
        state = {n: t.clone() for n, t in model.state_dict().items()}
        copy = build_toy_model(kit.config.model, tokenizer, seed=0)
        if seed is not None:
            generator = torch.Generator().manual_seed(seed)
            for n in changed[label]:
                state[n] += 0.01 * torch.randn(state[n].shape, generator=generator)
        copy.load_state_dict(state)
        key = f"stage-{label * 12}" if label != "base" else "base-000000000000"
        kit.store.get_or_create(key, lambda d, m=copy: save_model(m, tokenizer, d) or {}, config={}, seed=0)
        stored[label] = Stored(key)
    return stored, changed, names


def test_a_merge_artifact_is_base_plus_the_merged_task_vectors(kit):
    stored, changed, names = _toy_models(kit)
    spec = Merge(stored["base"], (stored["a"], stored["b"]), "task_arithmetic", weights=(0.5, 1.0))
    artifact = kit.get(spec, progress=False)
    base, a, b = (dict(kit.weights(stored[x])) for x in ("base", "a", "b"))
    merged = dict(kit.weights(spec))
    assert set(merged) == set(base)
    touched = set(changed["a"]) | set(changed["b"])
    for name in merged:
        if name in touched:
            assert torch.allclose(merged[name], base[name] + 0.5 * (a[name] - base[name]) + (b[name] - base[name]),
                                  atol=1e-6)
        else:
            assert torch.equal(merged[name], base[name])  # copied, bit for bit
    assert artifact.metrics["merged_tensors"] == len(touched & set(merged))
    assert artifact.metrics["merged_tensors"] + artifact.metrics["copied_tensors"] == len(merged)
    model, _ = kit.load(spec)  # loads as any model (what Scores does)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # still tied
    # one model at weight 1 is that model
    alone = dict(kit.weights(kit.get(Merge(stored["base"], (stored["a"],), "task_arithmetic"), progress=False)))
    assert all(torch.allclose(alone[n], a[n], atol=1e-6) for n in alone)
    # DARE's stored merge is what merge_tensors gives tensor by tensor (seeded by name, order-free)
    dare = dict(kit.weights(kit.get(Merge(stored["base"], (stored["a"], stored["b"]), "dare_ties", density=0.5,
                                          seed=3), progress=False)))
    name = sorted(touched)[-1]
    assert torch.equal(dare[name], merge_tensors("dare_ties", base[name], [a[name], b[name]], density=0.5, seed=3,
                                                 name=name))


def test_a_bf16_base_s_task_vectors_start_from_its_fp32_master(kit):
    """A stage trained in bf16 stores its rounded weights and its fp32 master: task vectors start from the
    master (as kit.weights reads the models'): at weight 0.5 the merge is halfway between the master and the
    model, not between the rounded weights and the model."""
    from mdrl_lib.models import build_toy_model, save_model
    from mdrl_lib.training import save_stage

    tokenizer = kit.tokenizer
    master = build_toy_model(kit.config.model, tokenizer, seed=0)
    expert = build_toy_model(kit.config.model, tokenizer, seed=0)
    with torch.no_grad():
        for p in expert.parameters():
            p.add_(1e-4)
    kit.store.get_or_create("stage-expert000000", lambda d: save_model(expert, tokenizer, d) or {}, config={}, seed=0)
    kit.store.get_or_create("stage-bf16base0000", lambda d: save_stage(master, tokenizer, d, "bf16") or {},
                            config={}, seed=0)
    base, model = Stored("stage-bf16base0000"), Stored("stage-expert000000")
    assert (kit.path(base) / "master_fp32.safetensors").is_file()
    merged = dict(kit.weights(kit.get(Merge(base, (model,), "task_arithmetic", weights=(0.5,)), progress=False)))
    start, end = dict(kit.weights(base)), dict(kit.weights(model))  # kit.weights: the master
    assert all(torch.allclose(merged[n], start[n] + 0.5 * (end[n] - start[n]), atol=1e-6) for n in end)


def test_stage_deltas_telescope_to_the_last_stage_and_ties_merges_the_steps(kit):
    """A chain's stages merged by their own steps (each minus the stage before it): task arithmetic at weight 1
    telescopes to the last stage; TIES at density 1 elects each entry's sign from the summed steps and averages
    the steps that agree, tensor by tensor as merge_task_vectors computes it."""
    stored, changed, names = _toy_models(kit)
    base, a, b = stored["base"], stored["a"], stored["b"]
    references = stage_references(base, (a, b))
    assert references == (base, a)
    chain = Merge(base, (a, b), "task_arithmetic", references=references)
    assert kit.key(chain) != kit.key(Merge(base, (a, b), "task_arithmetic"))
    assert "references" not in Merge(base, (a, b), "task_arithmetic", references=(base, base)).key_fields(kit)
    assert set(chain.inputs()) == {base, a, b}
    weights = {x: dict(kit.weights(stored[x])) for x in ("base", "a", "b")}
    merged = dict(kit.weights(kit.get(chain, progress=False)))
    assert all(torch.allclose(merged[n], weights["b"][n], atol=1e-6) for n in merged)
    ties = dict(kit.weights(kit.get(Merge(base, (a, b), "ties", density=1.0, references=references),
                                    progress=False)))
    name = sorted(set(changed["a"]) & set(changed["b"]))[0]  # a tensor both steps move
    first = weights["a"][name] - weights["base"][name]
    second = weights["b"][name] - weights["a"][name]
    sign = torch.where(first + second >= 0, 1.0, -1.0)
    agree = [(v.sign() == sign).float() for v in (first, second)]
    expected = weights["base"][name] + (first * agree[0] + second * agree[1]) / (agree[0] + agree[1]).clamp(min=1)
    assert torch.allclose(ties[name], expected, atol=1e-6)
    untouched = sorted(set(ties) - set(changed["a"]) - set(changed["b"]))[0]
    assert torch.equal(ties[untouched], weights["base"][untouched])


def test_merge_references_are_checked_before_any_work():
    base, a, b = Base(), Stage(Base(), "math"), Stage(Stage(Base(), "math"), "qa")
    with pytest.raises(ConfigError, match="expected 2 specs"):
        Merge(base, (a, b), "task_arithmetic", references=(base,))
    with pytest.raises(ConfigError, match="its own reference"):
        Merge(base, (a, b), "task_arithmetic", references=(base, b))
    with pytest.raises(ConfigError, match="sequence of 2 model specs"):
        Merge(base, (a, b), "task_arithmetic", references=base)
    with pytest.raises(ConfigError, match="merge references"):
        Merge(base, (a, b), "task_arithmetic", references=(base, "qa"))
    grid = merge_grid(base, (a, b), ("ties",), densities=(0.5,), references=stage_references(base, (a, b)))
    assert grid[0].references == (base, a) and "each minus its reference" in grid[0].label()
