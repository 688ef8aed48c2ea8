"""Scoring (mdrl_lib.evaluation): standard errors, batched generation, per-domain tables, the share of
mixed GRPO groups and the stage x domain matrix, checked by hand on fake domains."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from mdrl_lib.config import ModelConfig
from mdrl_lib.domains.base import Domain, Example, Splits
from mdrl_lib.domains.toy import spec
from mdrl_lib.evaluation import generate, mixed_group_share, score_domain, score_domains, stage_matrix, standard_error
from mdrl_lib.models import build_toy_model

TINY = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
PROMPTS = ["m:1+2=", "q:bax age?=", "w:bg12=", "c:17,3=", "m:29-29="]
NEW = 6




@pytest.fixture(scope="module")
def model(tokenizer):
    """A tiny model with large random weights, so that different prompts get different greedy
    completions (at the default initialisation every prompt decodes to the same token)."""
    model = build_toy_model(TINY, tokenizer, seed=0)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    model.eval()
    return model


class ScriptedDomain(Domain):
    """A fake domain whose score is read from the spec (``{"value": x}``), whatever the completion."""

    name, title = "scripted", "Scripted"

    def __init__(self):
        self.calls: list[tuple[list[str], list[str]]] = []

    def build_splits(self, seed, train_size, eval_size):
        return Splits([], [])

    def score(self, completions, specs):
        self.calls.append((list(completions), list(specs)))
        return super().score(completions, specs)

    def score_one(self, completion, spec):
        return spec["value"]


class SequenceDomain(Domain):
    """A fake domain that hands out a fixed list of rewards, in order, and records what it was asked."""

    name, title = "sequence", "Sequence"

    def __init__(self, rewards):
        self.rewards = list(rewards)
        self.calls: list[tuple[list[str], list[str]]] = []

    def build_splits(self, seed, train_size, eval_size):
        return Splits([], [])

    def score(self, completions, specs):
        self.calls.append((list(completions), list(specs)))
        assert len(completions) == len(self.rewards)
        return list(self.rewards)

    def score_one(self, completion, spec):
        raise AssertionError("score is overridden")


class StartsWithDomain(Domain):
    """A fake domain that rewards completions starting with the spec's prefix."""

    name, title = "starts", "Starts"

    def build_splits(self, seed, train_size, eval_size):
        return Splits([], [])

    def score_one(self, completion, spec):
        return float(completion.startswith(spec["prefix"]))


def examples(specs: list[str], prompts=PROMPTS) -> list[Example]:
    return [Example("fake", prompts[i % len(prompts)], "", s) for i, s in enumerate(specs)]


# ----------------------------------------------------------------------------- standard error


def test_standard_error_by_hand():
    assert standard_error([]) == 0.0
    assert standard_error([0.7]) == 0.0
    assert standard_error([1.0, 0.0]) == pytest.approx(0.5)                 # sqrt(0.5 / 1 / 2)
    assert standard_error([1.0, 0.0, 0.5, 0.5]) == pytest.approx(math.sqrt(1 / 24))
    assert standard_error([2, 4, 4, 4, 5, 5, 7, 9]) == pytest.approx(math.sqrt(32 / 7 / 8))
    assert standard_error([0.3] * 10) == pytest.approx(0.0)
    assert standard_error([1, 0] * 50) == pytest.approx(math.sqrt(0.25 * 100 / 99 / 100))


# ----------------------------------------------------------------------------- generation


def test_greedy_generation_gives_one_string_per_prompt_and_is_deterministic(model, tokenizer):
    first = generate(model, tokenizer, PROMPTS, max_new_tokens=NEW)
    assert len(first) == len(PROMPTS) and all(isinstance(t, str) for t in first)
    assert all(len(t) <= NEW for t in first)
    assert first == generate(model, tokenizer, PROMPTS, max_new_tokens=NEW)
    assert len(set(first)) > 1  # the completions depend on the prompt


