"""The kit: one object per run that hands out cached artifacts (the base model, later experts,
chains and refreshes) from the run directory's store.

Introduced in notebook ``00_toy_world``. Every notebook starts with
``kit = open_kit(RunConfig.from_params(...))``; asking for an artifact returns the cached checkpoint
or builds and stores it, so any notebook runs alone and running them in order builds each thing once.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from functools import cached_property
from pathlib import Path

import pandas as pd
import torch

from mdrl_lib.config import ConfigError, RunConfig, parse_order
from mdrl_lib.domains.base import DOMAIN_NAMES, Domain, Splits, get_domain
from mdrl_lib.domains.toy import WORLD_VERSION
from mdrl_lib.store import Artifact, Store, cache_key
from mdrl_lib.training import stage_seed

# The toy base must know Math best (GRPO finds nothing to climb below about 0.3); Code needs practice,
# and QA's facts must be recalled almost perfectly, or a QA stage overwrites the held-out facts while it
# memorises its own; CW's form is learned fastest. See notebook 00, section 4.
TOY_WARMUP_WEIGHTS = {"math": 4.0, "code": 2.0, "qa": 2.0, "cw": 1.0}
TOY_ANNEAL_STEPS = 400


def quiet_libraries() -> None:
    """Silence transformers' and datasets' progress bars and info logs (the kit shows its own)."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("datasets").setLevel(logging.ERROR)


