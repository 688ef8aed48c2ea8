"""Training: the supervised warm-up that makes the toy base (and, in ``04``, GRPO stages).

Introduced in notebook ``00_toy_world`` (warm-up). Training never plots and never evaluates
beyond what a stage needs; analyses read the checkpoints it writes.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

IGNORE = -100


@dataclass(frozen=True)
class WarmupLog:
    """Loss every ``every`` steps and the seconds the warm-up took."""

    losses: list[float]
    every: int
    seconds: float


def encode_pairs(tokenizer: PreTrainedTokenizerBase, pairs: Sequence[tuple[str, str]]
                 ) -> list[tuple[list[int], list[int]]]:
    """Token ids of ``<s> prompt`` and of ``answer </s>`` for each (prompt, answer) pair."""
    prompts = tokenizer([p for p, _ in pairs]).input_ids
    answers = tokenizer([a for _, a in pairs], add_special_tokens=False).input_ids
    return [(p, a + [tokenizer.eos_token_id]) for p, a in zip(prompts, answers)]


def collate(encoded: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (answer tokens only), each (B, T)."""
    length = max(len(p) + len(a) for p, a in encoded)
    ids = torch.full((len(encoded), length), pad_id)
    labels = torch.full((len(encoded), length), IGNORE)
    mask = torch.zeros((len(encoded), length), dtype=torch.long)
    for row, (p, a) in enumerate(encoded):
        n = len(p) + len(a)
        ids[row, :n] = torch.tensor(p + a)
        labels[row, len(p):n] = torch.tensor(a)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def warmup_rate(step: int, steps: int, anneal_steps: int) -> float:
    """Learning-rate multiplier: linear ramp over 20 steps, flat, then linear decay to 0 over the
    last ``anneal_steps``."""
    ramp = min(1.0, (step + 1) / 20)
    if anneal_steps and step >= steps - anneal_steps:
        return ramp * (steps - step) / anneal_steps
    return ramp


def warmup(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
           pairs_by_domain: Mapping[str, Sequence[tuple[str, str]]], *, steps: int, lr: float,
           batch_size: int, seed: int, weights: Mapping[str, float] | None = None,
           anneal_steps: int = 200, log_every: int = 50, progress: bool = True) -> WarmupLog:
    """Supervised next-token training on a seeded mixture of domains (in place).

    Each step draws ``batch_size`` pairs: a domain by ``weights`` (uniform by default), then a pair.
    """
    import time

    names = sorted(pairs_by_domain)
    encoded = {n: encode_pairs(tokenizer, pairs_by_domain[n]) for n in names}
    domain_weights = [float((weights or {}).get(n, 1.0)) for n in names]
    rng = random.Random(f"warmup:{seed}")
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_rate(s, steps, min(anneal_steps, steps)))
    model.train()
    losses, running = [], 0.0
    start = time.perf_counter()
    bar = tqdm(range(steps), desc="warm-up", disable=not progress, leave=False)
    for step in bar:
        chosen = rng.choices(names, weights=domain_weights, k=batch_size)
        batch = collate([rng.choice(encoded[n]) for n in chosen], tokenizer.pad_token_id)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        running += loss.item()
        if (step + 1) % log_every == 0:
            losses.append(running / log_every)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            running = 0.0
    model.eval()
    if not all(math.isfinite(x) for x in losses):
        raise RuntimeError(f"warm-up diverged (losses {losses[-3:]}); lower warmup_lr")
    return WarmupLog(losses, log_every, time.perf_counter() - start)
