"""Each domain's differentiable objective L_A, on fixed, seeded batches.

Introduced in notebook ``02_shared_routes`` (gradients) and used by ``03_perturbation_theory``
(Hessian-vector products) and ``05_refresh_vs_rollback`` (rollback scores).

**The choice.** The RL reward is not differentiable, so the theory needs a stand-in for "domain A's
loss". The kit takes L_A(theta) = the mean, over verified-correct completions y of prompts x sampled
from a fixed checkpoint theta_src (by default A's own trained weights theta_A*), of
-log p_theta(y, eos | x), summed over the completion's tokens. Why this one:

- It estimates -log P_theta(correct) up to a constant: for samples of theta_src filtered by the
  verifier, E[grad log p_theta(y|x) | correct] = grad log P_theta(correct | x) at theta = theta_src. So
  its gradient at theta_src is the RL objective's gradient direction, and where RL has converged (theta_A*
  is a local optimum of A's expected reward) the gradient is small: the objective is nearly stationary
  at theta_A*, as the perturbation theory assumes. The notebooks measure how nearly.
- It is a sum of ordinary token log-likelihoods, so gradients and Hessian-vector products are exact
  and cheap, and fixed samples make them reproducible.

**Batches.** Examples are grouped by total length, so no batch is padded: a left-padded batch with an
attention mask gave Hessian-vector products far from finite differences on CPU, while unpadded ones
agreed. Double backward also needs the eager attention implementation (``Kit.load(...,
placement="analysis")`` sets it).

The batch's spec, :class:`~mdrl_lib.specs.ObjectiveBatch`, lives with the other specs in
:mod:`mdrl_lib.specs` (re-exported here); ``kit.open(batch)`` gives its :class:`DomainObjective`.
"""
from __future__ import annotations

import json
from collections import defaultdict
from typing import Sequence

import torch

from pathlib import Path


class DomainObjective:
    """L(theta) = mean over the fixed (prompt, completion) pairs of -log p_theta(completion, eos | prompt).

    ``loss(model)`` returns a scalar tensor with its graph (differentiate it once for the gradient, twice
    for Hessian-vector products); ``per_example(model)`` the (N,) vector of each pair's NLL in the
    pairs' order. Batches hold examples of one total length only (no padding), at most ``max_rows``.
    """

    def __init__(self, pairs: Sequence[tuple[str, str]], tokenizer, device: str | torch.device = "cpu",
                 max_rows: int = 256) -> None:
        from mdrl_lib.training import encode_pairs

        if not pairs:
            raise ValueError("a domain objective needs at least one (prompt, completion) pair")
        self.pairs = [(str(p), str(c)) for p, c in pairs]
        self.device = torch.device(device)
        encoded = encode_pairs(tokenizer, self.pairs)
        by_length: dict[int, list[int]] = defaultdict(list)
        for index, (prompt, answer) in enumerate(encoded):
            by_length[len(prompt) + len(answer)].append(index)
        self.batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        for length in sorted(by_length):
            indices = by_length[length]
            for start in range(0, len(indices), max_rows):
                rows = indices[start:start + max_rows]
                ids = torch.tensor([encoded[i][0] + encoded[i][1] for i in rows])
                # target position t predicts token t + 1; completion tokens are the targets after the prompt
                mask = torch.zeros((len(rows), length - 1), dtype=torch.bool)
                for r, i in enumerate(rows):
                    mask[r, len(encoded[i][0]) - 1:] = True
                self.batches.append((torch.tensor(rows), ids.to(self.device), mask.to(self.device)))

    @classmethod
    def from_file(cls, path: Path, tokenizer, device: str | torch.device = "cpu") -> "DomainObjective":
        """The objective of the pairs in a JSON-lines file (one ``{"prompt", "completion", ...}`` per line), as a
        stored :class:`~mdrl_lib.specs.ObjectiveBatch` holds them."""
        rows = [json.loads(line) for line in Path(path).read_text().splitlines()]
        return cls([(r["prompt"], r["completion"]) for r in rows], tokenizer, device=device)

    def __len__(self) -> int:
        return len(self.pairs)

    def per_example(self, model: torch.nn.Module) -> torch.Tensor:
        """Each pair's summed completion NLL, shape (N,), with its graph."""
        out = [None] * len(self.pairs)
        for rows, ids, mask in self.batches:
            per_row = (_token_nll(model, ids) * mask).sum(dim=1)
            for r, index in enumerate(rows.tolist()):
                out[index] = per_row[r]
        return torch.stack(out)

    def loss(self, model: torch.nn.Module) -> torch.Tensor:
        """The objective's value: the mean of :meth:`per_example`, a scalar with its graph."""
        total = None
        for _, ids, mask in self.batches:
            part = (_token_nll(model, ids) * mask).sum()
            total = part if total is None else total + part
        return total / len(self.pairs)

    def gradient(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The gradient of :meth:`loss` for every trainable parameter, by name (tied weights once)."""
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        grads = torch.autograd.grad(self.loss(model), list(params.values()), allow_unused=True)
        return {n: (g if g is not None else torch.zeros_like(p)) for (n, p), g in zip(params.items(), grads)}


def _token_nll(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """-log p(token t+1 | tokens <= t), shape (B, T-1); computed in at least fp32 (bf16 logits are cast up)."""
    logits = model(input_ids=ids).logits[:, :-1]
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return -torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
