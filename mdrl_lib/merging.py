"""Model-merging baselines on full-weight deltas: task arithmetic, TIES and DARE, tensor by tensor.

Introduced for notebook ``06_recovery_methods`` (recovery methods side by side): what the
field already does to combine single-domain experts, beside a refresh and a rollback. Given a base
theta_0 and models theta_1..theta_n built from it (single-domain experts, or a chain's stages), each
model's *task vector* is tau_i = theta_i - theta_0 and the merged model is

    theta = theta_0 + merge(tau_1, ..., tau_n)

A chain's stages are merged by their own steps: each stage's task vector starts from the stage
before it (``references``), tau_i = theta_i - theta_{i-1}, so task arithmetic at weight 1 telescopes to
the chain's end and TIES or DARE on the stage deltas resolve their conflicts instead. The merge is
computed one tensor at a time with the merge utilities peft ships (:mod:`peft.utils.merge_utils`), not
rewritten here:

- ``task_arithmetic``: sum_i w_i tau_i (``weights``: the scaling, one per model);
- ``ties``: each tau_i trimmed to its top ``density`` share of entries by magnitude (per tensor, peft's
  ``k = int(density x entries)``), a sign elected per entry from the trimmed, *unweighted* vectors
  (``majority_sign="total"``: the sign of their sum; ``"frequency"``: the sign of the count of signs;
  a tie counts as +), then per entry the weighted entries that agree with the elected sign are summed
  and divided by *how many agree* (at least 1): with weights 1, the mean of the agreeing entries;
- ``dare_linear``: each tau_i keeps each entry with probability ``density`` (= 1 - drop rate), kept
  entries rescaled by 1/density (unbiased), then summed with ``weights`` as task arithmetic;
- ``dare_ties``: the same random drop and rescale, then TIES's sign election and disjoint mean.

DARE's draws are seeded per tensor from ``seed`` and the tensor's name (:func:`tensor_seed`), so a
merge is deterministic and a tensor's result does not depend on which tensors came before it; the
global torch RNG is left as it was. Merging runs on the CPU in fp32.

:class:`Merge` is the artifact: the merged model's weights, stored as a :class:`~mdrl_lib.specs.GradientSteps`
artifact stores them (``save_model``: config, tokenizer, fp32 safetensors), so ``kit.load``,
``kit.weights``, ``Scores(merge)`` and ``kit.item_results(merge)`` treat it like any model.
:func:`merge_grid` names the kit's sweep (scales, densities, drop rates).
"""
from __future__ import annotations

import hashlib
import itertools
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Sequence

import torch

from mdrl_lib.config import MAX_SEED, ConfigError, Param
from mdrl_lib.specs import Spec, as_spec

if TYPE_CHECKING:
    from mdrl_lib.kit import Kit

MERGE_METHODS: tuple[str, ...] = ("task_arithmetic", "ties", "dare_linear", "dare_ties")
SPARSE_METHODS: tuple[str, ...] = ("ties", "dare_linear", "dare_ties")  # take a density
SIGN_METHODS: tuple[str, ...] = ("ties", "dare_ties")  # elect a majority sign
RANDOM_METHODS: tuple[str, ...] = ("dare_linear", "dare_ties")  # seeded
MAJORITY_SIGNS: tuple[str, ...] = ("total", "frequency")

# The kit's sweep (merge_grid): the same scale for every model in task arithmetic; TIES's share of entries
# kept; DARE's share dropped (density = 1 - drop rate). TIES and DARE use weight 1 per model: TIES's
# disjoint merge already averages the agreeing entries, and dare_linear at weight 1 is, in expectation,
# task arithmetic at scale 1.0 (in the sweep), so its drop-rate sweep shows the effect of dropping alone.
TASK_ARITHMETIC_SCALES: tuple[float, ...] = (0.3, 0.5, 0.7, 1.0)
TIES_DENSITIES: tuple[float, ...] = (0.1, 0.3, 0.5)
DARE_DROP_RATES: tuple[float, ...] = (0.5, 0.7, 0.9)

WEIGHT_LIMIT = 10.0  # |weight| at most this (negative weights subtract a task vector: task negation)
_WEIGHT = Param(float, "", minimum=-WEIGHT_LIMIT, maximum=WEIGHT_LIMIT)
_DENSITY = Param(float, "", above=0.0, maximum=1.0)
_SEED = Param(int, "", minimum=0, maximum=MAX_SEED)


# --------------------------------------------------------------------------------------- the core


