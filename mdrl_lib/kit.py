"""The kit: one object per run that hands out cached artifacts from the run directory's store.

Introduced in notebook ``00_toy_world``. Every notebook starts with
``kit = open_kit(RunConfig.from_params(...))``. An artifact is described by a *spec*, a frozen
dataclass that owns its cache-key fields and its build: :class:`Base`, :class:`Stage` (GRPO on one
domain from a parent), :class:`Refresh`, :class:`GradientSteps` (plain gradient descent on a domain
objective), :class:`Scores` (per-item results) and, in :mod:`mdrl_lib.objectives`,
:class:`~mdrl_lib.objectives.ObjectiveBatch`. ``kit.get(spec)`` is the one way into the store: it
returns the cached artifact or builds its inputs and then it, and stores it. ``expert``, ``chain`` and
``refreshed`` are short spec builders on top.

What a key covers: every input that changes an artifact's bytes (the run's settings that the build
reads, the parent's key, the spec's own fields). What it does not cover: settings that only change how
the same thing is computed (the device, trl's vLLM and DeepSpeed fields, the number of processes);
those are recorded in the manifest.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator, Mapping

import pandas as pd
import torch

from mdrl_lib.config import ConfigError, RunConfig, parse_order
from mdrl_lib.domains.base import DOMAIN_NAMES, Domain, Splits, get_domain
from mdrl_lib.domains.toy import WORLD_VERSION
from mdrl_lib.store import Artifact, Store, cache_key

# Math's arithmetic is the hardest skill and must be learned on every seed (right number on at least
# 0.8 of held-out problems), so Math gets most of the batch; QA's facts must be recalled almost perfectly,
# or a QA stage overwrites the held-out facts while it memorises its own; Code needs some practice, and
# CW's form is learned fastest. See notebook 00, section 4, and docs/toy_world.md.
TOY_WARMUP_WEIGHTS = {"math": 10.0, "code": 1.5, "qa": 3.0, "cw": 0.5}
ITEMS_FILE = "items.jsonl"


def quiet_libraries() -> None:
    """Silence transformers' and datasets' progress bars and info logs (the kit shows its own)."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("datasets").setLevel(logging.ERROR)


# ----------------------------------------------------------------------------------------- specs


class Spec:
    """An artifact's description. Subclasses are frozen dataclasses with a ``kind``; they say which
    other artifacts they need (:meth:`inputs`), what their key covers (:meth:`key_fields`) and how
    they are built (:meth:`build`, which writes files into a directory and returns manifest metrics)."""

    kind: ClassVar[str] = ""

    def inputs(self) -> tuple["Spec", ...]:
        return ()

    def key_fields(self, kit: "Kit") -> dict:
        raise NotImplementedError

    def build(self, kit: "Kit", directory: Path, progress: bool) -> dict:
        raise NotImplementedError

    def label(self) -> str:
        """A short human name, e.g. ``base > code > math``."""
        return self.kind


