"""The Domain interface and the registry of domains by scale and name.

Introduced in notebook ``00_toy_world``. A domain builds disjoint train and eval splits, formats
prompts, and scores completions with a verifier that returns floats in [0, 1]. The same scores are
used as the RL reward (trl's ``reward_funcs`` convention) and as the evaluation score.
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable

DOMAIN_NAMES: tuple[str, ...] = ("code", "math", "qa", "cw")
DOMAIN_TITLES: dict[str, str] = {"code": "Code", "math": "Math", "qa": "QA", "cw": "CW"}
# the domains whose held-out score per item is a fraction (partial credit), not 0/1: their paired tests differ
FRACTIONAL_DOMAINS: dict[str, str] = {"code": "fractional", "cw": "fractional"}
SCALES: tuple[str, ...] = ("toy", "full")


@dataclass(frozen=True)
class Example:
    """One prompt with a reference answer and the verifier's spec (a JSON string)."""

    domain: str
    prompt: str
    answer: str
    spec: str

    @property
    def spec_dict(self) -> dict:
        return json.loads(self.spec)


@dataclass(frozen=True)
class Splits:
    """Disjoint examples of one domain: RL ``train`` prompts, held-out ``eval`` prompts, and a
    ``warmup`` pool for supervised warm-up (the toy base's "pretraining"; empty at full scale), and
    ``unused`` examples that no split asks (toy QA: the facts of a partly asked creature)."""

    train: list[Example]
    eval: list[Example]
    warmup: list[Example] = field(default_factory=list)
    unused: list[Example] = field(default_factory=list)


class Domain(ABC):
    """One verifiable domain: data, prompt format and verifier."""

    name: str = ""
    title: str = ""
    default_sizes: tuple[int, int] = (0, 0)  # (train, eval) used when the config asks for 0

    def world_settings(self) -> dict:
        """The toy-world knobs of this domain that change the warmed-up base (e.g. Math's share of
        boxed warm-up answers), read when the base's cache key is made; empty by default."""
        return {}

    def warmup_pairs(self, splits: Splits) -> list[tuple[str, str]]:
        """(prompt, target) pairs for supervised warm-up: by default the warm-up pool's answers."""
        return [(e.prompt, e.answer) for e in splits.warmup]

    @abstractmethod
    def build_splits(self, seed: int, train_size: int, eval_size: int) -> Splits:
        """Disjoint train and eval splits, byte-identical for the same arguments."""

    @abstractmethod
    def score_one(self, completion: str, spec: dict) -> float:
        """The verifier: a score in [0, 1] for one completion (decoded, no special tokens)."""

    def score(self, completions: list[str], specs: list[str]) -> list[float]:
        """Scores for a batch of completions; ``specs`` are the examples' JSON spec strings."""
        if len(completions) != len(specs):
            raise ValueError(f"{len(completions)} completions but {len(specs)} specs")
        return [float(self.score_one(c, json.loads(s))) for c, s in zip(completions, specs)]

    def details(self, completions: list[str], specs: list[str]) -> list[dict]:
        """What the verifier read in each completion (per-item results, introduced in
        ``04_sequential_rl``): a JSON-ready dict per completion; by default nothing beyond the score."""
        if len(completions) != len(specs):
            raise ValueError(f"{len(completions)} completions but {len(specs)} specs")
        return [{} for _ in completions]

    def reward_function(self) -> Callable[..., list[float]]:
        """A reward function with trl's calling convention, named ``<domain>_reward``.

        trl calls it as ``f(prompts=, completions=, completion_ids=, spec=[...], **columns)``.
        """

        def reward(prompts=None, completions=None, spec=None, **_columns) -> list[float]:
            texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
            return self.score(texts, list(spec))

        reward.__name__ = f"{self.name}_reward"
        return reward

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


_REGISTRY: dict[tuple[str, str], Callable[..., Domain]] = {}


def register(scale: str, name: str) -> Callable[[type], type]:
    """Class decorator that registers a domain factory under ``(scale, name)``."""

    def wrap(cls: type) -> type:
        _REGISTRY[(scale, name)] = cls
        return cls

    return wrap


def get_domain(name: str, scale: str = "toy", **options) -> Domain:
    """The domain ``name`` at ``scale``; a clear error names the valid choices."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; valid scales: {', '.join(SCALES)}")
    if name not in DOMAIN_NAMES:
        raise ValueError(f"unknown domain {name!r}; valid domains: {', '.join(DOMAIN_NAMES)}")
    _import_domain_modules()
    try:
        factory = _REGISTRY[(scale, name)]
    except KeyError:
        raise ValueError(f"domain {name!r} has no {scale} implementation") from None
    return factory(**options)


def _import_domain_modules() -> None:
    from mdrl_lib.domains import code, math, qa, sources, writing  # noqa: F401  (registers)