def check_merge(method: str, count: int, weights: Sequence[float] | None = None, density: float | None = None,
                majority_sign: str = "total", seed: int = 0) -> tuple[tuple[float, ...], float | None]:
    """Validate one merge's settings for ``count`` models; returns (weights, density) normalized: weights a
    tuple of ``count`` floats (None: 1.0 each), density a float (None for ``task_arithmetic``). Raises a
    :class:`~mdrl_lib.config.ConfigError` naming the valid choices: unknown ``method`` or ``majority_sign``;
    weights not ``count`` finite numbers in [-10, 10]; density outside (0, 1], missing for a sparse method
    or given to ``task_arithmetic``; a seed outside [0, 2^31 - 1], or nonzero for a method that draws nothing;
    a ``majority_sign`` other than the default for a method that elects none. Introduced for notebook 05."""
    if method not in MERGE_METHODS:
        raise ConfigError(f"merge method: unknown value {method!r}; valid choices: {', '.join(MERGE_METHODS)}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"merge models: expected at least one model to merge, got {count!r}")
    if weights is None:
        weights = (1.0,) * count
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence):
        raise ConfigError(f"merge weights: expected a sequence of {count} numbers (one per model) or None, "
                          f"got {weights!r}")
    if len(weights) != count:
        raise ConfigError(f"merge weights: expected {count} numbers (one per model), got {len(weights)}: "
                          f"{tuple(weights)!r}")
    weights = tuple(_WEIGHT.check(f"merge weights[{i}]", w) for i, w in enumerate(weights))
    if method in SPARSE_METHODS:
        if density is None:
            raise ConfigError(f"merge density: the method {method!r} needs a density (the share of entries kept, "
                              f"in (0, 1]; DARE's drop rate is 1 - density)")
        density = _DENSITY.check("merge density", density)
    elif density is not None:
        raise ConfigError(f"merge density: {method!r} keeps every entry; density applies to "
                          f"{', '.join(SPARSE_METHODS)} only (got {density!r})")
    if majority_sign not in MAJORITY_SIGNS:
        raise ConfigError(f"merge majority_sign: unknown value {majority_sign!r}; valid choices: "
                          f"{', '.join(MAJORITY_SIGNS)}")
    if majority_sign != "total" and method not in SIGN_METHODS:
        raise ConfigError(f"merge majority_sign: {method!r} elects no sign; majority_sign applies to "
                          f"{', '.join(SIGN_METHODS)} only (got {majority_sign!r})")
    _SEED.check("merge seed", seed)
    if seed != 0 and method not in RANDOM_METHODS:
        raise ConfigError(f"merge seed: {method!r} draws nothing; seed applies to {', '.join(RANDOM_METHODS)} "
                          f"only (got {seed!r})")
    return weights, density


def tensor_seed(seed: int, name: str) -> int:
    """The seed of DARE's draws for the tensor ``name`` in a merge seeded by ``seed``: 63 bits of
    sha256(``"<seed>:<name>"``), so each tensor's draws depend on its name only, not on the order of
    the tensors. Introduced for notebook 05."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def task_vectors(base: torch.Tensor, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """tau_i = tensors[i] - base for each model's tensor (fp32, on the CPU; every shape must be
    ``base``'s). Introduced for notebook 05."""
    base32 = base.detach().float().cpu()
    out = []
    for i, tensor in enumerate(tensors):
        if tensor.shape != base.shape:
            raise ValueError(f"model {i}'s tensor has shape {tuple(tensor.shape)}, the base's {tuple(base.shape)}; "
                             f"a task vector needs models of the base's architecture")
        out.append(tensor.detach().float().cpu() - base32)
    return out