def test_greedy_generation_does_not_depend_on_batching_or_padding(model, tokenizer):
    batched = generate(model, tokenizer, PROMPTS, max_new_tokens=NEW)
    assert generate(model, tokenizer, PROMPTS, max_new_tokens=NEW, batch_size=2) == batched
    assert [generate(model, tokenizer, [p], max_new_tokens=NEW)[0] for p in PROMPTS] == batched


def test_generation_restores_the_training_mode(model, tokenizer):
    model.train()
    try:
        generate(model, tokenizer, PROMPTS[:2], max_new_tokens=2)
        assert model.training
    finally:
        model.eval()
    generate(model, tokenizer, PROMPTS[:2], max_new_tokens=2)
    assert not model.training


def test_sampling_returns_n_times_k_in_prompt_major_order(model, tokenizer):
    greedy = generate(model, tokenizer, PROMPTS, max_new_tokens=NEW)
    # A tiny temperature makes sampling pick the greedy token, so each prompt's k samples are its
    # greedy completion, and the order shows which prompt each sample belongs to.
    cold = generate(model, tokenizer, PROMPTS, max_new_tokens=NEW, num_samples=3, temperature=1e-4)
    assert len(cold) == 3 * len(PROMPTS)
    assert cold == [g for g in greedy for _ in range(3)]


def test_sampling_is_seeded(model, tokenizer):
    draw = lambda seed: generate(model, tokenizer, PROMPTS, max_new_tokens=NEW, num_samples=4, temperature=1.0,
                                 seed=seed)
    first = draw(0)
    assert len(first) == 4 * len(PROMPTS)
    assert draw(0) == first
    assert draw(1) != first


def test_greedy_generation_with_num_samples_repeats_each_completion(model, tokenizer):
    # temperature 0 is greedy; asking for k samples must still give n * k strings, prompt-major.
    greedy = generate(model, tokenizer, PROMPTS, max_new_tokens=NEW)
    repeated = generate(model, tokenizer, PROMPTS, max_new_tokens=NEW, num_samples=2)
    assert repeated == [g for g in greedy for _ in range(2)]


# ----------------------------------------------------------------------------- per-domain scores


def test_score_domain_passes_greedy_completions_and_specs(model, tokenizer):
    domain = ScriptedDomain()
    specs = [spec(value=v) for v in (1.0, 0.0, 0.5)]
    scores = score_domain(model, tokenizer, domain, examples(specs), max_new_tokens=NEW)
    assert scores == [1.0, 0.0, 0.5]
    completions, passed_specs = domain.calls[0]
    assert completions == generate(model, tokenizer, PROMPTS[:3], max_new_tokens=NEW)
    assert passed_specs == specs


def test_score_domains_table_by_hand(model, tokenizer):
    a, b = ScriptedDomain(), ScriptedDomain()
    evals = {
        "alpha": (a, examples([spec(value=v) for v in (1.0, 0.0, 0.5, 0.5)])),
        "beta": (b, examples([spec(value=0.2), spec(value=0.2)])),
        "gamma": (StartsWithDomain(), examples([spec(prefix="")] * 3)),
    }
    table = score_domains(model, tokenizer, evals, max_new_tokens=NEW)
    assert isinstance(table, pd.DataFrame)
    assert list(table.columns) == ["domain", "n", "score", "se"]
    assert table["domain"].tolist() == ["alpha", "beta", "gamma"]
    assert table["n"].tolist() == [4, 2, 3]
    assert table["score"].tolist() == pytest.approx([0.5, 0.2, 1.0])
    assert table["se"].tolist() == pytest.approx([math.sqrt(1 / 24), 0.0, 0.0])


# ----------------------------------------------------------------------------- mixed groups