@dataclass(frozen=True)
class Base(Spec):
    """The base model: at toy scale built and warmed up on this machine; at full scale the pretrained
    model named by the run's ``model``. Its key covers the scale, seed, model, data and warm-up settings,
    and at toy scale the toy world's version, warm-up mixture and each domain's world settings."""

    kind: ClassVar[str] = "base"

    def key_fields(self, kit: "Kit") -> dict:
        config = kit.config
        fields = config.fields_for("model", "data", "warmup")
        # the digit-free world enters through the domains' world settings (only when set: default keys stay)
        fields["data"].pop("digit_free")
        if config.scale == "toy":
            for name in ("max_prompt_tokens", "math_source", "math_eval_source", "code_source", "qa_source",
                         "cw_source"):
                fields["data"].pop(name)  # the toy scale builds its own short prompts and reads neither
            fields["world"] = WORLD_VERSION
            fields["warmup_weights"] = dict(TOY_WARMUP_WEIGHTS)
            fields["world_settings"] = {n: kit.domain(n).world_settings() for n in DOMAIN_NAMES}
        else:
            fields.pop("warmup")
        return fields

    def build(self, kit: "Kit", directory: Path, progress: bool) -> dict:
        from mdrl_lib.models import build_toy_model, build_toy_tokenizer, parameter_count, save_model
        from mdrl_lib.training import warmup

        config = kit.config
        if config.scale == "full":
            (directory / "source.json").write_text(json.dumps({"model": config.model.name}))
            return {"model": config.model.name}
        tokenizer = build_toy_tokenizer()
        model = build_toy_model(config.model, tokenizer, config.seed)
        pairs = {n: kit.domain(n).warmup_pairs(kit.splits(n)) for n in DOMAIN_NAMES}
        log = warmup(model, tokenizer, pairs, steps=config.warmup.steps, lr=config.warmup.lr,
                     batch_size=config.warmup.batch_size, seed=config.seed, weights=TOY_WARMUP_WEIGHTS,
                     anneal_steps=config.warmup.anneal_steps, progress=progress)
        save_model(model, tokenizer, directory)
        return {"parameters": parameter_count(model), "warmup_seconds": round(log.seconds, 2),
                "warmup_losses": [round(x, 4) for x in log.losses], "warmup_loss_every": log.every}

    def label(self) -> str:
        return "base"


