"""The kit: one object per run that hands out cached artifacts from the run directory's store.

Introduced in notebook ``00_toy_world``. Every notebook starts with
``kit = open_kit(RunConfig.from_params(...))``. An artifact is described by a *spec*
(:mod:`mdrl_lib.specs`: :class:`Base`, :class:`Stage`, :class:`Refresh`, :class:`GradientSteps`,
:class:`Scores`, :class:`ObjectiveBatch`; re-exported here), which owns its cache-key fields, its build
and its reader. ``kit.get(spec)`` is the one way into the store: it returns the cached artifact or
builds its inputs and then it, and stores it; ``kit.open(spec)`` returns what the spec's reader makes
of it (a table, an objective). ``expert``, ``chain`` and ``refreshed`` are short spec builders on top.
The kit records the key of every spec it is asked for (:meth:`Kit.requested_keys`), and with
``MDRL_GET_LOG`` set it appends each top-level request to that file as a JSON line.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping

import pandas as pd
import torch

from mdrl_lib.config import ConfigError, RunConfig, parse_order
from mdrl_lib.domains.base import DOMAIN_NAMES, Domain, Splits, domain_class, get_domain
from mdrl_lib.specs import (
    ITEMS_FILE, PAIRS_FILE, TOY_WARMUP_WEIGHTS, Base, GradientSteps, ObjectiveBatch, Processes, Refresh, Scores, Spec, Stage,
    Stored, as_spec, check_domain,
)
from mdrl_lib.store import Artifact, Store, cache_key

__all__ = [
    "GET_LOG_ENV", "ITEMS_FILE", "TOY_WARMUP_WEIGHTS", "Base", "GradientSteps", "Kit", "ObjectiveBatch", "Processes",
    "Refresh", "Scores", "Spec", "Stage", "Stored", "as_spec", "check_domain", "open_kit", "quiet_libraries",
]

GET_LOG_ENV = "MDRL_GET_LOG"


def quiet_libraries() -> None:
    """Silence transformers' and datasets' progress bars and info logs (the kit shows its own)."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("datasets").setLevel(logging.ERROR)


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
        self._requested: dict[str, None] = {}
        self._depth = threading.local()
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
        """The toy world's settings a domain is built with, from its class (:meth:`Domain.run_options`: QA
        and CW write numbers with letters in the digit-free world, a control of ``04_sequential_rl``)."""
        return domain_class(name, "toy").run_options(self.config.data)

    def _full_scale_options(self, name: str) -> dict:
        """Prompt truncation and the tokenizer, and the data sources the domain's class reads from the config."""
        data = self.config.data
        return {"max_prompt_tokens": data.max_prompt_tokens, "tokenizer": self.tokenizer,
                **domain_class(name, "full").run_options(data)}

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

    def get(self, spec: Spec | Artifact, progress: bool = True, trainer_overrides: Mapping | None = None,
            processes: Processes | None = None) -> Artifact:
        """The artifact of ``spec``: from the store, or built (its inputs first) and stored.

        ``trainer_overrides`` (GRPO stages only) are trl ``GRPOConfig`` fields that change how a stage runs,
        not what it computes (vLLM, DeepSpeed, micro-batching): recorded in the manifest, not keyed.
        ``processes``: the processes of a launch that all make this call (``scripts/grpo_stage.py`` under
        ``accelerate launch``): a stage is trained on every one of them (:meth:`Stage.trained_together`)
        and stored by the main one; any other spec is built by the main one while the others wait.
        Every spec asked for is recorded (:meth:`requested_keys`); see also ``MDRL_GET_LOG``.
        """
        spec = as_spec(spec)
        top = not getattr(self._depth, "value", 0)
        self._record(spec)
        if top and (processes is None or processes.is_main_process):
            self._log_request(spec)
        self._depth.value = getattr(self._depth, "value", 0) + 1
        try:
            if processes is not None:
                return self._get_together(spec, progress, trainer_overrides, processes)
            return self._get(spec, progress, trainer_overrides)
        finally:
            self._depth.value -= 1

    def open(self, spec: Spec | Artifact, progress: bool = True) -> Any:
        """What ``spec``'s reader makes of its artifact (:meth:`Spec.open`; built first if needed): a
        :class:`Scores` gives its per-item table, an :class:`ObjectiveBatch` its objective, others the
        :class:`~mdrl_lib.store.Artifact`."""
        spec = as_spec(spec)
        return spec.open(self, self.get(spec, progress=progress))

    def requested_keys(self) -> list[str]:
        """The key of every spec this kit was asked for (each :meth:`get` call's spec and, recursively, its
        inputs, whether stored or built), in order of first request, each once."""
        return list(self._requested)

    def _record(self, spec: Spec) -> None:
        key = self.key(spec)
        if key in self._requested:
            return
        self._requested[key] = None
        for needed in spec.inputs():
            self._record(needed)

    def _log_request(self, spec: Spec) -> None:
        """One JSON line (key, kind, label) appended to the file ``MDRL_GET_LOG`` names, if it names one."""
        path = os.environ.get(GET_LOG_ENV)
        if not path:
            return
        line = json.dumps({"key": self.key(spec), "kind": spec.kind, "label": spec.label()}) + "\n"
        with open(path, "a") as handle:
            handle.write(line)

    def _get(self, spec: Spec, progress: bool, trainer_overrides: Mapping | None) -> Artifact:
        key = self.key(spec)
        found = self.store.get(key)
        if found is not None:
            return found
        for needed in spec.inputs():
            self.get(needed, progress=progress)
        extra = self._trainer_extra(spec, trainer_overrides)

        def build(directory: Path) -> dict:
            with self._compute_threads():
                if extra:
                    return spec.build(self, directory, progress, trainer_overrides=trainer_overrides)
                return spec.build(self, directory, progress)

        return self.store.get_or_create(key, build, config=self.manifest_config(spec, **extra), seed=self.config.seed)

    def _get_together(self, spec: Spec, progress: bool, trainer_overrides: Mapping | None,
                      processes: Processes) -> Artifact:
        """:meth:`get` on every process of a launch; every process returns the stored artifact."""
        key = self.key(spec)
        if not isinstance(spec, Stage):
            if processes.is_main_process:
                self.get(spec, progress=progress, trainer_overrides=trainer_overrides)
            processes.wait_for_everyone()
            return self._stored(key, spec)
        found = self.store.get(key)  # a stage is stored only after every process trained it: all agree here
        if found is not None:
            return found
        for needed in spec.inputs():
            self.get(needed, progress=progress, processes=processes)
        extra = self._trainer_extra(spec, trainer_overrides)
        with self._compute_threads(), spec.trained_together(self, processes, progress, trainer_overrides) as write:
            if write is not None:
                self.store.get_or_create(key, write, seed=self.config.seed,
                                         config=self.manifest_config(spec, **extra,
                                                                     num_processes=processes.num_processes))
        processes.wait_for_everyone()
        return self._stored(key, spec)

    def _stored(self, key: str, spec: Spec) -> Artifact:
        found = self.store.get(key)
        if found is None:
            raise FileNotFoundError(f"{spec.label()} ({key}) is not in the store {self.store.root} after the main "
                                    f"process built it: every process of a launch must see one run directory")
        return found

    @staticmethod
    def _trainer_extra(spec: Spec, trainer_overrides: Mapping | None) -> dict:
        if not trainer_overrides:
            return {}
        if not isinstance(spec, Stage):
            raise ConfigError(f"trainer_overrides apply to GRPO stages only, not to {spec.kind}")
        return {"trainer_overrides": dict(trainer_overrides)}

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

    def objective(self, spec: Spec | Artifact):
        """The differentiable objective of an :class:`ObjectiveBatch` spec (its batch built and cached
        first), on :attr:`device` (:meth:`ObjectiveBatch.open`). Introduced in ``02_shared_routes``."""
        spec = as_spec(spec)
        if isinstance(spec, Stored):
            from mdrl_lib.objectives import DomainObjective

            return DomainObjective.from_file(self.get(spec).path / PAIRS_FILE, self.tokenizer, device=self.device)
        return self.open(spec)

    # ---- scores -------------------------------------------------------------------------------

    def item_results(self, what: Spec | Artifact) -> pd.DataFrame:
        """Per-item results (domain, item, prompt, completion, score, details) of a model spec: the
        :class:`Scores` artifact, built once (:meth:`Scores.open`). Introduced in ``04_sequential_rl``."""
        return self.open(Scores(as_spec(what)))

    def scores_of(self, what: Spec | Artifact) -> pd.DataFrame:
        """Held-out scores (domain, n, score, se) of a model spec or artifact, from its cached :class:`Scores`
        (:meth:`Scores.summary`)."""
        spec = Scores(as_spec(what))
        return spec.summary(self.get(spec))

    score = scores_of

    # ---- spec builders ------------------------------------------------------------------------

    def base(self, progress: bool = True) -> Artifact:
        """The base model artifact (see :class:`Base`)."""
        return self.get(Base(), progress=progress)

    def chain_specs(self, order=None, rl_seed: int = 0, **overrides: Any) -> list[Stage]:
        """The specs of each stage of the chain ``order`` (default: the run's), each from the previous one;
        ``overrides`` are :class:`Stage` fields of every stage (``reward``, ``save_every``, ...)."""
        order = self._order(order)
        specs, parent = [], Base()
        for name in order:
            parent = Stage(parent, name, rl_seed=rl_seed, **overrides)
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
