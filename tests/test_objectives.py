"""Domain objectives (mdrl_lib.objectives): the value by hand, the gradient against finite
differences, unpadded length-grouped batches, and reproducible samples."""
from __future__ import annotations

import math

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from mdrl_lib.config import ConfigError, RunConfig
from mdrl_lib.kit import Kit
from mdrl_lib.objectives import DomainObjective
from mdrl_lib.specs import PAIRS_FILE, Base, ObjectiveBatch

PAIRS = [("m:1+2=", "3"), ("m:10+2=", "12"), ("q:bax age?=", "17 years"), ("m:3+4=", "7"), ("w:bg12=", "2 bat 17 gem")]


def tiny_model(tokenizer, dtype=torch.float64, seed=0) -> Qwen2ForCausalLM:
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.set_attn_implementation("eager")
    return model.to(dtype).eval()


def test_a_zero_model_gives_log_vocabulary_per_completion_token(tokenizer):
    """All-zero weights give uniform next-token probabilities: each pair costs (len(answer) + 1) * log V."""
    model = tiny_model(tokenizer)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    objective = DomainObjective(PAIRS, tokenizer)
    expected = [(len(answer) + 1) * math.log(len(tokenizer)) for _, answer in PAIRS]  # +1: the eos
    assert torch.allclose(objective.per_example(model), torch.tensor(expected, dtype=torch.float64), rtol=1e-9)
    assert float(objective.loss(model).detach()) == pytest.approx(sum(expected) / len(expected), rel=1e-6)


def test_batches_are_unpadded_and_grouped_by_length(tokenizer):
    objective = DomainObjective(PAIRS, tokenizer, max_rows=1)
    lengths = [ids.shape[1] for _, ids, _ in objective.batches]
    assert lengths == sorted(lengths) and len(objective.batches) == len(PAIRS)  # max_rows 1: one pair a batch
    grouped = DomainObjective(PAIRS, tokenizer)
    assert all(tokenizer.pad_token_id not in ids for _, ids, _ in grouped.batches)
    assert sorted(i for rows, _, _ in grouped.batches for i in rows.tolist()) == list(range(len(PAIRS)))
    assert {ids.shape[1] for _, ids, _ in grouped.batches} == {len(p) + 1 + len(a) + 1 for p, a in PAIRS}


def test_loss_is_the_mean_of_the_per_example_values(tokenizer):
    model = tiny_model(tokenizer)
    objective = DomainObjective(PAIRS, tokenizer, max_rows=2)
    assert torch.allclose(objective.loss(model), objective.per_example(model).mean())


def test_gradient_matches_central_finite_differences(tokenizer):
    model = tiny_model(tokenizer)
    objective = DomainObjective(PAIRS, tokenizer)
    grads = objective.gradient(model)
    params = dict(model.named_parameters())
    generator = torch.Generator().manual_seed(1)
    direction = {n: torch.randn(p.shape, generator=generator, dtype=p.dtype) for n, p in params.items()}
    directional = sum(float((grads[n] * direction[n]).sum()) for n in params)
    def loss_at(step: float) -> float:
        with torch.no_grad():
            for n, p in params.items():
                p.add_(step * direction[n])
            value = float(objective.loss(model))
            for n, p in params.items():
                p.sub_(step * direction[n])
        return value

    def error(eps: float) -> float:
        return abs((loss_at(eps) - loss_at(-eps)) / (2 * eps) - directional) / abs(directional)

    # Central differences err by O(eps^2): 100x less for 10x smaller eps. (Below eps 1e-4 the float32
    # arithmetic inside transformers' RMSNorm and rotary embedding dominates, even in a float64 model.)
    assert error(1e-4) < 1e-4 and error(1e-4) < error(1e-3) / 50


def test_an_empty_objective_is_an_error(tokenizer):
    with pytest.raises(ValueError, match="at least one"):
        DomainObjective([], tokenizer)


@pytest.fixture(scope="module")
def small_kit(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("objective-run")
    return Kit(RunConfig.from_params(run_dir=str(run_dir), warmup_steps=30, data_eval_size=8))


def test_the_same_seed_gives_the_same_batch_and_value(small_kit, tmp_path):
    spec = ObjectiveBatch(Base(), "cw", prompts=6, samples=2, min_score=0.0, seed=4)
    first = small_kit.get(spec, progress=False)
    other = Kit(RunConfig.from_params(run_dir=str(tmp_path), warmup_steps=30, data_eval_size=8))
    second = other.get(spec, progress=False)  # another run directory: built again from scratch
    assert first.key == second.key
    assert (first.path / PAIRS_FILE).read_bytes() == (second.path / PAIRS_FILE).read_bytes()
    model, _ = small_kit.load(Base(), placement="analysis")
    assert float(small_kit.objective(spec).loss(model).detach()) == float(other.objective(spec).loss(model).detach())
    reseeded = small_kit.get(ObjectiveBatch(Base(), "cw", prompts=6, samples=2, min_score=0.0, seed=5), progress=False)
    assert (reseeded.path / PAIRS_FILE).read_bytes() != (first.path / PAIRS_FILE).read_bytes()
    assert first.metrics["kept"] == first.metrics["sampled"] == 12


def test_objective_batches_check_their_fields_before_any_work(small_kit):
    with pytest.raises(ConfigError, match="unknown domain 'bio'"):
        ObjectiveBatch(Base(), "bio")
    with pytest.raises(ConfigError, match="split.*train, eval"):
        ObjectiveBatch(Base(), "math", split="test")
    with pytest.raises(ConfigError, match="objective samples"):
        ObjectiveBatch(Base(), "math", samples=0)
    with pytest.raises(ConfigError, match="at most 8"):
        small_kit.get(ObjectiveBatch(Base(), "math", split="eval", prompts=9), progress=False)