@dataclass(frozen=True)
class Stage(Spec):
    """``steps`` GRPO steps on ``domain`` starting from ``parent`` (introduced in ``01_sparse_edits``).

    ``None`` fields take the run's RL settings. ``rl_seed`` varies the RL on one base (the paper's one
    pretrained model, several RL runs); ``lr`` and ``lr_schedule`` override the run's rate and its
    schedule; ``reward`` is ``verifier`` or a control (``shuffled``, ``random``: see
    :func:`mdrl_lib.training.overridden_reward`); ``save_every`` > 0 also keeps the weights every that
    many steps (:meth:`Kit.checkpoints_along`); ``grpo_options`` are extra trl ``GRPOConfig`` fields
    that change the algorithm (keyed; fields that only change how it runs go to ``Kit.get``'s
    ``trainer_overrides``, unkeyed).
    """

    parent: Spec
    domain: str
    steps: int | None = None
    rl_seed: int = 0
    lr: float | None = None
    lr_schedule: str | None = None
    reward: str = "verifier"
    save_every: int = 0
    grpo_options: tuple[tuple[str, Any], ...] = ()
    kind: ClassVar[str] = "stage"

    def __post_init__(self) -> None:
        from mdrl_lib.config import _GROUPS
        from mdrl_lib.training import EXECUTION_ONLY_GRPO_FIELDS, REWARD_MODES

        if not isinstance(self.parent, Spec):
            raise ConfigError(f"{self.kind} parent: expected a spec (Base(), Stage(...)), got {self.parent!r}")
        object.__setattr__(self, "domain", check_domain(self.domain))
        rl_params = {f.name: f.metadata["param"] for f in dataclasses.fields(_GROUPS["rl"]) if "param" in f.metadata}
        if self.steps is not None:
            rl_params["steps"].check(f"{self.kind} steps", self.steps)
        if self.lr is not None:
            object.__setattr__(self, "lr", rl_params["lr"].check(f"{self.kind} lr", self.lr))
        if self.lr_schedule is not None:
            rl_params["lr_schedule"].check(f"{self.kind} lr_schedule", self.lr_schedule)
        from mdrl_lib.config import MAX_SEED, Param

        Param(int, "", minimum=0, maximum=MAX_SEED).check(f"{self.kind} rl_seed", self.rl_seed)
        Param(int, "", minimum=0, maximum=10**6).check(f"{self.kind} save_every", self.save_every)
        if self.reward not in REWARD_MODES:
            raise ConfigError(f"{self.kind} reward: unknown value {self.reward!r}; valid choices: "
                              f"{', '.join(REWARD_MODES)}")
        options = dict(self.grpo_options)
        execution = sorted(set(options) & EXECUTION_ONLY_GRPO_FIELDS)
        if execution:
            raise ConfigError(f"{self.kind} grpo_options: {execution} only change how a stage runs; pass them as "
                              f"trainer_overrides to kit.get (they are not part of the cache key)")
        object.__setattr__(self, "grpo_options", tuple(sorted(options.items())))

    def inputs(self) -> tuple[Spec, ...]:
        return (self.parent,)

    def resolved_steps(self, kit: "Kit") -> int:
        return kit.config.rl.steps if self.steps is None else self.steps

    def rl_config(self, kit: "Kit", start=None):
        """The run's RL settings (or ``start``, e.g. one process's share of the batch) with this stage's
        overrides."""
        changes = {k: v for k, v in (("lr", self.lr), ("lr_schedule", self.lr_schedule)) if v is not None}
        return dataclasses.replace(start or kit.config.rl, **changes)

    def key_fields(self, kit: "Kit") -> dict:
        rl = dataclasses.asdict(self.rl_config(kit))
        rl.pop("refresh_steps")
        fields = {"parent": kit.key(self.parent), "domain": self.domain, "steps": self.resolved_steps(kit),
                  "rl_seed": self.rl_seed, "rl": rl, "reward": self.reward, "save_every": self.save_every,
                  "grpo_options": dict(self.grpo_options)}
        if kit.config.scale == "toy":
            fields["threads"] = 1  # the toy scale trains on one thread: the bytes depend on it
        return fields

    def seed(self, kit: "Kit") -> int:
        """The stage's trainer seed: from the run seed, the RL seed, the parent's key and the domain."""
        from mdrl_lib.training import stage_seed

        return stage_seed(kit.config.seed, f"rl{self.rl_seed}", kit.key(self.parent), self.domain)

    def train(self, kit: "Kit", directory: Path | None, progress: bool, trainer_overrides: Mapping | None = None,
              rl_config=None):
        """Train this stage from its parent; returns (model, tokenizer, log). Used by :meth:`build` and by
        ``scripts/grpo_stage.py`` on every process of a multi-process run (``rl_config`` then holds the
        per-process batch)."""
        from mdrl_lib.training import grpo

        model, tokenizer = kit.load(self.parent, placement="train")
        along = directory / "along" if (directory is not None and self.save_every) else None
        options = {**dict(self.grpo_options), **dict(trainer_overrides or {})}
        model, log = grpo(model, tokenizer, kit.domain(self.domain), kit.splits(self.domain).train,
                          self.rl_config(kit, rl_config), self.seed(kit), steps=self.resolved_steps(kit),
                          progress=progress, desc=f"RL {self.label()}", reward_mode=self.reward,
                          save_every=self.save_every, save_dir=along, trainer_overrides=options or None)
        return model, tokenizer, log

    def write(self, kit: "Kit", model, tokenizer, log, directory: Path) -> dict:
        """Store a trained model (both precisions for bf16) and return the manifest metrics."""
        from mdrl_lib.training import save_stage

        save_stage(model, tokenizer, directory, kit.config.rl.precision)
        return {"domain": self.domain, "parent": kit.key(self.parent), "precision": kit.config.rl.precision,
                "log": log.to_metrics()}

    def build(self, kit: "Kit", directory: Path, progress: bool, trainer_overrides: Mapping | None = None) -> dict:
        model, tokenizer, log = self.train(kit, directory, progress, trainer_overrides)
        return self.write(kit, model, tokenizer, log, directory)

    def label(self) -> str:
        extras = [f"{k}={v}" for k, v in (("steps", self.steps), ("rl_seed", self.rl_seed or None), ("lr", self.lr),
                                          ("schedule", self.lr_schedule)) if v is not None]
        if self.reward != "verifier":
            extras.append(f"reward={self.reward}")
        name = self.domain if self.kind == "stage" else f"{self.kind} {self.domain}"
        return f"{self.parent.label()} > {name}" + (f" ({', '.join(extras)})" if extras else "")


