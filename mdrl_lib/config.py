"""Scale presets and the validated run configuration built from a notebook's parameters.

Introduced in notebook ``00_toy_world``. Every run parameter is declared once, here: the run
configuration's fields, grouped by topic, with their type, bounds, choices and help in the dataclass
field metadata. A notebook's own options are declared by its recipe (:mod:`mdrl_lib.recipes`). The
notebooks, the CLI and the scripts all validate through these declarations, before any work starts.
Flat names are ``<group>_<field>`` (``rl_lr`` is ``config.rl.lr``), except the top-level ``scale``,
``seed``, ``model``, ``order`` and ``run_dir``. This module imports nothing heavy (no torch), so a
notebook's first cell after its parameters can check them in a fraction of a second.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdrl_lib.domains.base import DOMAIN_NAMES, SCALES

DEFAULT_ORDER: tuple[str, ...] = ("code", "math", "qa", "cw")
TOY_MODELS: tuple[str, ...] = ("toy",)
PAPER_MODEL = "Qwen/Qwen3-4B-Thinking-2507"
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
MAX_SEED = 2**31 - 1
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ConfigError(ValueError):
    """A parameter with a bad value; the message names the field, the value and what is allowed."""


@dataclass(frozen=True)
class Param:
    """One parameter's declaration: its type, bounds or choices, and its help text.

    ``minimum``/``maximum`` are inclusive; ``above`` is an exclusive lower bound (a rate above 0).
    """

    type: type
    help: str
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    choices: tuple | None = None
    number_list: bool = False  # a comma-separated list of numbers, each within the bounds

    def describe(self) -> str:
        """What values are allowed, in words (used in every error message)."""
        if self.number_list:
            if self.type is int:
                return "comma-separated integers, e.g. '0,1,2', each " + Param(int, "", self.minimum,
                                                                               self.maximum).describe()
            return "comma-separated numbers, e.g. '5e-4,1e-5', each " + Param(float, "", self.minimum, self.maximum,
                                                                                self.above).describe()
        if self.choices is not None:
            return f"one of {', '.join(map(str, self.choices))}"
        kind = {int: "an integer", float: "a finite number", str: "a string", bool: "true or false"}[self.type]
        bounds = []
        if self.above is not None:
            bounds.append(f"> {_number(self.above)}")
        if self.minimum is not None:
            bounds.append(f">= {_number(self.minimum)}")
        if self.maximum is not None:
            bounds.append(f"<= {_number(self.maximum)}")
        return kind + (" " + " and ".join(bounds) if bounds else "")

    def check(self, name: str, value: Any) -> Any:
        """``value`` if it is allowed (an int where a float is declared becomes a float), else a
        :class:`ConfigError` naming ``name``, the value and what is allowed."""
        given = value

        def bad() -> ConfigError:
            return ConfigError(f"{name}: expected {self.describe()}, got {given!r} ({type(given).__name__})")

        if self.number_list:  # one number alone (as the CLI and papermill read "1e-5") is a list of one
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise bad()
            parts = [p.strip() for p in str(value).split(",") if p.strip()] if isinstance(value, str) else [value]
            if self.type is int:  # integers (seeds): '' is the empty list, repeats are an error
                try:
                    numbers = [int(p) if isinstance(p, int) else int(str(p), 10) for p in parts]
                except ValueError:
                    raise bad() from None
                item = Param(int, "", self.minimum, self.maximum)
                try:
                    checked = [item.check(name, n) for n in numbers]
                except ConfigError:
                    raise bad() from None
                if len(set(checked)) != len(checked):
                    raise ConfigError(f"{name}: {given!r} names a value more than once; give each once")
                return ",".join(str(n) for n in checked)
            if not parts:
                raise bad()
            item = Param(float, "", self.minimum, self.maximum, self.above)
            checked = []
            for part in parts:
                try:
                    number = float(part)
                except (TypeError, ValueError):
                    raise bad() from None
                try:
                    checked.append(item.check(name, number))
                except ConfigError:
                    raise bad() from None
            return ",".join(f"{x:g}" for x in checked)

        if self.type is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise bad()
        elif self.type is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise bad()
            if not math.isfinite(value):
                raise bad()
            value = float(value)
        elif self.type is str:
            if not isinstance(value, str):
                raise bad()
        elif self.type is bool and not isinstance(value, bool):
            raise bad()
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{name}: unknown value {value!r}; valid choices: {', '.join(map(str, self.choices))}")
        if self.above is not None and not value > self.above:
            raise bad()
        if self.minimum is not None and value < self.minimum:
            raise bad()
        if self.maximum is not None and value > self.maximum:
            raise bad()
        return value


def _number(value: float) -> str:
    """A bound as a reader writes it: 1000000 rather than 1e+06, 0.001 as it is."""
    return str(int(value)) if float(value).is_integer() else repr(value)


def _field(default: Any, help: str, **bounds: Any) -> Any:
    """A dataclass field whose metadata holds its :class:`Param` declaration."""
    return field(default=default, metadata={"param": Param(type(default), help, **bounds)})


@dataclass(frozen=True)
class ModelConfig:
    """The model: a toy preset built offline, or a causal LM id / local directory at full scale."""

    name: str = "toy"
    hidden_size: int = _field(128, "toy model width", minimum=8, maximum=4096)
    num_layers: int = _field(2, "toy model layers", minimum=1, maximum=48)
    num_heads: int = _field(4, "toy attention heads (must divide hidden_size)", minimum=1, maximum=64)
    intermediate_size: int = _field(256, "toy MLP width", minimum=8, maximum=16384)


@dataclass(frozen=True)
class DataConfig:
    """Prompts per domain, prompt truncation and, at full scale, where each domain's data comes from."""

    train_size: int = _field(0, "RL training prompts per domain (0: the domain's default)", minimum=0, maximum=10**7)
    eval_size: int = _field(0, "held-out prompts per domain (0: the domain's default)", minimum=0, maximum=10**7)
    max_prompt_tokens: int = _field(2048, "full scale: prompts are truncated to this many tokens (the toy "
                                    "scale's prompts are a few characters and ignore it)", minimum=16,
                                    maximum=10**6)
    math_source: str = _field("", "full scale: Math training data, a hub id or a local .jsonl/.json/.parquet "
                              "file ('' = OpenR1-Math)")
    math_eval_source: str = _field("", "full scale: Math validation data ('' = AIME25)")
    code_source: str = _field("", "full scale: Code data ('' = KlearReasoner-CodeSub-15K)")
    qa_source: str = _field("", "full scale: QA data ('' = SuperGPQA)")
    cw_source: str = _field("", "full scale: CW data, one source or several joined by ',' "
                            "('' = the Creative-Writing series)")
    digit_free: bool = _field(False, "toy scale: QA and CW write their numbers with letters a-j for the digits "
                              "0-9 ('17 years' -> 'bh years'), so no later domain shares Math's digit outputs "
                              "(a control world of notebook 04; it has its own base)")