def test_mixed_group_share_by_hand(model, tokenizer):
    # 3 prompts x 4 samples: a mixed group with a right answer, an all-wrong group, and an all-right group
    rewards = [1, 0, 0, 0,
               0, 0, 0, 0,
               1, 1, 1, 1]
    domain = SequenceDomain([float(r) for r in rewards])
    specs = [spec(id=i) for i in range(3)]
    share = mixed_group_share(model, tokenizer, domain, examples(specs), num_generations=4, max_new_tokens=NEW,
                              seed=0)
    assert share == pytest.approx({"mixed": 1 / 3, "any_right": 2 / 3, "mean_reward": 5 / 12})
    completions, passed_specs = domain.calls[0]
    assert len(completions) == 12
    assert passed_specs == [s for s in specs for _ in range(4)]  # prompt-major, like the completions
    assert completions == generate(model, tokenizer, PROMPTS[:3], max_new_tokens=NEW, num_samples=4,
                                   temperature=1.0, seed=0)


def test_mixed_group_share_partial_rewards_are_mixed_but_not_right(model, tokenizer):
    rewards = [0.5, 0.5, 0.5,
               0.5, 0.0, 0.5]
    domain = SequenceDomain(rewards)
    share = mixed_group_share(model, tokenizer, domain, examples([spec(id=0), spec(id=1)]), num_generations=3,
                              max_new_tokens=NEW)
    assert share == pytest.approx({"mixed": 0.5, "any_right": 0.0, "mean_reward": 2.5 / 6})


def test_mixed_group_share_agrees_with_the_samples(model, tokenizer):
    samples = generate(model, tokenizer, PROMPTS, max_new_tokens=NEW, num_samples=4, temperature=1.0, seed=3)
    prefixes = [samples[4 * i][:1] for i in range(len(PROMPTS))]  # each prompt's first sample is right
    specs = [spec(prefix=p) for p in prefixes]
    groups = [[float(s.startswith(p)) for s in samples[4 * i:4 * i + 4]] for i, p in enumerate(prefixes)]
    share = mixed_group_share(model, tokenizer, StartsWithDomain(), examples(specs), num_generations=4,
                              max_new_tokens=NEW, temperature=1.0, seed=3)
    assert share["any_right"] == 1.0
    assert share["mixed"] == pytest.approx(sum(max(g) > min(g) for g in groups) / len(groups))
    assert share["mean_reward"] == pytest.approx(sum(map(sum, groups)) / 20)


# ----------------------------------------------------------------------------- stage x domain matrix