@dataclass(frozen=True)
class Refresh(Stage):
    """A short GRPO refresh on ``domain`` (introduced in ``05_refresh_vs_rollback``): a :class:`Stage`
    whose steps default to the run's ``refresh_steps``."""

    kind: ClassVar[str] = "refresh"

    def resolved_steps(self, kit: "Kit") -> int:
        return kit.config.rl.refresh_steps if self.steps is None else self.steps


@dataclass(frozen=True)
class GradientSteps(Spec):
    """``steps`` plain gradient-descent steps, theta <- theta - lr * grad L_A(theta), at a constant rate on a
    domain objective (introduced in ``03_perturbation_theory``: the refresh the contraction theorem is
    about). ``objective`` is an :class:`~mdrl_lib.objectives.ObjectiveBatch` spec; ``save_every`` keeps
    the weights along the way."""

    parent: Spec
    objective: Spec
    steps: int
    lr: float
    save_every: int = 0
    kind: ClassVar[str] = "gd"

    def __post_init__(self) -> None:
        from mdrl_lib.config import Param

        Param(int, "", minimum=1, maximum=10**6).check("gd steps", self.steps)
        object.__setattr__(self, "lr", Param(float, "", above=0.0, maximum=1e6).check("gd lr", self.lr))
        Param(int, "", minimum=0, maximum=10**6).check("gd save_every", self.save_every)

    def inputs(self) -> tuple[Spec, ...]:
        return (self.parent, self.objective)

    def key_fields(self, kit: "Kit") -> dict:
        return {"parent": kit.key(self.parent), "objective": kit.key(self.objective), "steps": self.steps,
                "lr": self.lr, "save_every": self.save_every, "dtype": "fp32"}

    def build(self, kit: "Kit", directory: Path, progress: bool) -> dict:
        from mdrl_lib.models import save_model
        from mdrl_lib.training import gradient_steps

        model, tokenizer = kit.load(self.parent, placement="analysis")
        objective = kit.objective(self.objective)
        log = gradient_steps(model, objective.loss, steps=self.steps, lr=self.lr, save_every=self.save_every,
                             save_dir=directory / "along", progress=progress)
        model.set_attn_implementation("sdpa")
        save_model(model.float().cpu(), tokenizer, directory)
        return {"losses": log.losses, "seconds": round(log.seconds, 2)}

    def label(self) -> str:
        return f"{self.parent.label()} > gd {self.steps} (lr={self.lr})"


@dataclass(frozen=True)
class Scores(Spec):
    """Per-item greedy results of a model artifact on every domain's held-out items (introduced in
    ``04_sequential_rl``): ``items.jsonl`` holds, per item, the completion, the score and what the
    verifier parsed; the manifest holds each domain's mean, standard error and count."""

    of: Spec
    kind: ClassVar[str] = "scores"

    def inputs(self) -> tuple[Spec, ...]:
        return (self.of,)

    def key_fields(self, kit: "Kit") -> dict:
        return {"of": kit.key(self.of), "max_new_tokens": kit.config.rl.max_completion_length,
                "dtype": str(kit.compute_dtype).removeprefix("torch.")}

    def build(self, kit: "Kit", directory: Path, progress: bool) -> dict:
        from mdrl_lib.evaluation import score_items, summarize_items

        model, tokenizer = kit.load(self.of)
        items = score_items(model, tokenizer, kit.evals, max_new_tokens=kit.config.rl.max_completion_length,
                            batch_size=kit.config.compute.eval_batch_size or None)
        with open(directory / ITEMS_FILE, "w") as handle:
            for row in items.to_dict("records"):
                handle.write(json.dumps(row, sort_keys=True) + "\n")
        table = summarize_items(items).set_index("domain")
        return {"scores": table["score"].round(6).to_dict(), "se": table["se"].round(6).to_dict(),
                "n": table["n"].astype(int).to_dict(), "device": str(next(model.parameters()).device)}

    def label(self) -> str:
        return f"scores of {self.of.label()}"