# The full-scale data sources, per domain: run parameters (and so part of the keys), kept with the others.
DATA_SOURCES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(DataConfig) if f.name.endswith("_source"))


@dataclass(frozen=True)
class WarmupConfig:
    """Supervised warm-up that gives the toy base partial skill on every domain."""

    steps: int = _field(1800, "supervised warm-up steps of the toy base (0 at full scale)", minimum=0,
                        maximum=10**6)
    lr: float = _field(1e-3, "warm-up learning rate", above=0.0, maximum=1.0)
    batch_size: int = _field(64, "warm-up examples per step", minimum=1, maximum=4096)
    anneal_steps: int = _field(900, "warm-up steps over which the rate decays linearly to 0 at the end",
                               minimum=0, maximum=10**6)


@dataclass(frozen=True)
class RLConfig:
    """GRPO stages: steps per stage and refresh, rate, group shape and precision."""

    steps: int = _field(200, "GRPO steps per stage", minimum=1, maximum=10**6)
    refresh_steps: int = _field(150, "GRPO steps of a refresh", minimum=1, maximum=10**6)
    lr: float = _field(2e-4, "GRPO learning rate (AdamW)", above=0.0, maximum=1.0)
    lr_schedule: str = _field("linear", "rate schedule within a stage (linear decays to 0 at its last step)",
                              choices=("linear", "constant", "cosine"))
    prompts_per_step: int = _field(8, "prompts per optimizer step", minimum=1, maximum=65536)
    num_generations: int = _field(8, "completions sampled per prompt (GRPO needs at least 2)", minimum=2,
                                  maximum=1024)
    max_completion_length: int = _field(24, "completion tokens at most", minimum=1, maximum=10**6)
    temperature: float = _field(1.0, "sampling temperature of GRPO's completions", above=0.0, maximum=100.0)
    kl_beta: float = _field(0.0, "KL weight to the stage's start (0: no reference model)", minimum=0.0,
                            maximum=100.0)
    lora_rank: int = _field(0, "LoRA rank (0: full fine-tuning)", minimum=0, maximum=4096)
    precision: str = _field("fp32", "weights stored in fp32, or bf16 with the fp32 master kept beside them",
                            choices=PRECISIONS)


