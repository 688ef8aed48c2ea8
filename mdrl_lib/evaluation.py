"""Scoring: greedy batched generation, per-domain scores with standard errors, the stage x domain
matrix, and the share of prompts whose sampled groups give GRPO a signal.

Introduced in notebook ``00_toy_world`` (base scores); the matrix in ``04_sequential_rl``.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import pandas as pd
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from mdrl_lib.domains.base import Domain, Example


@torch.no_grad()
def generate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], *,
             max_new_tokens: int, batch_size: int = 256, num_samples: int = 1, temperature: float = 0.0,
             seed: int = 0) -> list[str]:
    """Completions for ``prompts`` (decoded without special tokens), ``num_samples`` per prompt in
    prompt-major order. ``temperature`` 0 is greedy; otherwise sampling seeded by ``seed``."""
    was_training = model.training
    model.eval()
    sample = temperature > 0
    if sample:
        torch.manual_seed(seed)
    texts: list[str] = []
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(list(prompts[start:start + batch_size]), return_tensors="pt", padding=True)
        batch = {k: v.to(model.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
        output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=sample,
                                temperature=temperature if sample else None, top_p=None, top_k=None,
                                num_return_sequences=num_samples if sample else 1,
                                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        decoded = tokenizer.batch_decode(output[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        # Greedy decoding gives one answer per prompt; its "samples" are that answer repeated.
        texts += decoded if sample else [t for t in decoded for _ in range(num_samples)]
    model.train(was_training)
    return texts


def standard_error(scores: Sequence[float]) -> float:
    """Standard error of the mean of ``scores`` (0 for fewer than two)."""
    n = len(scores)
    if n < 2:
        return 0.0
    mean = sum(scores) / n
    return math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1) / n)


def score_domain(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, domain: Domain,
                 examples: Sequence[Example], *, max_new_tokens: int) -> list[float]:
    """Greedy per-example scores of one domain."""
    completions = generate(model, tokenizer, [e.prompt for e in examples], max_new_tokens=max_new_tokens)
    return domain.score(completions, [e.spec for e in examples])


def score_domains(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                  evals: Mapping[str, tuple[Domain, Sequence[Example]]], *, max_new_tokens: int) -> pd.DataFrame:
    """One row per domain: ``domain``, ``n``, mean ``score`` and its standard error ``se``."""
    rows = []
    for name, (domain, examples) in evals.items():
        if not examples:
            raise ValueError(f"no eval examples for domain {name!r}")
        scores = score_domain(model, tokenizer, domain, examples, max_new_tokens=max_new_tokens)
        rows.append({"domain": name, "n": len(scores), "score": sum(scores) / len(scores),
                     "se": standard_error(scores)})
    return pd.DataFrame(rows)


def mixed_group_share(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, domain: Domain,
                      examples: Sequence[Example], *, num_generations: int, max_new_tokens: int,
                      temperature: float = 1.0, seed: int = 0) -> dict[str, float]:
    """How often GRPO gets a signal: sample ``num_generations`` completions per prompt and report the
    share of prompts whose rewards are not all equal (``mixed``), that hold a full-score answer
    (``any_right``) and the mean sampled reward (``mean_reward``)."""
    if not examples:
        raise ValueError(f"no examples to sample for domain {domain.name!r}")
    completions = generate(model, tokenizer, [e.prompt for e in examples], max_new_tokens=max_new_tokens,
                           num_samples=num_generations, temperature=temperature, seed=seed)
    specs = [e.spec for e in examples for _ in range(num_generations)]
    rewards = domain.score(completions, specs)
    groups = [rewards[i:i + num_generations] for i in range(0, len(rewards), num_generations)]
    return {
        "mixed": sum(max(g) > min(g) for g in groups) / len(groups),
        "any_right": sum(max(g) == 1.0 for g in groups) / len(groups),
        "mean_reward": sum(rewards) / len(rewards),
    }


def stage_matrix(scores_by_stage: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The stage x domain matrix of scores from per-stage ``score_domains`` tables (stages in order)."""
    columns = {stage: frame.set_index("domain")["score"] for stage, frame in scores_by_stage.items()}
    domains = list(dict.fromkeys(d for column in columns.values() for d in column.index))
    table = pd.DataFrame(columns).T.reindex(columns=domains)
    table.index.name, table.columns.name = "stage", "domain"
    return table