@dataclass(frozen=True)
class Stored(Spec):
    """An artifact already in the store, named by its key (what :meth:`Kit.get` returned): lets an
    :class:`~mdrl_lib.store.Artifact` stand wherever a spec is asked for (``Scores(Stored(key))``)."""

    key: str
    kind: ClassVar[str] = "stored"

    def key_fields(self, kit: "Kit") -> dict:
        raise AssertionError("a stored artifact's key is its own")

    def build(self, kit: "Kit", directory: Path, progress: bool) -> dict:
        raise FileNotFoundError(f"artifact {self.key} is not in the store {kit.store.root}; it was made by another "
                                f"run directory or removed")

    def label(self) -> str:
        return self.key


def as_spec(what: Spec | Artifact) -> Spec:
    """``what`` itself if it is a spec, or a :class:`Stored` spec naming an artifact."""
    if isinstance(what, Artifact):
        return Stored(what.key)
    if not isinstance(what, Spec):
        raise TypeError(f"expected an artifact spec (Base(), Stage(...), ...) or an artifact, got {what!r}")
    return what


def check_domain(name: Any) -> str:
    """``name`` as a known domain (case and spaces ignored), else a :class:`ConfigError` listing them."""
    if not isinstance(name, str) or name.strip().lower() not in DOMAIN_NAMES:
        raise ConfigError(f"domain: unknown domain {name!r}; valid domains: {', '.join(DOMAIN_NAMES)}")
    return name.strip().lower()


# ------------------------------------------------------------------------------------------- kit