@dataclass(frozen=True)
class ComputeConfig:
    """Where and in what dtype the kit scores and analyses models (training follows trl's own rules).

    These settings change how a result is computed, not what is computed; only ``dtype`` changes the
    numbers of a score and is part of the cache key of scores and analyses.
    """

    device: str = _field("auto", "device for scoring and analyses (auto: a GPU when there is one)",
                         choices=("auto", "cpu", "cuda"))
    dtype: str = _field("auto", "dtype for scoring and analyses (auto: bf16 on a GPU at full scale, else fp32)",
                        choices=("auto", "fp32", "bf16"))
    eval_batch_size: int = _field(0, "prompts per generation batch (0: sized to the device, halved on "
                                  "out-of-memory)", minimum=0, maximum=65536)


_GROUPS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "warmup": WarmupConfig, "rl": RLConfig,
                            "compute": ComputeConfig}

_TOP_PARAMETERS: dict[str, Param] = {
    "scale": Param(str, "toy (CPU, minutes) or full (the paper's model and data; GPUs)", choices=SCALES),
    "seed": Param(int, "seeds the data splits, the model's initialisation and the warm-up", minimum=0,
                  maximum=MAX_SEED),
    "order": Param(str, f"the chain's domain order, e.g. 'code,math,qa,cw'; domains: {', '.join(DOMAIN_NAMES)}"),
    "run_dir": Param(str, "where checkpoints are cached ('' = runs/<scale>-seed<seed>)"),
    "model": Param(str, "'toy' at toy scale; a causal LM id or local directory at full scale"),
}

PRESETS: dict[str, dict[str, Any]] = {
    "toy": {},
    "full": {
        "model": PAPER_MODEL,
        "data_train_size": 5120,
        "data_eval_size": 50,
        "warmup_steps": 0,
        "rl_steps": 200,
        "rl_refresh_steps": 20,
        "rl_lr": 1e-6,
        "rl_lr_schedule": "constant",
        "rl_prompts_per_step": 32,
        "rl_num_generations": 8,
        "rl_max_completion_length": 4096,
        "rl_kl_beta": 0.0,
        "rl_precision": "bf16",
    },
}


