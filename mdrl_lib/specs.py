"""Artifact specs: what the kit's store holds, each spec owning its cache key, its build and its reader.

Introduced in notebook ``00_toy_world``. A spec is a frozen dataclass with a ``kind``: it says which
other artifacts it needs (:meth:`Spec.inputs`), what its key covers (:meth:`Spec.key_fields`), how it is
built (:meth:`Spec.build`) and what a reader gets from the built artifact (:meth:`Spec.open`).
:class:`Base`, :class:`Stage` (GRPO on one domain from a parent), :class:`Refresh`,
:class:`GradientSteps` (plain gradient descent on a domain objective), :class:`Scores` (per-item
results), :class:`ObjectiveBatch` (the fixed sample behind a domain objective) and :class:`Stored` (an
artifact named by its key). :class:`mdrl_lib.kit.Kit` hands them out: ``kit.get(spec)`` builds or finds
the artifact, ``kit.open(spec)`` reads it.

What a key covers: every input that changes an artifact's bytes (the run's settings that the build
reads, the parents' keys, the spec's own fields). What it does not cover: settings that only change how
the same thing is computed (the device, trl's vLLM and DeepSpeed fields, the number of processes);
those are recorded in the manifest. This module imports neither torch nor the kit.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Mapping, Protocol

from mdrl_lib.config import DATA_SOURCES, ConfigError
from mdrl_lib.domains.base import DOMAIN_NAMES, domain_classes, registry_table
from mdrl_lib.domains.toy import WORLD_VERSION
from mdrl_lib.store import Artifact

if TYPE_CHECKING:
    import pandas as pd

    from mdrl_lib.kit import Kit
    from mdrl_lib.objectives import DomainObjective

# The warm-up mixture: each toy domain's ``warmup_weight`` (its class says why; notebook 00, section 4).
TOY_WARMUP_WEIGHTS = registry_table(lambda: {n: c.warmup_weight for n, c in domain_classes("toy").items()})
ITEMS_FILE = "items.jsonl"
PAIRS_FILE = "pairs.jsonl"
SPLITS = ("train", "eval")


class Spec:
    """An artifact's description. Subclasses are frozen dataclasses with a ``kind``; they say which
    other artifacts they need (:meth:`inputs`), what their key covers (:meth:`key_fields`), how they
    are built (:meth:`build`, which writes files into a directory and returns manifest metrics) and what
    a reader gets from the built artifact (:meth:`open`)."""

    kind: ClassVar[str] = ""

    def inputs(self) -> tuple[Spec, ...]:
        return ()

    def key_fields(self, kit: Kit) -> dict:
        raise NotImplementedError

    def build(self, kit: Kit, directory: Path, progress: bool) -> dict:
        raise NotImplementedError

    def open(self, kit: Kit, artifact: Artifact) -> Any:
        """What readers want of this spec's built ``artifact`` (``kit.open(spec)``): the artifact itself
        unless a spec says otherwise."""
        return artifact

    def label(self) -> str:
        """A short human name, e.g. ``base > code > math``."""
        return self.kind

    def toy_seconds(self, config) -> float | None:
        """Estimated seconds to build at toy scale on one thread (for ``plan``'s printout), or ``None`` to
        use the estimate of the spec's kind (:data:`mdrl_lib.plan.TOY_SECONDS`)."""
        return None


@dataclass(frozen=True)
class Base(Spec):
    """The base model: at toy scale built and warmed up on this machine; at full scale the pretrained
    model named by the run's ``model``. Its key covers the scale, seed, model, data and warm-up settings,
    and at toy scale the toy world's version, warm-up mixture and each domain's world settings."""

    kind: ClassVar[str] = "base"

    def key_fields(self, kit: Kit) -> dict:
        config = kit.config
        fields = config.fields_for("model", "data", "warmup")
        # the digit-free world enters through the domains' world settings (only when set: default keys stay)
        fields["data"].pop("digit_free")
        if config.scale == "toy":
            for name in ("max_prompt_tokens", *DATA_SOURCES):
                fields["data"].pop(name)  # the toy scale builds its own short prompts and reads neither
            fields["world"] = WORLD_VERSION
            fields["warmup_weights"] = dict(TOY_WARMUP_WEIGHTS)
            fields["world_settings"] = {n: kit.domain(n).world_settings() for n in DOMAIN_NAMES}
        else:
            fields.pop("warmup")
        return fields

    def build(self, kit: Kit, directory: Path, progress: bool) -> dict:
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


class Processes(Protocol):
    """The processes of one launch that share a stage's build (``Kit.get(spec, processes=...)``; made by
    ``scripts/grpo_stage.py`` from accelerate's state). Every process calls ``kit.get`` alike."""

    is_main_process: bool
    num_processes: int
    rl_config: Any  # one process's share of the run's RL settings (its prompts per step)

    def wait_for_everyone(self) -> None: ...

    def gather(self, model: Any) -> Any:
        """The trained model, whole, on the main process (every process calls it, in the same order)."""

    def metrics(self) -> dict:
        """What a stage's manifest records about the launch."""


@dataclass(frozen=True)
class Stage(Spec):
    """``steps`` GRPO steps on ``domain`` starting from ``parent`` (introduced in ``01_sparse_edits``).

    ``None`` fields take the run's RL settings. ``rl_seed`` varies the RL on one base (the paper's one
    pretrained model, several RL runs); ``lr`` and ``lr_schedule`` override the run's rate and its
    schedule; ``reward`` is ``verifier`` or a control (one of :data:`mdrl_lib.training.REWARD_MODES`:
    ``replayed``, ``permuted``, ``shuffled``, ``random``; see :func:`mdrl_lib.training.overridden_reward`);
    ``save_every`` > 0 also keeps the weights every that many steps (:meth:`Kit.checkpoints_along`);
    ``grpo_options`` are extra trl ``GRPOConfig`` fields that change the algorithm (keyed; fields that only
    change how it runs go to ``Kit.get``'s ``trainer_overrides``, unkeyed). ``replay`` (with ``reward=
    "replayed"`` only, notebook ``04_sequential_rl``'s control) is the real stage, on the same domain, whose
    recorded group rewards the control replays (:meth:`recorded_group_rewards`): an input built first, and in
    the key only when set, so every other stage's key is what it was.

    Every stage stores, beside its weights, the rewards of each call of its reward function, group by group
    (:data:`mdrl_lib.training.GROUP_REWARDS_FILE`; not keyed: the same training writes the same file).
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
    replay: Spec | None = None
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
        if (self.reward == "replayed") != (self.replay is not None):
            raise ConfigError(f"{self.kind} replay: reward 'replayed' needs replay=<the real Stage it replays>, and "
                              f"replay goes with reward 'replayed' only (got reward {self.reward!r}, replay "
                              f"{'set' if self.replay is not None else 'None'})")
        if self.replay is not None:
            if not isinstance(self.replay, Stage):
                raise ConfigError(f"{self.kind} replay: expected a Stage, got {self.replay!r}")
            if self.replay.domain != self.domain:
                raise ConfigError(f"{self.kind} replay: the replayed stage trains {self.replay.domain!r}, this one "
                                  f"{self.domain!r}; replay a stage of the same domain")
        options = dict(self.grpo_options)
        execution = sorted(set(options) & EXECUTION_ONLY_GRPO_FIELDS)
        if execution:
            raise ConfigError(f"{self.kind} grpo_options: {execution} only change how a stage runs; pass them as "
                              f"trainer_overrides to kit.get (they are not part of the cache key)")
        object.__setattr__(self, "grpo_options", tuple(sorted(options.items())))

    def inputs(self) -> tuple[Spec, ...]:
        return (self.parent,) + ((self.replay,) if self.replay is not None else ())

    def resolved_steps(self, kit: Kit) -> int:
        return kit.config.rl.steps if self.steps is None else self.steps

    def rl_config(self, kit: Kit, start=None):
        """The run's RL settings (or ``start``, e.g. one process's share of the batch) with this stage's
        overrides."""
        changes = {k: v for k, v in (("lr", self.lr), ("lr_schedule", self.lr_schedule)) if v is not None}
        return dataclasses.replace(start or kit.config.rl, **changes)

    def key_fields(self, kit: Kit) -> dict:
        rl = dataclasses.asdict(self.rl_config(kit))
        rl.pop("refresh_steps")
        fields = {"parent": kit.key(self.parent), "domain": self.domain, "steps": self.resolved_steps(kit),
                  "rl_seed": self.rl_seed, "rl": rl, "reward": self.reward, "save_every": self.save_every,
                  "grpo_options": dict(self.grpo_options)}
        if kit.config.scale == "toy":
            fields["threads"] = 1  # the toy scale trains on one thread: the bytes depend on it
        if self.replay is not None:
            fields["replay"] = kit.key(self.replay)  # only when set: every other stage's key is unchanged
        return fields

    def recorded_group_rewards(self, kit: Kit) -> list:
        """This stage's rewards per call of its reward function, group by group (``calls`` of its
        :data:`mdrl_lib.training.GROUP_REWARDS_FILE`: a list per call of lists per group of the rewards its
        trainer was given), built first if needed. Raises ``FileNotFoundError`` for a stage stored before stages
        recorded them (or trained on several processes), saying to rebuild it."""
        from mdrl_lib.training import GROUP_REWARDS_FILE

        artifact = kit.get(self)
        path = artifact.path / GROUP_REWARDS_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{self.label()} ({kit.key(self)}) has no recorded group rewards ({GROUP_REWARDS_FILE}): it was built "
                f"before stages recorded them, or on several processes. A replayed control needs them: rebuild that "
                f"stage on one process by deleting {artifact.path} and asking for it again (training is "
                f"deterministic: the same weights come back, and every artifact built from it stays valid)")
        return json.loads(path.read_text())["calls"]

    def seed(self, kit: Kit) -> int:
        """The stage's trainer seed: from the run seed, the RL seed, the parent's key and the domain."""
        from mdrl_lib.training import stage_seed

        return stage_seed(kit.config.seed, f"rl{self.rl_seed}", kit.key(self.parent), self.domain)

    def train(self, kit: Kit, directory: Path | None, progress: bool, trainer_overrides: Mapping | None = None,
              rl_config=None):
        """Train this stage from its parent; returns (model, tokenizer, log). Used by :meth:`build` and, on
        every process of a multi-process run, by :meth:`trained_together` (``rl_config`` then holds the
        per-process batch)."""
        from mdrl_lib.training import grpo

        replay = self.replay.recorded_group_rewards(kit) if self.replay is not None else None
        model, tokenizer = kit.load(self.parent, placement="train")
        along = directory / "along" if (directory is not None and self.save_every) else None
        options = {**dict(self.grpo_options), **dict(trainer_overrides or {})}
        model, log = grpo(model, tokenizer, kit.domain(self.domain), kit.splits(self.domain).train,
                          self.rl_config(kit, rl_config), self.seed(kit), steps=self.resolved_steps(kit),
                          progress=progress, desc=f"RL {self.label()}", reward_mode=self.reward,
                          save_every=self.save_every, save_dir=along, trainer_overrides=options or None,
                          replay=replay)
        return model, tokenizer, log

    def write(self, kit: Kit, model, tokenizer, log, directory: Path, record_rewards: bool = True) -> dict:
        """Store a trained model (both precisions for bf16) and, with ``record_rewards`` (one process: its
        reward calls saw the whole batch), the group rewards of every reward call; return the manifest metrics."""
        from mdrl_lib.training import GROUP_REWARDS_FILE, save_stage

        save_stage(model, tokenizer, directory, kit.config.rl.precision)
        if record_rewards and log.group_rewards.get("given"):
            record = log.group_rewards_record(self.reward, self.rl_config(kit).num_generations)
            (directory / GROUP_REWARDS_FILE).write_text(json.dumps(record, separators=(",", ":")))
        return {"domain": self.domain, "parent": kit.key(self.parent), "precision": kit.config.rl.precision,
                "log": log.to_metrics()}

    def build(self, kit: Kit, directory: Path, progress: bool, trainer_overrides: Mapping | None = None) -> dict:
        model, tokenizer, log = self.train(kit, directory, progress, trainer_overrides)
        return self.write(kit, model, tokenizer, log, directory)

    @contextlib.contextmanager
    def trained_together(self, kit: Kit, processes: Processes, progress: bool,
                         trainer_overrides: Mapping | None = None) -> Iterator[Callable[[Path], dict] | None]:
        """Train this stage on every process of a launch, each on its share of the batch
        (``processes.rl_config``); yields, on the main process, the write its store calls, with the weights
        ``processes.gather`` collected there (None on the others). What ``Kit.get(spec, processes=...)``
        runs for ``scripts/grpo_stage.py`` under ``accelerate launch``."""
        from mdrl_lib.scratch import ALONG_PREFIX, scratch_dir

        main = processes.is_main_process
        if self.replay is not None and processes.num_processes > 1:
            raise ConfigError(f"{self.label()}: a replayed control trains on one process (its reward calls must see "
                              f"the whole batch the replayed stage saw), not {processes.num_processes}")
        scratch = scratch_dir(ALONG_PREFIX) if (self.save_every and main) else None
        try:
            model, tokenizer, log = self.train(kit, scratch, progress, trainer_overrides, rl_config=processes.rl_config)
            model = processes.gather(model)

            def write(directory: Path) -> dict:
                if scratch is not None and (scratch / "along").is_dir():
                    shutil.move(str(scratch / "along"), str(directory / "along"))
                return {**self.write(kit, model, tokenizer, log, directory,
                                     record_rewards=processes.num_processes == 1), **processes.metrics()}

            yield write if main else None
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)

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

    def resolved_steps(self, kit: Kit) -> int:
        return kit.config.rl.refresh_steps if self.steps is None else self.steps


@dataclass(frozen=True)
class GradientSteps(Spec):
    """``steps`` plain gradient-descent steps, theta <- theta - lr * grad L_A(theta), at a constant rate on a
    domain objective (introduced in ``03_perturbation_theory``: the refresh the contraction theorem is
    about). ``objective`` is an :class:`ObjectiveBatch` spec; ``save_every`` keeps
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

    def key_fields(self, kit: Kit) -> dict:
        return {"parent": kit.key(self.parent), "objective": kit.key(self.objective), "steps": self.steps,
                "lr": self.lr, "save_every": self.save_every, "dtype": "fp32"}

    def build(self, kit: Kit, directory: Path, progress: bool) -> dict:
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

    def key_fields(self, kit: Kit) -> dict:
        return {"of": kit.key(self.of), "max_new_tokens": kit.config.rl.max_completion_length,
                "dtype": str(kit.compute_dtype).removeprefix("torch.")}

    def build(self, kit: Kit, directory: Path, progress: bool) -> dict:
        from mdrl_lib.evaluation import score_items, summarize_items

        model, tokenizer = kit.load(self.of)
        self.prepare(model)
        items = score_items(model, tokenizer, kit.evals, max_new_tokens=kit.config.rl.max_completion_length,
                            batch_size=kit.config.compute.eval_batch_size or None)
        with open(directory / ITEMS_FILE, "w") as handle:
            for row in items.to_dict("records"):
                handle.write(json.dumps(row, sort_keys=True) + "\n")
        table = summarize_items(items).set_index("domain")
        return {"scores": table["score"].round(6).to_dict(), "se": table["se"].round(6).to_dict(),
                "n": table["n"].astype(int).to_dict(), "device": str(next(model.parameters()).device)}

    def prepare(self, model) -> None:
        """Change the loaded model before it is scored (a subclass's hook; :class:`Scores` scores it as stored)."""

    def open(self, kit: Kit, artifact: Artifact) -> pd.DataFrame:
        """Per-item results: one row per held-out item (domain, item, prompt, completion, score, details).
        What ``kit.item_results`` returns (notebook ``04_sequential_rl``)."""
        import pandas as pd

        lines = (artifact.path / ITEMS_FILE).read_text().splitlines()
        return pd.DataFrame([json.loads(line) for line in lines])

    def summary(self, artifact: Artifact) -> pd.DataFrame:
        """Each domain's held-out score, standard error and count (domain, n, score, se), from the
        manifest. What ``kit.scores_of`` returns."""
        import pandas as pd

        metrics = artifact.metrics
        return pd.DataFrame([{"domain": d, "n": metrics["n"][d], "score": metrics["scores"][d],
                              "se": metrics["se"][d]} for d in DOMAIN_NAMES])

    def label(self) -> str:
        return f"scores of {self.of.label()}"