class Kit:
    """Artifacts of one run configuration, cached under ``<run_dir>/store``."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.run_dir = config.resolved_run_dir
        self.store = Store(self.run_dir / "store")
        self._domains: dict[str, Domain] = {}
        self._splits: dict[str, Splits] = {}
        self._tokenizer = None
        quiet_libraries()

    # ---- data ---------------------------------------------------------------------------------

    def domain(self, name: str) -> Domain:
        """The domain ``name`` at this run's scale (at full scale with the config's data sources and
        the model's tokenizer for prompt truncation)."""
        name = check_domain(name)
        if name not in self._domains:
            options = self._full_scale_options(name) if self.config.scale == "full" else self._toy_options(name)
            self._domains[name] = get_domain(name, self.config.scale, **options)
        return self._domains[name]

    def _toy_options(self, name: str) -> dict:
        """The toy world's settings a domain is built with: QA and CW write numbers with letters in the
        digit-free world (``data_digit_free``, a control of notebook ``04_sequential_rl``)."""
        if self.config.data.digit_free and name in ("qa", "cw"):
            return {"numbers": "letters"}
        return {}

    def _full_scale_options(self, name: str) -> dict:
        data = self.config.data
        options: dict[str, Any] = {"max_prompt_tokens": data.max_prompt_tokens, "tokenizer": self.tokenizer}
        if name == "math":
            options.update({k: v for k, v in (("source", data.math_source), ("eval_source", data.math_eval_source))
                            if v})
        elif name == "code" and data.code_source:
            options["source"] = data.code_source
        elif name == "qa" and data.qa_source:
            options["source"] = data.qa_source
        elif name == "cw" and data.cw_source:
            options["sources"] = tuple(s.strip() for s in data.cw_source.split(",") if s.strip())
        return options

    @property
    def tokenizer(self):
        """The run's tokenizer (the toy tokenizer, or the full-scale model's)."""
        if self._tokenizer is None:
            if self.config.scale == "toy":
                from mdrl_lib.models import build_toy_tokenizer

                self._tokenizer = build_toy_tokenizer()
            else:
                from mdrl_lib.models import load_tokenizer

                self._tokenizer = load_tokenizer(self.config.model.name)
        return self._tokenizer

    def splits(self, name: str) -> Splits:
        """Train, eval and warm-up examples of ``name``, by the run's seed and sizes (0 = domain default)."""
        name = check_domain(name)
        if name not in self._splits:
            domain = self.domain(name)
            train = self.config.data.train_size or domain.default_sizes[0]
            held_out = self.config.data.eval_size or domain.default_sizes[1]
            self._splits[name] = domain.build_splits(self.config.seed, train, held_out)
        return self._splits[name]

    @property
    def evals(self) -> dict[str, tuple[Domain, list]]:
        """Each domain with its eval examples, as :func:`mdrl_lib.evaluation.score_domains` takes them."""
        return {n: (self.domain(n), self.splits(n).eval) for n in DOMAIN_NAMES}

    # ---- devices ------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        """Where scoring and analyses run: the config's ``compute_device``; ``auto`` takes a GPU if there is one."""
        wanted = self.config.compute.device
        if wanted == "cuda" and not torch.cuda.is_available():
            raise ConfigError("compute_device: 'cuda' was asked for but torch sees no GPU on this machine; "
                              "valid here: auto, cpu")
        if wanted == "auto":
            wanted = "cuda" if torch.cuda.is_available() else "cpu"
        return torch.device(wanted)

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype of scoring and analyses: ``compute_dtype``; ``auto`` is bf16 on a GPU at full scale, else fp32."""
        wanted = self.config.compute.dtype
        if wanted == "auto":
            wanted = "bf16" if (self.config.scale == "full" and self.device.type == "cuda") else "fp32"
        return {"fp32": torch.float32, "bf16": torch.bfloat16}[wanted]

    # ---- the store ----------------------------------------------------------------------------

    def key(self, spec: Spec | Artifact) -> str:
        """The cache key of ``spec``: ``<kind>-<hash of its key fields>``."""
        spec = as_spec(spec)
        if isinstance(spec, Stored):
            return spec.key
        return cache_key(spec.kind, spec.key_fields(self))

    def get(self, spec: Spec | Artifact, progress: bool = True, trainer_overrides: Mapping | None = None) -> Artifact:
        """The artifact of ``spec``: from the store, or built (its inputs first) and stored.

        ``trainer_overrides`` (GRPO stages only) are trl ``GRPOConfig`` fields that change how a stage runs,
        not what it computes (vLLM, DeepSpeed, micro-batching): recorded in the manifest, not keyed.
        """
        spec = as_spec(spec)
        key = self.key(spec)
        found = self.store.get(key)
        if found is not None:
            return found
        for needed in spec.inputs():
            self.get(needed, progress=progress)
        extra = {}
        if trainer_overrides:
            if not isinstance(spec, Stage):
                raise ConfigError(f"trainer_overrides apply to GRPO stages only, not to {spec.kind}")
            extra = {"trainer_overrides": dict(trainer_overrides)}

        def build(directory: Path) -> dict:
            with self._compute_threads():
                if extra:
                    return spec.build(self, directory, progress, trainer_overrides=trainer_overrides)
                return spec.build(self, directory, progress)

        return self.store.get_or_create(key, build, config=self.manifest_config(spec, **extra), seed=self.config.seed)

    def manifest_config(self, spec: Spec, **extra: Any) -> dict:
        """What a manifest records about how ``spec`` was made: its kind, label, key fields and extras."""
        return {"kind": spec.kind, "label": spec.label(), "fields": spec.key_fields(self), **extra}

    def path(self, spec: Spec) -> Path:
        """The directory of a built artifact (built first if needed)."""
        return self.get(spec).path

    # ---- models and weights ---------------------------------------------------------------------

    def load(self, what: Spec | Artifact, placement: str = "compute"):
        """(model, tokenizer) of a model artifact.

        ``placement``: ``compute`` puts the model on :attr:`device` in :attr:`compute_dtype` (scoring);
        ``analysis`` on :attr:`device` in fp32 with eager attention (gradients and Hessian-vector
        products: double backward through fused attention kernels is not implemented in torch);
        ``train`` leaves it in fp32 on the CPU for trl, which places it itself.
        """
        from mdrl_lib.models import load_model

        artifact = self.get(what)
        source = artifact.path / "source.json"
        target = json.loads(source.read_text())["model"] if source.is_file() else artifact.path
        if placement not in ("compute", "analysis", "train"):
            raise ValueError(f"unknown placement {placement!r}; valid: compute, analysis, train")
        model, tokenizer = load_model(target, dtype=torch.float32)
        if placement == "compute":
            model.to(device=self.device, dtype=self.compute_dtype)
        elif placement == "analysis":
            model.set_attn_implementation("eager")
            model.to(self.device)
        return model.eval(), tokenizer

    def weights_file(self, spec: Spec | Artifact, precision: str = "fp32") -> Path:
        """The safetensors file of a stored model: ``fp32`` is the fp32 master when the stage was trained
        with ``precision="bf16"`` (else the stored weights); ``stored`` is ``model.safetensors`` as stored."""
        from mdrl_lib.training import MASTER_FP32

        if precision not in ("fp32", "stored"):
            raise ValueError(f"unknown precision {precision!r}; valid: fp32, stored")
        path = self.path(spec)
        if (path / "source.json").is_file():
            raise ValueError(f"{as_spec(spec).label()} is the full-scale pretrained model {self.config.model.name!r}, which the "
                             f"run directory does not hold; its weights are in the Hugging Face cache")
        master = path / MASTER_FP32
        return master if (precision == "fp32" and master.is_file()) else path / "model.safetensors"

    def weights(self, spec: Spec | Artifact, precision: str = "fp32") -> Iterator[tuple[str, torch.Tensor]]:
        """(name, tensor) of every stored tensor of ``spec``, one at a time (streamed, never the whole
        model), as fp32 tensors: ``precision`` as in :meth:`weights_file`. Introduced in ``01_sparse_edits``."""
        from safetensors import safe_open

        with safe_open(str(self.weights_file(spec, precision)), "pt") as handle:
            for name in sorted(handle.keys()):
                yield name, handle.get_tensor(name).float()

    def checkpoints_along(self, spec: Spec) -> list[tuple[int, Path]]:
        """(step, safetensors file) of the weights a stage saved along its way (``save_every``), in order,
        step 0 being its parent's weights. Introduced in ``03_perturbation_theory``."""
        if not getattr(spec, "save_every", 0):
            raise ValueError(f"{spec.label()} keeps no checkpoints along the way; ask for it with save_every > 0")
        along = sorted((self.path(spec) / "along").glob("step-*.safetensors"))
        return [(0, self.weights_file(spec.parent))] + [(int(p.stem.split("-")[1]), p) for p in along]

    def objective(self, spec: Spec):
        """The differentiable objective of an :class:`~mdrl_lib.objectives.ObjectiveBatch` spec (its
        batch built and cached first), on :attr:`device`. Introduced in ``02_shared_routes``."""
        from mdrl_lib.objectives import DomainObjective

        return DomainObjective.from_artifact(self.get(spec), self.tokenizer, device=self.device)

    # ---- scores -------------------------------------------------------------------------------

    def item_results(self, what: Spec | Artifact) -> pd.DataFrame:
        """Per-item results (domain, item, prompt, completion, score, details) of a model spec: the
        :class:`Scores` artifact, built once. Introduced in ``04_sequential_rl``."""
        path = self.get(Scores(as_spec(what))).path / ITEMS_FILE
        return pd.DataFrame([json.loads(line) for line in path.read_text().splitlines()])

    def scores_of(self, what: Spec | Artifact) -> pd.DataFrame:
        """Held-out scores (domain, n, score, se) of a model spec or artifact, from its cached :class:`Scores`."""
        metrics = self.get(Scores(as_spec(what))).metrics
        return pd.DataFrame([{"domain": d, "n": metrics["n"][d], "score": metrics["scores"][d],
                              "se": metrics["se"][d]} for d in DOMAIN_NAMES])

    score = scores_of

    # ---- spec builders ------------------------------------------------------------------------

    def base(self, progress: bool = True) -> Artifact:
        """The base model artifact (see :class:`Base`)."""
        return self.get(Base(), progress=progress)

    def chain_specs(self, order=None, rl_seed: int = 0) -> list[Stage]:
        """The specs of each stage of the chain ``order`` (default: the run's), each from the previous one."""
        order = self._order(order)
        specs, parent = [], Base()
        for name in order:
            parent = Stage(parent, name, rl_seed=rl_seed)
            specs.append(parent)
        return specs

    def expert(self, domain: str, rl_seed: int = 0, progress: bool = True, **overrides: Any) -> Artifact:
        """The single-domain expert: one GRPO stage of ``rl.steps`` on ``domain`` from the base.

        Introduced in ``01_sparse_edits``. Without overrides it is the first stage of any chain that
        starts with ``domain``, so the two share one stored checkpoint; ``overrides`` are :class:`Stage`
        fields (``lr``, ``steps``, ``lr_schedule``, ...).
        """
        return self.get(Stage(Base(), domain, rl_seed=rl_seed, **overrides), progress=progress)

    def chain(self, order=None, rl_seed: int = 0, progress: bool = True) -> list[Artifact]:
        """Checkpoints after each stage of the sequential chain ``order`` (default: the run's order).

        Introduced in ``04_sequential_rl``. Stage ``i`` is ``rl.steps`` GRPO steps on ``order[i]`` from
        stage ``i-1`` (stage 0 from the base). A chain killed part-way resumes from its last finished
        stage; a finished chain is served from the store.
        """
        return [self.get(spec, progress=progress) for spec in self.chain_specs(order, rl_seed)]

    def refresh_spec(self, domain: str, steps: int | None = None, order=None, rl_seed: int = 0,
                     **overrides: Any) -> Refresh:
        """The spec of a refresh on ``domain`` from the end of the chain ``order``."""
        return Refresh(self.chain_specs(order, rl_seed)[-1], domain, steps=steps, rl_seed=rl_seed, **overrides)

    def refreshed(self, domain: str, steps: int | None = None, order=None, rl_seed: int = 0, progress: bool = True,
                  **overrides: Any) -> Artifact:
        """A short GRPO refresh on ``domain`` from the end of the chain ``order``.

        Introduced in ``05_refresh_vs_rollback``. ``steps`` defaults to ``rl.refresh_steps``; the rate
        and its schedule are the chain's unless ``overrides`` say otherwise (``lr_schedule="constant"``).
        """
        return self.get(self.refresh_spec(domain, steps, order, rl_seed, **overrides), progress=progress)

    def score_matrix(self, order=None, rl_seed: int = 0, progress: bool = True) -> pd.DataFrame:
        """The stage x domain matrix of held-out scores along the chain ``order``.

        Introduced in ``04_sequential_rl``. Rows: ``base``, then the domain trained in each stage in
        order; columns: every domain. Trains and scores what is missing; ``.attrs["se"]`` holds the
        matching standard errors.
        """
        from mdrl_lib.evaluation import stage_matrix

        order = self._order(order)
        specs = [Base(), *self.chain_specs(order, rl_seed)]
        frames = {stage: self.scores_of(spec) for stage, spec in zip(("base", *order), specs)}
        matrix = stage_matrix(frames)[list(DOMAIN_NAMES)]
        se = stage_matrix({s: f.assign(score=f["se"]) for s, f in frames.items()})[list(DOMAIN_NAMES)]
        matrix.attrs["se"] = se
        return matrix

    def _order(self, order) -> tuple[str, ...]:
        return self.config.order if order is None else parse_order(order)

    @contextlib.contextmanager
    def _compute_threads(self):
        """At toy scale, one torch thread: the tiny model's matmuls are slower with two threads, and
        far slower (about 800x measured) when another process shares the two cores."""
        if self.config.scale != "toy":
            yield
            return
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)


def open_kit(config: RunConfig) -> Kit:
    """The kit for ``config``: opens (or creates) its run directory."""
    return Kit(config)