@dataclass(frozen=True)
class RunConfig:
    """A validated run: scale, seed, domain order, run directory and the grouped settings."""

    scale: str = "toy"
    seed: int = 0
    order: tuple[str, ...] = DEFAULT_ORDER
    run_dir: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)

    def __post_init__(self) -> None:
        _TOP_PARAMETERS["scale"].check("scale", self.scale)
        _TOP_PARAMETERS["seed"].check("seed", self.seed)
        _check_order("order", self.order)
        _check_model(self.model.name, self.scale)
        _check_run_dir(self.run_dir)
        for group in _GROUPS:
            settings = getattr(self, group)
            for f in dataclasses.fields(settings):
                if "param" in f.metadata:  # store the checked value: 1 given for a rate is kept as 1.0 (keys agree)
                    checked = f.metadata["param"].check(f"{group}_{f.name}", getattr(settings, f.name))
                    object.__setattr__(settings, f.name, checked)
        if self.scale == "full" and self.warmup.steps:
            raise ConfigError(f"warmup_steps: the full scale starts from a pretrained model and has no warm-up; "
                              f"got {self.warmup.steps}, leave it at 0 (or None)")
        if self.scale == "full" and self.data.digit_free:
            raise ConfigError("data_digit_free: the digit-free world is a toy-scale control; at scale 'full' "
                              "the domains are the paper's datasets, leave it False")
        if self.scale == "toy":
            if self.model.hidden_size % self.model.num_heads:
                raise ConfigError(f"model_num_heads: {self.model.num_heads} must divide model_hidden_size "
                                  f"{self.model.hidden_size}")
            _check_toy_sizes(self.seed, self.data.train_size, self.data.eval_size)
            sources = [n for n in DATA_SOURCES if getattr(self.data, n)]
            if sources:
                raise ConfigError(f"data_{sources[0]}: the toy scale builds its own data; data sources apply at "
                                  f"scale 'full' only, got {getattr(self.data, sources[0])!r}")

    @classmethod
    def from_params(cls, **params: Any) -> "RunConfig":
        """Build a config from flat notebook parameters over the preset of ``scale``.

        Unknown names are an error that lists the valid ones; ``None`` keeps the preset value.
        """
        scale = params.get("scale", "toy")
        scale = "toy" if scale is None else scale
        _TOP_PARAMETERS["scale"].check("scale", scale)
        unknown = sorted(set(params) - set(parameter_names()))
        if unknown:
            raise ConfigError(_unknown_message(unknown, parameter_names()))
        values = {**PRESETS[scale], **{k: v for k, v in params.items() if v is not None}}
        top: dict[str, Any] = {"scale": scale}
        groups: dict[str, dict[str, Any]] = {g: {} for g in _GROUPS}
        for name, value in values.items():
            if name == "model":
                groups["model"]["name"] = value
            elif name in ("seed", "run_dir"):
                top[name] = value
            elif name == "order":
                top["order"] = parse_order(value)
            elif name != "scale":
                group, _, attr = name.partition("_")
                groups[group][attr] = value
        if "run_dir" in top:
            if not isinstance(top["run_dir"], (str, os.PathLike)):
                raise ConfigError(f"run_dir: expected a path string, got {top['run_dir']!r} "
                                  f"({type(top['run_dir']).__name__})")
            top["run_dir"] = str(top["run_dir"])
        built = {g: _GROUPS[g](**kw) for g, kw in groups.items()}
        return cls(**top, **built)

    def to_params(self) -> dict[str, Any]:
        """The flat parameters that rebuild this config (``order`` as a comma string)."""
        out: dict[str, Any] = {"scale": self.scale, "seed": self.seed, "order": ",".join(self.order),
                               "run_dir": self.run_dir, "model": self.model.name}
        for group in _GROUPS:
            for f in dataclasses.fields(getattr(self, group)):
                if not (group == "model" and f.name == "name"):
                    out[f"{group}_{f.name}"] = getattr(getattr(self, group), f.name)
        return out

    def fields_for(self, *groups: str) -> dict[str, Any]:
        """The scale, seed and the named groups' fields: what a cache key is derived from."""
        out: dict[str, Any] = {"scale": self.scale, "seed": self.seed}
        for group in groups:
            out[group] = dataclasses.asdict(getattr(self, group))
        return out

    @property
    def resolved_run_dir(self) -> Path:
        """``run_dir``, or ``$MDRL_RUN_DIR``, or ``runs/<scale>-seed<seed>`` under the current directory."""
        if self.run_dir:
            return Path(self.run_dir).expanduser().resolve()
        env = os.environ.get("MDRL_RUN_DIR")
        if env:
            return Path(env).expanduser().resolve()
        return (Path.cwd() / "runs" / f"{self.scale}-seed{self.seed}").resolve()


def parameter_names() -> list[str]:
    """Every flat run parameter name a notebook may pass to ``RunConfig.from_params``."""
    names = list(_TOP_PARAMETERS)
    for group, cls in _GROUPS.items():
        names += [f"{group}_{f.name}" for f in dataclasses.fields(cls) if not (group == "model" and f.name == "name")]
    return names


def parameter_declarations() -> dict[str, Param]:
    """Every declared run parameter by flat name (a notebook's own options are declared by its recipe,
    :mod:`mdrl_lib.recipes`)."""
    out = dict(_TOP_PARAMETERS)
    for group, cls in _GROUPS.items():
        for f in dataclasses.fields(cls):
            if "param" in f.metadata:
                out[f"{group}_{f.name}"] = f.metadata["param"]
    return out