@dataclass(frozen=True)
class Stored(Spec):
    """An artifact already in the store, named by its key (what :meth:`Kit.get` returned): lets an
    :class:`~mdrl_lib.store.Artifact` stand wherever a spec is asked for (``Scores(Stored(key))``)."""

    key: str
    kind: ClassVar[str] = "stored"

    def key_fields(self, kit: Kit) -> dict:
        raise AssertionError("a stored artifact's key is its own")

    def build(self, kit: Kit, directory: Path, progress: bool) -> dict:
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
        from mdrl_lib.config import Param

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

    def open(self, kit: Kit, artifact: Artifact) -> DomainObjective:
        """The differentiable objective of the stored batch, on ``kit.device``. What ``kit.objective``
        returns (notebook ``02_shared_routes``)."""
        from mdrl_lib.objectives import DomainObjective

        return DomainObjective.from_file(artifact.path / PAIRS_FILE, kit.tokenizer, device=kit.device)

    def label(self) -> str:
        return f"L_{self.domain} from samples of {self.source.label()}"


SIGNAL_GENERATIONS = 8  # completions per prompt when measuring GRPO's signal, as in a GRPO group
SIGNAL_FILE = "signal.json"
SIGNAL_COLUMNS = {"mixed": "share of mixed groups", "any_right": "share with a full-score sample",
                  "mean_reward": "mean sampled reward"}