def merge_task_vectors(method: str, vectors: Sequence[torch.Tensor], weights: Sequence[float] | None = None,
                       density: float | None = None, majority_sign: str = "total", seed: int = 0,
                       name: str = "") -> torch.Tensor:
    """merge(tau_1..tau_n) for one tensor by peft's ``method`` (see the module's docstring), shape and fp32
    CPU of the vectors. ``name``: the tensor's name, which with ``seed`` seeds DARE's draws
    (:func:`tensor_seed`; the global torch RNG is left as it was). Introduced for notebook 05."""
    from peft.utils import merge_utils

    weights, density = check_merge(method, len(vectors), weights, density, majority_sign, seed)
    vectors = [v.detach().float().cpu() for v in vectors]
    if len({tuple(v.shape) for v in vectors}) != 1:
        raise ValueError(f"task vectors of one tensor must share a shape, got {[tuple(v.shape) for v in vectors]}")
    scale = torch.tensor(weights, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The density .* no pruning")  # density 1: keep everything
        if method == "task_arithmetic":
            return merge_utils.task_arithmetic(vectors, scale)
        if method == "ties":
            return merge_utils.ties(vectors, scale, density, majority_sign)
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(tensor_seed(seed, name))
            if method == "dare_linear":
                return merge_utils.dare_linear(vectors, scale, density)
            return merge_utils.dare_ties(vectors, scale, density, majority_sign)


def differs(base: torch.Tensor, tensors: Sequence[torch.Tensor]) -> bool:
    """Whether a merge changes this tensor: it is floating and some model's differs from the base's."""
    return base.is_floating_point() and any(not torch.equal(t.to(base.dtype).cpu(), base.cpu()) for t in tensors)


def merge_tensors(method: str, base: torch.Tensor, tensors: Sequence[torch.Tensor],
                  weights: Sequence[float] | None = None, density: float | None = None, majority_sign: str = "total",
                  seed: int = 0, name: str = "") -> torch.Tensor:
    """The merged tensor base + merge(tensors - base) (:func:`merge_task_vectors`), shape and dtype of
    ``base``, on the CPU. ``base``: one tensor of the base model; ``tensors``: the same tensor of each
    model (shape of ``base``). A non-floating tensor, or one no model changed, comes back as a copy of
    ``base`` (settings still validated). Introduced for notebook 05."""
    check_merge(method, len(tensors), weights, density, majority_sign, seed)
    vectors = task_vectors(base, tensors)
    if not differs(base, tensors):
        return base.detach().cpu().clone()
    merged = merge_task_vectors(method, vectors, weights, density, majority_sign, seed, name)
    return (base.detach().float().cpu() + merged).to(base.dtype)


# --------------------------------------------------------------------------------------- the artifact


@dataclass(frozen=True)
class Merge(Spec):
    """The merged model base + merge(models - base) (see the module's docstring), as an artifact.

    ``base``: the model the task vectors start from (``Base()``, or a chain stage); ``models``: the specs
    merged (single-domain experts, a chain's stages; same architecture as ``base``); ``method``: one of
    :data:`MERGE_METHODS`; ``weights``: one number per model (None: 1.0 each; task arithmetic's scaling);
    ``density``: the share of entries kept (``ties``, ``dare_*``; DARE's drop rate is 1 - density);
    ``seed``: DARE's draws (:func:`tensor_seed`); ``majority_sign``: ``total`` or ``frequency`` (``ties``,
    ``dare_ties``); ``references``: where each model's task vector starts, one spec per model (None: the base
    for every model; a chain's stages: the stage before each, see :func:`stage_references`). Settings a method
    does not use must stay at their defaults (an error otherwise), and only the settings the method uses enter
    the key (``references`` only when given).

    The build loads the base (fp32, CPU; a stored base's fp32 master when it has one), streams every model's
    tensors together, and each reference's when given (``kit.weights``: the fp32 master of a bf16 stage; one tensor
    per model at a time, never a whole model beside the base), merges each floating tensor some task vector moves
    and leaves the others as the base's, and stores the model as :class:`~mdrl_lib.specs.GradientSteps` does.
    Memory: one model plus one tensor per merged model and per reference.
    Introduced for notebook ``06_recovery_methods`` (merging baselines).
    """

    base: Spec
    models: tuple[Spec, ...]
    method: str
    weights: tuple[float, ...] | None = None
    density: float | None = None
    seed: int = 0
    majority_sign: str = "total"
    references: tuple[Spec, ...] | None = None
    kind: ClassVar[str] = "merge"

    def __post_init__(self) -> None:
        try:
            base = as_spec(self.base)
        except TypeError as error:
            raise ConfigError(f"merge base: {error}") from None
        if isinstance(self.models, (Spec, str)) or not isinstance(self.models, Sequence):
            raise ConfigError(f"merge models: expected a sequence of model specs, got {self.models!r}")
        try:
            models = tuple(as_spec(m) for m in self.models)
        except TypeError as error:
            raise ConfigError(f"merge models: {error}") from None
        if len(set(models)) != len(models):
            raise ConfigError(f"merge models: a model is named more than once: {[m.label() for m in models]}")
        if base in models:
            raise ConfigError(f"merge models: the base {base.label()} is among the models (its task vector is zero)")
        weights, density = check_merge(self.method, len(models), self.weights, self.density, self.majority_sign,
                                       self.seed)
        references = None
        if self.references is not None:
            if isinstance(self.references, (Spec, str)) or not isinstance(self.references, Sequence):
                raise ConfigError(f"merge references: expected a sequence of {len(models)} model specs (one per "
                                  f"model) or None, got {self.references!r}")
            try:
                references = tuple(as_spec(r) for r in self.references)
            except TypeError as error:
                raise ConfigError(f"merge references: {error}") from None
            if len(references) != len(models):
                raise ConfigError(f"merge references: expected {len(models)} specs (one per model), got "
                                  f"{len(references)}")
            same = [m.label() for m, r in zip(models, references) if m == r]
            if same:
                raise ConfigError(f"merge references: a model is its own reference (its task vector is zero): {same}")
            if all(r == base for r in references):
                references = None  # the default, one key
        object.__setattr__(self, "references", references)
        object.__setattr__(self, "base", base)
        object.__setattr__(self, "models", models)
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "density", density)

    @property
    def drop_rate(self) -> float | None:
        """DARE's drop rate, 1 - density (None for the other methods)."""
        return None if self.method not in RANDOM_METHODS else round(1.0 - self.density, 12)

    def inputs(self) -> tuple[Spec, ...]:
        return tuple(dict.fromkeys((self.base, *self.models, *(self.references or ()))))

    def key_fields(self, kit: Kit) -> dict:
        fields = {"base": kit.key(self.base), "models": [kit.key(m) for m in self.models], "method": self.method,
                  "weights": list(self.weights), "dtype": "fp32"}
        if self.references is not None:
            fields["references"] = [kit.key(r) for r in self.references]
        if self.method in SPARSE_METHODS:
            fields["density"] = self.density
        if self.method in SIGN_METHODS:
            fields["majority_sign"] = self.majority_sign
        if self.method in RANDOM_METHODS:
            fields["seed"] = self.seed
        return fields

    def build(self, kit: Kit, directory: Path, progress: bool) -> dict:
        from mdrl_lib.models import save_model

        start = time.perf_counter()
        model, tokenizer = kit.load(self.base, placement="train")
        state = model.state_dict()  # shares storage with the parameters: writing it writes the model
        if not (kit.path(self.base) / "source.json").is_file():  # a stored base: its fp32 master when it has one,
            with torch.no_grad():  # as the models' tensors are (a pretrained base is loaded in fp32 as it is)
                for name, tensor in kit.weights(self.base):
                    state[name].copy_(tensor)
        end = object()
        count = len(self.models)
        own_starts = self.references is not None
        streams = [kit.weights(m) for m in self.models] + ([kit.weights(r) for r in self.references]
                                                            if own_starts else [])
        merged = copied = 0
        vector_squares = [0.0] * len(self.models)
        delta_square = 0.0
        with torch.no_grad():
            for rows in itertools.zip_longest(*streams, fillvalue=end):
                names = sorted({row[0] for row in rows if row is not end})
                if any(row is end for row in rows) or len(names) != 1:
                    labels = [m.label() for m in (*self.models, *(self.references or ()))]
                    raise ValueError(f"the models {labels} do not hold the same tensors "
                                     f"(at {names}); merge models of one architecture")
                name = names[0]
                if name not in state:
                    raise ValueError(f"the models hold a tensor {name!r} that the base {self.base.label()} lacks; "
                                     f"merge models built from this base")
                target = state[name]
                tensors = [row[1] for row in rows[:count]]
                if own_starts:
                    vectors = [t.detach().float().cpu() - r.detach().float().cpu()
                               for t, (_, r) in zip(tensors, rows[count:])]
                    if not target.is_floating_point() or not any(bool(v.any()) for v in vectors):
                        copied += 1
                        continue
                    out = (target.detach().float().cpu()
                           + merge_task_vectors(self.method, vectors, self.weights, self.density, self.majority_sign,
                                                self.seed, name)).to(target.dtype)
                else:
                    if not differs(target, tensors):
                        copied += 1
                        continue
                    vectors = task_vectors(target, tensors)
                    out = merge_tensors(self.method, target, tensors, self.weights, self.density,
                                        self.majority_sign, self.seed, name)
                for i, vector in enumerate(vectors):
                    vector_squares[i] += float((vector.double() ** 2).sum())
                delta_square += float(((out.double() - target.double().cpu()) ** 2).sum())
                target.copy_(out)
                merged += 1
        save_model(model.float().cpu(), tokenizer, directory)
        return {"method": self.method, "merged_tensors": merged, "copied_tensors": copied,
                "task_vector_norms": [round(math.sqrt(s), 6) for s in vector_squares],
                "delta_norm": round(math.sqrt(delta_square), 6), "seconds": round(time.perf_counter() - start, 2)}

    def settings(self) -> str:
        """The method's settings in words, e.g. ``weights 0.5,0.5`` or ``density 0.3, sign total``."""
        parts = [f"weights {','.join(f'{w:g}' for w in self.weights)}"]
        if self.method in RANDOM_METHODS:
            parts.append(f"drop {self.drop_rate:g}")
        elif self.method in SPARSE_METHODS:
            parts.append(f"density {self.density:g}")
        if self.method in SIGN_METHODS:
            parts.append(f"sign {self.majority_sign}")
        if self.method in RANDOM_METHODS:
            parts.append(f"seed {self.seed}")
        return ", ".join(parts)

    def label(self) -> str:
        names = " + ".join(m.label() for m in self.models)
        steps = ", each minus its reference" if self.references is not None else ""
        return f"{self.method} of [{names}]{steps} on {self.base.label()} ({self.settings()})"

    def toy_seconds(self, config) -> float:
        return 1.0  # loading the base, streaming the models' tensors and saving: about a second on the toy