def frame(scores: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame([{"domain": d, "n": 10, "score": s, "se": 0.01} for d, s in scores.items()])


def test_stage_matrix_layout():
    table = stage_matrix({
        "base": frame({"code": 0.4, "math": 0.5, "qa": 0.6, "cw": 0.7}),
        "code": frame({"code": 0.9, "math": 0.45, "qa": 0.55, "cw": 0.65}),
        "math": frame({"code": 0.8, "math": 0.95, "qa": 0.5, "cw": 0.6}),
    })
    assert table.index.tolist() == ["base", "code", "math"]
    assert table.columns.tolist() == ["code", "math", "qa", "cw"]
    assert (table.index.name, table.columns.name) == ("stage", "domain")
    assert table.shape == (3, 4)
    assert table.loc["code", "code"] == 0.9 and table.loc["code", "cw"] == 0.65
    assert table.loc["math", "math"] == 0.95 and table.loc["base", "qa"] == 0.6


def test_stage_matrix_aligns_by_domain_and_keeps_the_first_tables_domain_order():
    table = stage_matrix({
        "base": frame({"code": 0.4, "math": 0.5, "qa": 0.6, "cw": 0.7}),
        "code": frame({"cw": 0.65, "qa": 0.55, "math": 0.45, "code": 0.9}),  # rows in another order
    })
    assert table.loc["code", "code"] == 0.9 and table.loc["code", "cw"] == 0.65  # aligned by name
    assert table.columns.tolist() == ["code", "math", "qa", "cw"]  # not re-sorted alphabetically


def test_stage_matrix_of_score_domains_tables(model, tokenizer):
    evals = {"alpha": (ScriptedDomain(), examples([spec(value=1.0), spec(value=0.0)])),
             "beta": (ScriptedDomain(), examples([spec(value=0.25)]))}
    table = score_domains(model, tokenizer, evals, max_new_tokens=2)
    matrix = stage_matrix({"base": table, "after": table})
    assert matrix.to_dict(orient="index") == {"base": {"alpha": 0.5, "beta": 0.25},
                                              "after": {"alpha": 0.5, "beta": 0.25}}


def test_score_items_keeps_every_item_and_summarizes_to_score_domains(model, tokenizer):
    from mdrl_lib.domains.base import get_domain
    from mdrl_lib.evaluation import score_items, summarize_items

    math_domain = get_domain("math")
    examples = math_domain.build_splits(0, 10, 12).eval
    evals = {"math": (math_domain, examples), "cw": (get_domain("cw"), get_domain("cw").build_splits(0, 10, 5).eval)}
    items = score_items(model, tokenizer, evals, max_new_tokens=NEW)
    assert list(items["domain"]) == ["math"] * 12 + ["cw"] * 5 and list(items["item"][:12]) == list(range(12))
    assert list(items["prompt"][:12]) == [e.prompt for e in examples]
    assert set(items["details"][0]) == {"number", "right_number", "boxed", "trailing"}
    assert set(items["details"][12]) == {"form", "lexicon", "letters", "ascending", "length"}
    pd.testing.assert_frame_equal(summarize_items(items), score_domains(model, tokenizer, evals, max_new_tokens=NEW))


class OutOfMemoryAbove:
    """Wraps a model: generation raises CUDA's out-of-memory error for batches larger than ``limit``."""

    def __init__(self, model, limit: int) -> None:
        self.model, self.limit, self.batches = model, limit, []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def generate(self, **kwargs):
        rows = kwargs["input_ids"].shape[0]
        self.batches.append(rows)
        if rows > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.model.generate(**kwargs)


def test_a_batch_that_runs_out_of_memory_is_halved_and_the_results_do_not_change(model, tokenizer):
    from mdrl_lib.evaluation import auto_batch_size

    prompts = PROMPTS * 3
    reference = generate(model, tokenizer, prompts, max_new_tokens=NEW, batch_size=len(prompts))
    wrapped = OutOfMemoryAbove(model, limit=4)
    assert generate(wrapped, tokenizer, prompts, max_new_tokens=NEW, batch_size=16) == reference
    assert wrapped.batches[:3] == [15, 8, 4] and max(wrapped.batches[3:]) <= 4
    assert auto_batch_size(model, 64) == 256  # on a CPU

    class Broken(OutOfMemoryAbove):
        def generate(self, **kwargs):
            raise RuntimeError("something else")

    with pytest.raises(RuntimeError, match="something else"):
        generate(Broken(model, 1), tokenizer, prompts, max_new_tokens=NEW)


def test_convention_shares_count_answers_in_the_rejected_convention():
    import pandas as pd

    from mdrl_lib.domains.base import get_domain
    from mdrl_lib.evaluation import convention_shares

    def rows(name, completions, spec):
        domain = get_domain(name)
        details = domain.details(completions, [spec] * len(completions))
        return [{"domain": name, "item": i, "score": 0.0, "details": d} for i, d in enumerate(details)]

    import json
    items = pd.DataFrame(
        rows("math", ["(19)", "19", "18", "(7)", "x"], json.dumps({"answer": "19"}))
        + rows("qa", ["17 years", "17", "3", "no"], json.dumps({"answer": "17 years", "number": "17"}))
        + rows("cw", ["2 bat 17 gem", "17 bat 2 gem", "bat gem"], json.dumps({"letters": "bg", "length": 12})))
    table = convention_shares(items)
    assert table.loc["math", "answers"] == 4 and table.loc["math", "share in the other"] == 0.5  # 2 boxed of 4
    assert table.loc["qa", "answers"] == 3 and abs(table.loc["qa", "share in the other"] - 2 / 3) < 1e-12
    assert table.loc["cw", "answers"] == 2 and table.loc["cw", "share in the other"] == 0.5
    assert list(table.index) == ["math", "qa", "cw"]
