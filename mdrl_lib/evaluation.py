"""Scoring: greedy batched generation, per-item results, per-domain scores with standard errors, the
stage x domain matrix, and the share of prompts whose sampled groups give GRPO a signal.

Introduced in notebook ``00_toy_world`` (base scores); per-item results and the matrix in
``04_sequential_rl``. Generation runs wherever the model is (``model.device``); a batch that does not
fit on a GPU is halved and retried.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import pandas as pd
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from mdrl_lib.domains.base import Domain, Example, domain_conventions


CPU_BATCH_SIZE = 256


def auto_batch_size(model: PreTrainedModel, tokens_per_sequence: int, share: float = 0.5) -> int:
    """Prompts per generation batch: 256 on a CPU; on a GPU as many sequences as ``share`` of the free
    memory holds in key-value cache (2 x layers x kv heads x head dim x bytes per sequence token), at
    least 1 and at most 1,024. Introduced in ``00_toy_world`` (full scale)."""
    device = next(model.parameters()).device
    if device.type != "cuda":
        return CPU_BATCH_SIZE
    config = model.config
    config = getattr(config, "text_config", config)
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    per_token = 2 * config.num_hidden_layers * heads * head_dim * next(model.parameters()).element_size()
    free, _ = torch.cuda.mem_get_info(device)
    return int(max(1, min(1024, share * free // max(1, per_token * tokens_per_sequence))))


def _is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()


@torch.no_grad()
def generate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], *,
             max_new_tokens: int, batch_size: int | None = None, num_samples: int = 1, temperature: float = 0.0,
             seed: int = 0) -> list[str]:
    """Completions for ``prompts`` (decoded without special tokens), ``num_samples`` per prompt in
    prompt-major order. ``temperature`` 0 is greedy; otherwise sampling seeded by ``seed``.

    ``batch_size`` None sizes batches to the device (:func:`auto_batch_size`); a batch that runs out of
    memory is halved and retried, so the results do not depend on the device's size (greedy decoding
    does not depend on batching: a test checks it).
    """
    was_training = model.training
    model.eval()
    sample = temperature > 0
    if sample:
        torch.manual_seed(seed)
    if batch_size is None:
        longest = max((len(p) for p in prompts), default=1)  # characters bound tokens from above
        batch_size = auto_batch_size(model, min(longest, 4096) + max_new_tokens)
    texts: list[str] = []
    start = 0
    while start < len(prompts):
        chunk = list(prompts[start:start + batch_size])
        try:
            texts += _generate_batch(model, tokenizer, chunk, max_new_tokens, sample, temperature, num_samples)
        except (RuntimeError, torch.cuda.OutOfMemoryError) as error:
            if not _is_out_of_memory(error) or batch_size == 1:
                raise
            batch_size //= 2
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        start += len(chunk)
    model.train(was_training)
    return texts


def _generate_batch(model, tokenizer, prompts: list[str], max_new_tokens: int, sample: bool, temperature: float,
                    num_samples: int) -> list[str]:
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
    output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=sample,
                            temperature=temperature if sample else None, top_p=None, top_k=None,
                            num_return_sequences=num_samples if sample else 1,
                            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    decoded = tokenizer.batch_decode(output[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    # Greedy decoding gives one answer per prompt; its "samples" are that answer repeated.
    return decoded if sample else [t for t in decoded for _ in range(num_samples)]


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


def score_items(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                evals: Mapping[str, tuple[Domain, Sequence[Example]]], *, max_new_tokens: int,
                batch_size: int | None = None) -> pd.DataFrame:
    """Per-item results of greedy generation on each domain's examples, one row per item: ``domain``,
    ``item`` (its index in the domain's list), ``prompt``, ``completion``, ``score`` and ``details`` (a
    dict of what the verifier parsed, :meth:`Domain.details`). Introduced in ``04_sequential_rl``:
    two checkpoints' rows pair item by item."""
    rows = []
    for name, (domain, examples) in evals.items():
        if not examples:
            raise ValueError(f"no eval examples for domain {name!r}")
        prompts, specs = [e.prompt for e in examples], [e.spec for e in examples]
        completions = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
        scores = domain.score(completions, specs)
        details = domain.details(completions, specs)
        rows += [{"domain": name, "item": i, "prompt": p, "completion": c, "score": float(s), "details": d}
                 for i, (p, c, s, d) in enumerate(zip(prompts, completions, scores, details))]
    return pd.DataFrame(rows, columns=["domain", "item", "prompt", "completion", "score", "details"])


def summarize_items(items: pd.DataFrame) -> pd.DataFrame:
    """One row per domain (in the items' order): ``domain``, ``n``, mean ``score`` and its standard
    error ``se``, from a :func:`score_items` table."""
    rows = []
    for name, group in items.groupby("domain", sort=False):
        scores = group["score"].tolist()
        rows.append({"domain": name, "n": len(scores), "score": sum(scores) / len(scores),
                     "se": standard_error(scores)})
    return pd.DataFrame(rows, columns=["domain", "n", "score", "se"])


def score_domains(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                  evals: Mapping[str, tuple[Domain, Sequence[Example]]], *, max_new_tokens: int,
                  batch_size: int | None = None) -> pd.DataFrame:
    """One row per domain: ``domain``, ``n``, mean ``score`` and its standard error ``se``."""
    return summarize_items(score_items(model, tokenizer, evals, max_new_tokens=max_new_tokens,
                                       batch_size=batch_size))


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


def convention_shares(items: pd.DataFrame) -> pd.DataFrame:
    """How often a checkpoint answers in the convention its verifier rejects, per toy domain with two
    (:meth:`Domain.convention`).

    Introduced in ``00_toy_world``. ``items``: per-item results (:meth:`Kit.item_results`). Rows Math,
    QA and CW; columns: the convention the verifier wants, the other one the warm-up also writes, the
    warm-up's share of the other (the world's setting), ``answers`` (items that give an answer in either
    convention: Math and QA a leading number, CW a verse in form) and ``share in the other`` (boxed Math
    numbers; QA numbers without their unit; CW verses whose numbers do not ascend), among those answers.
    """
    rows = []
    for name, c in domain_conventions().items():
        details = [d for d in items.loc[items["domain"] == name, "details"] if c.answered(d)]
        rows.append({"domain": name, "the verifier wants": c.wanted, "the other convention": c.other,
                     "warm-up share of the other": c.warmup_share, "answers": len(details),
                     "share in the other": sum(map(c.in_other, details)) / len(details) if details else float("nan")})
    return pd.DataFrame(rows).set_index("domain")
