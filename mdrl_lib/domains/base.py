"""The Domain interface and the registry of domains by scale and name.

Introduced in notebook ``00_toy_world``. A domain builds disjoint train and eval splits, formats
prompts, and scores completions with a verifier that returns floats in [0, 1]. The same scores are
used as the RL reward (trl's ``reward_funcs`` convention) and as the evaluation score.

A domain is one class per scale (its toy world and its full-scale loader), registered with
:func:`register`; the class says everything the kit knows about the domain by name (title, kind of
score, warm-up weight, answer conventions, error categories, the options a run gives it). The tables
below (:data:`DOMAIN_NAMES`, :data:`DOMAIN_TITLES`, :data:`FRACTIONAL_DOMAINS`, and those other modules
make with :func:`registry_table`) are derived from the registry. Importing the package imports
:data:`DOMAIN_MODULES`, so every domain is registered before any table is read.
"""
from __future__ import annotations

import importlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

SCALES: tuple[str, ...] = ("toy", "full")
# The registry: the modules that register the domains, toy domains first in the paper's order
# (code, math, qa, cw), which is the order of DOMAIN_NAMES. A new domain adds its modules here.
DOMAIN_MODULES: tuple[str, ...] = ("code", "math", "qa", "writing", "sources")


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


@dataclass(frozen=True)
class Convention:
    """The two ways a toy domain's warm-up writes its answers, one of which the verifier rejects
    (introduced in ``00_toy_world``; :func:`mdrl_lib.evaluation.convention_shares` counts them).
    ``answered`` and ``in_other`` read an item's details (:meth:`Domain.details`)."""

    wanted: str
    other: str
    warmup_share: float  # of warm-up answers written in the other convention (a world setting)
    answered: Callable[[Mapping], bool]  # the item gives an answer in either convention
    in_other: Callable[[Mapping], bool]  # ... and it is written in the other one


class Domain(ABC):
    """One verifiable domain: data, prompt format and verifier."""

    name: str = ""
    title: str = ""
    default_sizes: tuple[int, int] = (0, 0)  # (train, eval) used when the config asks for 0
    score_kind: str = "binary"  # per-item scores, which pick the paired test: "binary" (0/1) or "fractional"
    warmup_weight: float = 1.0  # toy: the domain's share of the warm-up mixture, relative to the others

    @classmethod
    def run_options(cls, data: Any) -> dict:
        """The constructor options a run's data settings (:class:`mdrl_lib.config.DataConfig`) give this
        domain; none by default."""
        return {}

    @classmethod
    def convention(cls) -> Convention | None:
        """Toy: the answer conventions the warm-up mixes (``00_toy_world``); None when it writes one."""
        return None

    @classmethod
    def error_category(cls, details: Mapping) -> str:
        """Toy: the kind of a wrong answer (below full score) by its details, one of ``right content, wrong
        convention``, ``wrong content``, ``no answer`` (``04_sequential_rl``); by default wrong content."""
        return "wrong content"

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


_REGISTRY: dict[tuple[str, str], type[Domain]] = {}
_TABLES: list[tuple[dict, Callable[[], Mapping]]] = []
# The registered names, in the order their first class registered: complete once the package has loaded,
# when other modules take it; the tables of registry_table also follow later registrations.
DOMAIN_NAMES: tuple[str, ...] = ()


def domain_names() -> tuple[str, ...]:
    """The registered domains' names, in the order their first class registered."""
    return tuple(dict.fromkeys(name for _, name in _REGISTRY))


def domain_class(name: str, scale: str | None = None) -> type[Domain]:
    """The class registered for ``name`` at ``scale`` (by default its toy class, else its full-scale one);
    a clear error names the valid choices."""
    if scale is not None and scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; valid scales: {', '.join(SCALES)}")
    if name not in domain_names():
        raise ValueError(f"unknown domain {name!r}; valid domains: {', '.join(domain_names())}")
    for wanted in (scale,) if scale else SCALES:
        if (wanted, name) in _REGISTRY:
            return _REGISTRY[(wanted, name)]
    raise ValueError(f"domain {name!r} has no {scale} implementation")


def domain_classes(scale: str) -> dict[str, type[Domain]]:
    """Name -> class of every domain registered at ``scale``, in :func:`domain_names` order."""
    return {n: _REGISTRY[(scale, n)] for n in domain_names() if (scale, n) in _REGISTRY}


def domain_conventions() -> dict[str, Convention]:
    """Name -> :class:`Convention` of every toy domain with two (``00_toy_world``), read when called."""
    return {n: c for n, cls in domain_classes("toy").items() if (c := cls.convention()) is not None}


def registry_table(compute: Callable[[], Mapping]) -> dict:
    """A dict that holds ``compute()``'s entries and is refilled in place whenever the registry changes, so
    that a table derived from the domains and imported by name elsewhere sees every registered domain."""
    table: dict = dict(compute())
    _TABLES.append((table, compute))
    return table


def _refresh() -> None:
    global DOMAIN_NAMES
    DOMAIN_NAMES = domain_names()
    for table, compute in _TABLES:
        table.clear()
        table.update(compute())


def register(scale: str, name: str) -> Callable[[type], type]:
    """Class decorator that registers a domain class under ``(scale, name)``."""

    def wrap(cls: type) -> type:
        _REGISTRY[(scale, name)] = cls
        _refresh()
        return cls

    return wrap


def unregister(scale: str, name: str) -> None:
    """Remove the class registered under ``(scale, name)`` (a test's temporary domain)."""
    del _REGISTRY[(scale, name)]
    _refresh()


def load_domains() -> None:
    """Import the modules of :data:`DOMAIN_MODULES`, which register every domain (run by the package)."""
    for module in DOMAIN_MODULES:
        importlib.import_module(f"mdrl_lib.domains.{module}")


def get_domain(name: str, scale: str = "toy", **options) -> Domain:
    """The domain ``name`` at ``scale``; a clear error names the valid choices."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; valid scales: {', '.join(SCALES)}")
    return domain_class(name, scale)(**options)


DOMAIN_TITLES: dict[str, str] = registry_table(lambda: {n: domain_class(n).title for n in domain_names()})
# the domains whose held-out score per item is a fraction (partial credit), not 0/1: their paired tests differ
FRACTIONAL_DOMAINS: dict[str, str] = registry_table(
    lambda: {n: "fractional" for n in domain_names() if domain_class(n).score_kind == "fractional"})
