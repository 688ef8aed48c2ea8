"""Scale presets and the validated run configuration built from a notebook's parameters.

Introduced in notebook ``00_toy_world``. Every notebook's parameters cell holds flat literals;
``RunConfig.from_params(**params)`` checks each of them before any work starts and groups them by
topic. Flat names are ``<group>_<field>`` (``rl_lr`` is ``config.rl.lr``), except the top-level
``scale``, ``seed``, ``model``, ``order`` and ``run_dir``.
"""
from __future__ import annotations

import dataclasses
import difflib
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
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ConfigError(ValueError):
    """A parameter with a bad value; the message names the field, the value and the valid choices."""


@dataclass(frozen=True)
class ModelConfig:
    """The model: a toy preset built offline, or a causal LM id / local directory at full scale."""

    name: str = "toy"
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 256


@dataclass(frozen=True)
class DataConfig:
    """Prompts per domain for training and evaluation; 0 takes each domain's default size."""

    train_size: int = 0
    eval_size: int = 0
    max_prompt_chars: int = 64


@dataclass(frozen=True)
class WarmupConfig:
    """Supervised warm-up that gives the toy base partial skill on every domain."""

    steps: int = 3400
    lr: float = 3e-3
    batch_size: int = 64


@dataclass(frozen=True)
class RLConfig:
    """GRPO stages: steps per stage and refresh, rate, group shape and precision."""

    steps: int = 200
    refresh_steps: int = 150
    lr: float = 5e-4
    lr_schedule: str = "linear"
    prompts_per_step: int = 8
    num_generations: int = 8
    max_completion_length: int = 24
    temperature: float = 1.0
    kl_beta: float = 0.0
    lora_rank: int = 0
    precision: str = "fp32"


_GROUPS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "warmup": WarmupConfig, "rl": RLConfig}

PRESETS: dict[str, dict[str, Any]] = {
    "toy": {},
    "full": {
        "model": PAPER_MODEL,
        "data_train_size": 5120,
        "data_eval_size": 50,
        "data_max_prompt_chars": 8192,
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

_CHOICES: dict[str, tuple[str, ...]] = {
    "scale": SCALES,
    "rl_precision": PRECISIONS,
    "rl_lr_schedule": ("linear", "constant", "cosine"),
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

    def __post_init__(self) -> None:
        _check_choice("scale", self.scale)
        _check_int("seed", self.seed, minimum=0)
        _check_order("order", self.order)
        _check_model(self.model.name, self.scale)
        if self.scale == "full" and self.warmup.steps:
            raise ConfigError(f"warmup_steps: the full scale starts from a pretrained model and has no warm-up; "
                              f"got {self.warmup.steps}, leave it at 0 (or None)")
        for group in ("model", "data", "warmup", "rl"):
            for f in dataclasses.fields(getattr(self, group)):
                _check_field(group, f, getattr(getattr(self, group), f.name))

    @classmethod
    def from_params(cls, **params: Any) -> "RunConfig":
        """Build a config from flat notebook parameters over the preset of ``scale``.

        Unknown names are an error that lists the valid ones; ``None`` keeps the preset value.
        """
        scale = params.get("scale", "toy")
        _check_choice("scale", scale)
        unknown = sorted(set(params) - set(parameter_names()))
        if unknown:
            raise ConfigError(_unknown_message(unknown))
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
                raise ConfigError(f"run_dir: expected a path string, got {top['run_dir']!r}")
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
    """Every flat parameter name a notebook may pass to ``RunConfig.from_params``."""
    names = ["scale", "seed", "order", "run_dir", "model"]
    for group, cls in _GROUPS.items():
        names += [f"{group}_{f.name}" for f in dataclasses.fields(cls) if not (group == "model" and f.name == "name")]
    return names


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


def _check_choice(name: str, value: Any) -> None:
    choices = _CHOICES[name]
    if value not in choices:
        raise ConfigError(f"{name}: unknown value {value!r}; valid choices: {', '.join(choices)}")


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}: expected an integer >= {minimum}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ConfigError(f"{name}: expected an integer >= {minimum}, got {value}")


_POSITIVE = {"model_hidden_size", "model_num_layers", "model_num_heads", "model_intermediate_size",
             "data_max_prompt_chars", "warmup_batch_size",
             "rl_prompts_per_step", "rl_max_completion_length"}


def _check_field(group: str, f: dataclasses.Field, value: Any) -> None:
    name = f"{group}_{f.name}"
    if name == "model_name":
        return
    if name in _CHOICES:
        _check_choice(name, value)
    elif f.type in ("int", int):
        _check_int(name, value, minimum=1 if name in _POSITIVE else 0)
    elif f.type in ("float", float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0:
            raise ConfigError(f"{name}: expected a non-negative number, got {value!r} ({type(value).__name__})")
    elif f.type in ("str", str) and not isinstance(value, str):
        raise ConfigError(f"{name}: expected a string, got {value!r} ({type(value).__name__})")
    if name == "rl_num_generations" and value < 2:
        raise ConfigError(f"rl_num_generations: GRPO needs at least 2 completions per prompt, got {value}")


def _unknown_message(unknown: list[str]) -> str:
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, parameter_names(), n=1)
        parts.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return (f"unknown parameter {', '.join(parts)}; valid parameters: {', '.join(parameter_names())}")