@dataclass(frozen=True)
class GroupSignal(Spec):
    """How often GRPO gets a signal from the model ``of``: ``num_generations`` completions sampled (temperature
    1, seeded by the run seed) for every RL training prompt of every domain, scored by the verifier
    (:func:`mdrl_lib.evaluation.mixed_group_share`). A derived artifact (introduced in ``00_toy_world``, read
    again by ``04_sequential_rl``'s precondition check): ``signal.json`` holds, per domain, the share of
    prompts whose group is mixed, the share with a full-score sample and the mean sampled reward."""

    of: Spec
    num_generations: int = SIGNAL_GENERATIONS
    kind: ClassVar[str] = "signal"

    def __post_init__(self) -> None:
        from mdrl_lib.config import Param

        Param(int, "", minimum=2, maximum=256).check("signal num_generations", self.num_generations)

    def inputs(self) -> tuple[Spec, ...]:
        return (self.of,)

    def key_fields(self, kit) -> dict:
        return {"of": kit.key(self.of), "num_generations": self.num_generations, "seed": kit.config.seed,
                "temperature": 1.0, "max_new_tokens": kit.config.rl.max_completion_length,
                "dtype": str(kit.compute_dtype).removeprefix("torch.")}

    def build(self, kit, directory: Path, progress: bool) -> dict:
        from mdrl_lib.evaluation import mixed_group_share

        model, tokenizer = kit.load(self.of)
        shares = {name: mixed_group_share(model, tokenizer, kit.domain(name), kit.splits(name).train,
                                          num_generations=self.num_generations,
                                          max_new_tokens=kit.config.rl.max_completion_length, seed=kit.config.seed)
                  for name in DOMAIN_NAMES}
        (directory / SIGNAL_FILE).write_text(json.dumps(shares, indent=1, sort_keys=True))
        return {"mixed": {name: round(share["mixed"], 6) for name, share in shares.items()}}

    def open(self, kit, artifact):
        """One row per domain (index: domain names, in :data:`DOMAIN_NAMES` order), the columns of
        :data:`SIGNAL_COLUMNS`: share of mixed groups, share with a full-score sample, mean sampled reward."""
        import pandas as pd

        shares = json.loads((artifact.path / SIGNAL_FILE).read_text())
        table = pd.DataFrame({name: shares[name] for name in DOMAIN_NAMES}).T[list(SIGNAL_COLUMNS)]
        return table.rename(columns=SIGNAL_COLUMNS)

    def label(self) -> str:
        return f"GRPO signal of {self.of.label()} ({self.num_generations} samples)"

    def toy_seconds(self, config) -> float:
        return 6.0 * self.num_generations / SIGNAL_GENERATIONS