def parse_order(value: Any) -> tuple[str, ...]:
    """A domain order from ``"code,math,qa,cw"``, ``"code -> math"`` or a list; validated."""
    if isinstance(value, str):
        parts = [p.strip().lower() for p in re.split(r"->|,|\s+", value) if p.strip()]
    elif isinstance(value, (list, tuple)):
        if not all(isinstance(p, str) for p in value):
            raise ConfigError(f"order: expected domain names, got {value!r}; valid domains: {', '.join(DOMAIN_NAMES)}")
        parts = [p.strip().lower() for p in value]
    else:
        raise ConfigError(f"order: expected a string like 'code,math,qa,cw' or a list, got {value!r} "
                          f"({type(value).__name__}); valid domains: {', '.join(DOMAIN_NAMES)}")
    order = tuple(parts)
    _check_order("order", order)
    return order


def _check_order(name: str, order: Any) -> None:
    valid = ", ".join(DOMAIN_NAMES)
    if not isinstance(order, tuple) or not order:
        raise ConfigError(f"{name}: the domain order is empty; give one or more of: {valid}")
    unknown = [d for d in order if d not in DOMAIN_NAMES]
    if unknown:
        raise ConfigError(f"{name}: unknown domain {unknown[0]!r} in {list(order)}; valid domains: {valid}")
    repeated = sorted({d for d in order if order.count(d) > 1})
    if repeated:
        raise ConfigError(f"{name}: domain {repeated[0]!r} appears more than once in {list(order)}; "
                          f"each of {valid} may appear once")


def _check_model(name: Any, scale: str) -> None:
    choices = (f"a toy preset ({', '.join(TOY_MODELS)}), a Hugging Face id such as {PAPER_MODEL!r}, "
               f"or a local directory holding config.json")
    if not isinstance(name, str):
        raise ConfigError(f"model: expected a string, got {name!r} ({type(name).__name__}); valid: {choices}")
    if name in TOY_MODELS:
        if scale == "full":
            raise ConfigError(f"model: {name!r} is the toy model; at scale 'full' give a Hugging Face id such as "
                              f"{PAPER_MODEL!r} or a local directory holding config.json")
        return
    if scale == "toy":
        raise ConfigError(f"model: {name!r} is not a toy model; at scale 'toy' valid models: "
                          f"{', '.join(TOY_MODELS)} (use scale='full' for {name!r})")
    if Path(name).expanduser().is_dir():
        if not (Path(name).expanduser() / "config.json").is_file():
            raise ConfigError(f"model: directory {name!r} has no config.json; valid: {choices}")
        return
    if not _HUB_ID.match(name):
        raise ConfigError(f"model: unknown model name {name!r}; valid: {choices}")


def _check_run_dir(run_dir: Any) -> None:
    """A run directory must be a directory we can write to, or creatable: checked before any work."""
    if not isinstance(run_dir, str):
        raise ConfigError(f"run_dir: expected a path string, got {run_dir!r} ({type(run_dir).__name__})")
    if not run_dir:
        return
    path = Path(run_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"run_dir: {run_dir!r} is a file, not a directory; give a directory path "
                          f"(it is created if missing)")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"run_dir: {run_dir!r} lies under {str(existing)!r}, which is a file, not a directory; "
                          f"give a directory path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"run_dir: {run_dir!r} is not writable (no write permission on {str(existing)!r}); "
                          f"give a directory you can write to")


def _check_toy_sizes(seed: int, train_size: int, eval_size: int) -> None:
    """Toy domains have a fixed number of distinct prompts: a size that does not fit names its field."""
    from mdrl_lib.domains.base import get_domain

    for name in DOMAIN_NAMES:
        domain = get_domain(name, "toy")
        train, held_out = train_size or domain.default_sizes[0], eval_size or domain.default_sizes[1]
        try:
            domain.build_splits(seed, train, held_out)
        except ValueError as error:
            field_name = "data_train_size" if train_size else "data_eval_size"
            raise ConfigError(f"{field_name}: {train_size or eval_size} does not fit the toy {name} domain "
                              f"({error})") from None


def _unknown_message(unknown: list[str], valid: list[str]) -> str:
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, valid, n=1)
        parts.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return f"unknown parameter {', '.join(parts)}; valid parameters: {', '.join(valid)}"