class Kit:
    """Artifacts of one run configuration, cached under ``<run_dir>/store``."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.run_dir = config.resolved_run_dir
        self.store = Store(self.run_dir / "store")
        self._domains: dict[str, Domain] = {}
        self._splits: dict[str, Splits] = {}
        quiet_libraries()

    def domain(self, name: str) -> Domain:
        """The domain ``name`` at this run's scale."""
        if name not in self._domains:
            self._domains[name] = get_domain(name, self.config.scale)
        return self._domains[name]

    def splits(self, name: str) -> Splits:
        """Train, eval and warm-up examples of ``name``, by the run's seed and sizes (0 = domain default)."""
        if name not in self._splits:
            domain = self.domain(name)
            train = self.config.data.train_size or domain.default_sizes[0]
            held_out = self.config.data.eval_size or domain.default_sizes[1]
            self._splits[name] = domain.build_splits(self.config.seed, train, held_out)
        return self._splits[name]

    @cached_property
    def evals(self) -> dict[str, tuple[Domain, list]]:
        """Each domain with its eval examples, as :func:`mdrl_lib.evaluation.score_domains` takes them."""
        return {n: (self.domain(n), self.splits(n).eval) for n in DOMAIN_NAMES}

    def base_fields(self) -> dict:
        """What the base depends on: scale, seed, model, data and warm-up settings, and at toy scale
        the toy world's version and each domain's :meth:`Domain.world_settings` (so a changed world
        never reuses an old base)."""
        fields = self.config.fields_for("model", "data", "warmup")
        if self.config.scale == "toy":
            fields["world"] = WORLD_VERSION
            fields["world_settings"] = {n: self.domain(n).world_settings() for n in DOMAIN_NAMES}
        return fields

    def base_key(self) -> str:
        return cache_key("base", self.base_fields())

    def base(self, progress: bool = True) -> Artifact:
        """The base model: at toy scale built and warmed up here; at full scale the pretrained model."""
        return self.store.get_or_create(self.base_key(), lambda d: self._build_base(d, progress),
                                        config=self.base_fields(), seed=self.config.seed)

    def _build_base(self, directory: Path, progress: bool) -> dict:
        with self._compute_threads():
            return self._warm_up_base(directory, progress)

    def _warm_up_base(self, directory: Path, progress: bool) -> dict:
        from mdrl_lib.evaluation import score_domains
        from mdrl_lib.models import build_toy_model, build_toy_tokenizer, parameter_count, save_model
        from mdrl_lib.training import warmup

        if self.config.scale == "full":
            (directory / "source.json").write_text(json.dumps({"model": self.config.model.name}))
            return {"model": self.config.model.name}
        tokenizer = build_toy_tokenizer()
        model = build_toy_model(self.config.model, tokenizer, self.config.seed)
        pairs = {n: self.domain(n).warmup_pairs(self.splits(n)) for n in DOMAIN_NAMES}
        log = warmup(model, tokenizer, pairs, steps=self.config.warmup.steps, lr=self.config.warmup.lr,
                     batch_size=self.config.warmup.batch_size, seed=self.config.seed,
                     weights=TOY_WARMUP_WEIGHTS, anneal_steps=TOY_ANNEAL_STEPS, progress=progress)
        save_model(model, tokenizer, directory)
        scores = score_domains(model, tokenizer, self.evals, max_new_tokens=self.config.rl.max_completion_length)
        return {"parameters": parameter_count(model), "warmup_seconds": round(log.seconds, 2),
                "warmup_losses": [round(x, 4) for x in log.losses], "warmup_loss_every": log.every,
                "scores": scores.set_index("domain")["score"].round(4).to_dict()}

    def load(self, artifact: Artifact, dtype: torch.dtype = torch.float32):
        """(model, tokenizer) of a model artifact; a full-scale base loads its model id."""
        from mdrl_lib.models import load_model

        source = artifact.path / "source.json"
        target = json.loads(source.read_text())["model"] if source.is_file() else artifact.path
        return load_model(target, dtype=dtype)

    def score(self, artifact: Artifact) -> pd.DataFrame:
        """Greedy held-out scores of every domain for a model artifact (domain, n, score, se)."""
        from mdrl_lib.evaluation import score_domains

        model, tokenizer = self.load(artifact)
        with self._compute_threads():
            return score_domains(model, tokenizer, self.evals, max_new_tokens=self.config.rl.max_completion_length)


    # ---- RL artifacts: experts (01_sparse_edits), chains and the score matrix (04_sequential_rl),
    # ---- refreshes (05_refresh_vs_rollback) ------------------------------------------------------

    def rl_fields(self) -> dict:
        """The RL settings a stage's checkpoint depends on (``refresh_steps`` only keys refreshes)."""
        fields = dataclasses.asdict(self.config.rl)
        fields.pop("refresh_steps")
        return fields

    def stage_key(self, prefix: tuple[str, ...]) -> str:
        """Cache key of the checkpoint after the stages ``prefix`` (a chain's order prefix) from the base."""
        return cache_key("rl", {"base": self.base_key(), "rl": self.rl_fields(), "order": list(prefix)})

    def expert(self, domain: str, progress: bool = True) -> Artifact:
        """The single-domain expert: one GRPO stage of ``rl.steps`` on ``domain`` from the base.

        Introduced in ``01_sparse_edits``. It is the first stage of any chain that starts with
        ``domain``, so the two share one stored checkpoint.
        """
        return self.chain((self._check_domain(domain),), progress=progress)[0]

    def chain(self, order=None, progress: bool = True) -> list[Artifact]:
        """Checkpoints after each stage of the sequential chain ``order`` (default: the run's order).

        Introduced in ``04_sequential_rl``. Stage ``i`` is ``rl.steps`` GRPO steps on ``order[i]`` from
        stage ``i-1`` (stage 0 from the base); each is stored under :meth:`stage_key` of its order
        prefix, with its training log and every domain's held-out scores in its metrics. A chain killed
        part-way resumes from its last finished stage; a finished chain is served from the store.
        """
        order = self._order(order)
        with self._compute_threads():
            parent = self.base(progress=progress)
            stages = []
            for index, name in enumerate(order):
                prefix = order[:index + 1]
                desc = f"RL {index + 1}/{len(order)} {self.domain(name).title}"
                stage = self._rl_stage(self.stage_key(prefix), parent, name, self.config.rl.steps,
                                       stage_seed(self.config.seed, *prefix), desc, progress,
                                       {"kind": "stage", "order": list(prefix)})
                stages.append(stage)
                parent = stage
        return stages

    def refreshed(self, domain: str, steps: int | None = None, order=None, progress: bool = True) -> Artifact:
        """A short GRPO refresh on ``domain`` from the end of the chain ``order``.

        Introduced in ``05_refresh_vs_rollback``. ``steps`` defaults to ``rl.refresh_steps``; the rate
        and its schedule are the chain's (a linear schedule decays within the refresh too).
        """
        domain = self._check_domain(domain)
        order = self._order(order)
        steps = self.config.rl.refresh_steps if steps is None else steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"refresh steps: expected an integer >= 1, got {steps!r}")
        end = self.chain(order, progress=progress)[-1]
        key = cache_key("refresh", {"from": end.key, "domain": domain, "steps": steps})
        with self._compute_threads():
            return self._rl_stage(key, end, domain, steps, stage_seed(self.config.seed, "refresh", *order, domain,
                                                                    str(steps)),
                                  f"Re-{self.domain(domain).title} refresh", progress,
                                  {"kind": "refresh", "order": list(order), "domain": domain, "steps": steps})

    def scores_of(self, artifact: Artifact) -> pd.DataFrame:
        """Held-out scores (domain, n, score, se) of a model artifact, from its metrics when an RL stage
        stored them, otherwise computed once and cached as a ``scores`` artifact. Introduced in ``04``."""
        metrics = artifact.metrics
        if not all(k in metrics for k in ("scores", "se", "n")):
            key = cache_key("scores", {"of": artifact.key, "max_new_tokens": self.config.rl.max_completion_length})

            def build(_directory: Path) -> dict:
                with self._compute_threads():
                    return _score_metrics(self.score(artifact))

            metrics = self.store.get_or_create(key, build, config={"of": artifact.key},
                                               seed=self.config.seed).metrics
        return pd.DataFrame([{"domain": d, "n": metrics["n"][d], "score": metrics["scores"][d],
                              "se": metrics["se"][d]} for d in DOMAIN_NAMES])

    def score_matrix(self, order=None, progress: bool = True) -> pd.DataFrame:
        """The stage x domain matrix of held-out scores along the chain ``order``.

        Introduced in ``04_sequential_rl``. Rows: ``base``, then the domain trained in each stage in
        order; columns: every domain. Trains what the chain lacks; scores come from the stages'
        metrics, so a second request takes seconds. ``.attrs["se"]`` holds the matching standard errors.
        """
        order = self._order(order)
        stages = self.chain(order, progress=progress)  # builds the base first if needed, on one thread
        artifacts = [self.base(progress=progress), *stages]
        frames = {stage: self.scores_of(a) for stage, a in zip(("base", *order), artifacts)}
        from mdrl_lib.evaluation import stage_matrix

        matrix = stage_matrix(frames)[list(DOMAIN_NAMES)]
        se = stage_matrix({s: f.assign(score=f["se"]) for s, f in frames.items()})[list(DOMAIN_NAMES)]
        matrix.attrs["se"] = se
        return matrix

    def _order(self, order) -> tuple[str, ...]:
        return self.config.order if order is None else parse_order(order)

    @staticmethod
    def _check_domain(name) -> str:
        if not isinstance(name, str) or name.strip().lower() not in DOMAIN_NAMES:
            raise ConfigError(f"domain: unknown domain {name!r}; valid domains: {', '.join(DOMAIN_NAMES)}")
        return name.strip().lower()

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

    def _rl_stage(self, key: str, parent: Artifact, domain: str, steps: int, seed: int, desc: str,
                  progress: bool, describe: dict) -> Artifact:
        found = self.store.get(key)
        if found is not None:
            return found
        config = {**describe, "base": self.base_key(), "parent": parent.key, "rl": self.rl_fields(),
                  "steps": steps, "stage_seed": seed, "run": self.base_fields()}
        return self.store.get_or_create(
            key, lambda directory: self._build_stage(directory, parent, domain, steps, seed, desc, progress),
            config=config, seed=self.config.seed)

    def _build_stage(self, directory: Path, parent: Artifact, domain: str, steps: int, seed: int, desc: str,
                     progress: bool) -> dict:
        """Train one GRPO stage from ``parent``, store it (both precisions for bf16) and score it."""
        from mdrl_lib.evaluation import score_domains
        from mdrl_lib.training import grpo, save_stage

        model, tokenizer = self.load(parent)
        model, log = grpo(model, tokenizer, self.domain(domain), self.splits(domain).train, self.config.rl, seed,
                          steps=steps, progress=progress, desc=desc)
        save_stage(model, tokenizer, directory, self.config.rl.precision)
        scores = score_domains(model, tokenizer, self.evals, max_new_tokens=self.config.rl.max_completion_length)
        return {"domain": domain, "parent": parent.key, "precision": self.config.rl.precision,
                "log": log.to_metrics(), **_score_metrics(scores)}


def _score_metrics(scores: pd.DataFrame) -> dict:
    """``score_domains`` output as manifest metrics: per-domain ``scores``, ``se`` and ``n``."""
    table = scores.set_index("domain")
    return {"scores": table["score"].round(6).to_dict(), "se": table["se"].round(6).to_dict(),
            "n": table["n"].astype(int).to_dict()}


def open_kit(config: RunConfig) -> Kit:
    """The kit for ``config``: opens (or creates) its run directory."""
    return Kit(config)