def stage_references(base: Spec, stages: Sequence[Spec]) -> tuple[Spec, ...]:
    """Each stage's reference in a merge of a chain's stages: the stage before it, the first stage's being
    ``base`` (``stages`` in chain order, each trained from the one before). Introduced for notebook 06."""
    stages = tuple(as_spec(s) for s in stages)
    return (as_spec(base), *stages[:-1])


def merge_grid(base: Spec, models: Sequence[Spec], methods: Sequence[str] = MERGE_METHODS, *,
               scales: Sequence[float] = TASK_ARITHMETIC_SCALES, densities: Sequence[float] = TIES_DENSITIES,
               drop_rates: Sequence[float] = DARE_DROP_RATES, seed: int = 0,
               majority_sign: str = "total", references: Sequence[Spec] | None = None) -> list[Merge]:
    """The :class:`Merge` specs of the kit's sweep over ``methods``, in that order: ``task_arithmetic`` at
    each of ``scales`` (the same weight for every model), ``ties`` at each of ``densities``, ``dare_linear``
    and ``dare_ties`` at each of ``drop_rates`` (density 1 - rate, ``seed``); TIES and DARE with weight 1
    per model; ``references``: each model's start (:class:`Merge`), the same for every merge. Defaults
    (:data:`TASK_ARITHMETIC_SCALES`, :data:`TIES_DENSITIES`, :data:`DARE_DROP_RATES`)
    are the kit's choice, not the paper's. Introduced for notebook 05 (a setting is chosen on one half of
    the held-out items and reported on the other)."""
    if isinstance(methods, str):
        methods = (methods,)
    unknown = [m for m in methods if m not in MERGE_METHODS]
    if unknown or not methods:
        raise ConfigError(f"merge grid methods: unknown or no methods {list(unknown or methods)!r}; valid choices: "
                          f"{', '.join(MERGE_METHODS)}")
    models = tuple(models)
    ones = (1.0,) * len(models)
    for name, values in (("scales", scales), ("densities", densities), ("drop_rates", drop_rates)):
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise ConfigError(f"merge grid {name}: expected a sequence of numbers, got {values!r}")
    for rate in drop_rates:
        Param(float, "", minimum=0.0, maximum=1.0).check("merge grid drop rate", rate)
        if rate >= 1.0:
            raise ConfigError(f"merge grid drop rate: expected a rate in [0, 1) (1 drops everything), got {rate!r}")
    specs: list[Merge] = []
    for method in dict.fromkeys(methods):
        if method == "task_arithmetic":
            specs += [Merge(base, models, method, weights=(float(s),) * len(models), references=references)
                      for s in scales]
        elif method == "ties":
            specs += [Merge(base, models, method, weights=ones, density=float(d), majority_sign=majority_sign,
                            references=references) for d in densities]
        else:
            sign = {"majority_sign": majority_sign} if method in SIGN_METHODS else {}
            specs += [Merge(base, models, method, weights=ones, density=round(1.0 - float(r), 12), seed=seed,
                            references=references, **sign) for r in drop_rates]
    return specs
