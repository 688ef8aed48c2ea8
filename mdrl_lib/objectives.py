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
"""
from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Sequence

import torch

from mdrl_lib.kit import Kit, Spec, as_spec, check_domain
from mdrl_lib.store import Artifact

PAIRS_FILE = "pairs.jsonl"
SPLITS = ("train", "eval")


@dataclass(frozen=True)
class ObjectiveBatch(Spec):
    """The fixed sample behind a domain objective: ``prompts`` prompts of ``domain``'s ``split``
    (chosen by ``seed``), ``samples`` completions each from ``source`` at ``temperature``, keeping those
    the verifier scores at least ``min_score`` (1.0: verified-correct). Introduced in ``02_shared_routes``."""

    source: Spec
    domain: str
    split: str = "train"
    prompts: int = 64
    samples: int = 4
    seed: int = 0
    temperature: float = 1.0
    min_score: float = 1.0
    kind: ClassVar[str] = "objective"

    def __post_init__(self) -> None:
        from mdrl_lib.config import ConfigError, Param

        object.__setattr__(self, "source", as_spec(self.source))
        object.__setattr__(self, "domain", check_domain(self.domain))
        if self.split not in SPLITS:
            raise ConfigError(f"objective split: unknown value {self.split!r}; valid choices: {', '.join(SPLITS)}")
        Param(int, "", minimum=1, maximum=10**6).check("objective prompts", self.prompts)
        Param(int, "", minimum=1, maximum=1024).check("objective samples", self.samples)
        Param(int, "", minimum=0, maximum=2**31 - 1).check("objective seed", self.seed)
        object.__setattr__(self, "temperature",
                           Param(float, "", above=0.0, maximum=100.0).check("objective temperature", self.temperature))
        object.__setattr__(self, "min_score",
                           Param(float, "", minimum=0.0, maximum=1.0).check("objective min_score", self.min_score))

    def inputs(self) -> tuple[Spec, ...]:
        return (self.source,)

    def key_fields(self, kit: Kit) -> dict:
        return {"source": kit.key(self.source), "domain": self.domain, "split": self.split, "prompts": self.prompts,
                "samples": self.samples, "seed": self.seed, "temperature": self.temperature,
                "min_score": self.min_score, "max_new_tokens": kit.config.rl.max_completion_length,
                "dtype": str(kit.compute_dtype).removeprefix("torch.")}

    def build(self, kit: Kit, directory: Path, progress: bool) -> dict:
        from mdrl_lib.evaluation import generate

        examples = list(getattr(kit.splits(self.domain), self.split))
        if self.prompts > len(examples):
            from mdrl_lib.config import ConfigError

            raise ConfigError(f"objective prompts: {self.prompts} asked, but {self.domain}'s {self.split} split has "
                              f"{len(examples)}; ask for at most {len(examples)}")
        chosen = random.Random(f"objective:{self.seed}:{self.domain}:{self.split}").sample(examples, self.prompts)
        model, tokenizer = kit.load(self.source)
        completions = generate(model, tokenizer, [e.prompt for e in chosen],
                               max_new_tokens=kit.config.rl.max_completion_length, num_samples=self.samples,
                               temperature=self.temperature, seed=self.seed,
                               batch_size=kit.config.compute.eval_batch_size or None)
        specs = [e.spec for e in chosen for _ in range(self.samples)]
        prompts = [e.prompt for e in chosen for _ in range(self.samples)]
        scores = kit.domain(self.domain).score(completions, specs)
        kept = [{"prompt": p, "completion": c, "score": s}
                for p, c, s in zip(prompts, completions, scores) if s >= self.min_score]
        if not kept:
            raise ValueError(f"no completion of {self.source.label()} on {self.domain} scored >= {self.min_score} "
                             f"({len(completions)} sampled); the objective needs some: sample more (prompts, "
                             f"samples) or lower min_score")
        with open(directory / PAIRS_FILE, "w") as handle:
            for row in kept:
                handle.write(json.dumps(row, sort_keys=True) + "\n")
        return {"sampled": len(completions), "kept": len(kept), "acceptance": round(len(kept) / len(completions), 4)}

    def label(self) -> str:
        return f"L_{self.domain} from samples of {self.source.label()}"


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
    def from_artifact(cls, artifact: Artifact, tokenizer, device: str | torch.device = "cpu") -> "DomainObjective":
        """The objective of a stored :class:`ObjectiveBatch`."""
        rows = [json.loads(line) for line in (artifact.path / PAIRS_FILE).read_text().splitlines()]
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
