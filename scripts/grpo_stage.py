#!/usr/bin/env python
"""Train the kit's GRPO artifacts from the command line, on one process or several under ``accelerate launch``.

``--domain D`` trains the single-domain expert (notebook ``01_sparse_edits``); ``--order a,b,...`` the
sequential chain (notebook ``04_sequential_rl``), resuming after its last stored stage; ``--order ...
--refresh D`` also the refresh on ``D`` from the chain's end (notebook ``05_refresh_vs_rollback``).
``--rl-seed``, ``--reward`` (a control's rewards, see below) and ``--save-every`` (checkpoints
along each stage, notebook ``03``) select the other artifacts the notebooks ask for. Every artifact is
the kit's own spec (:class:`mdrl_lib.specs.Stage` / :class:`~mdrl_lib.specs.Refresh`, from
``kit.chain_specs``), built by ``kit.get`` and stored under its key: the notebooks find these
checkpoints and do not train them again. The run parameters are the notebooks' own (``--rl-steps`` is
``rl_steps``): the flags are made from the kit's single parameter declaration (``mdrl_lib.config``),
with its checks.

    python scripts/grpo_stage.py --domain math --warmup-steps 300 --rl-steps 20
    accelerate launch --config_file configs/accelerate/cpu_2proc.yaml scripts/grpo_stage.py \\
        --domain cw --warmup-steps 80 --rl-steps 4 --rl-prompts-per-step 4 --rl-num-generations 4
    accelerate launch --config_file configs/accelerate/multi_gpu_zero3.yaml scripts/grpo_stage.py \\
        --scale full --order code,math,qa,cw --refresh math --grpo-overrides configs/grpo_full.yaml

``--grpo-overrides`` holds extra trl ``GRPOConfig`` fields. Fields that only change how a stage runs
(vLLM, DeepSpeed gathering, micro-batching, activation checkpointing: ``EXECUTION_ONLY_GRPO_FIELDS``
in ``mdrl_lib.training``) are recorded in the manifest and not keyed, so a stage trained on eight GPUs
with vLLM is the one a notebook asks for; any other field changes the algorithm, becomes part of the
stage's spec (``grpo_options``) and of its key, and a notebook asking for the plain stage will not
find it.

Several processes share one stage: ``--rl-prompts-per-step`` counts prompts per optimizer step over all
processes, so each process samples ``prompts_per_step / num_processes`` prompts x ``num_generations``
completions (trl's per-device batch counts completions) and the stage sees the same batch as on one
process. Every process calls ``kit.get(stage, processes=...)`` with the launch (:class:`Launch`): every
process trains, only the main process writes (it builds the base while the others wait, and it stores
each stage). The run directory must be on a file system all processes see.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mdrl_lib.config import ConfigError, RunConfig, parameter_declarations, parse_order  # noqa: E402  (light: no torch)
from mdrl_lib.domains.base import DOMAIN_NAMES  # noqa: E402

# GRPOConfig fields the kit sets from the run config (or derives); an overrides file may not set them.
KIT_OWNED_FIELDS: dict[str, str] = {
    "output_dir": "the kit trains in a temporary directory",
    "max_steps": "use --rl-steps",
    "learning_rate": "use --rl-lr",
    "lr_scheduler_type": "use --rl-lr-schedule",
    "num_generations": "use --rl-num-generations",
    "max_completion_length": "use --rl-max-completion-length",
    "temperature": "use --rl-temperature",
    "beta": "use --rl-kl-beta",
    "seed": "use --seed and --rl-seed",
    "data_seed": "use --seed and --rl-seed",
    "bf16": "use --rl-precision",
    "fp16": "use --rl-precision",
    "use_cpu": "chosen from the hardware",
    "per_device_train_batch_size": "derived: prompts_per_step x num_generations / processes / "
                                   "gradient_accumulation_steps",
    "generation_batch_size": "derived: prompts_per_step x num_generations",
    "gradient_checkpointing": "use activation_checkpointing (transformers 5's name; the kit sets it, which "
                              "silently wins over the old alias)",
    "steps_per_generation": "derived: equal to gradient_accumulation_steps",
}


class UsageError(Exception):
    """A bad flag or overrides file, reported as one line with exit status 2."""


def flag_of(name: str) -> str:
    """The flag of a run parameter: ``rl_steps`` -> ``--rl-steps``."""
    return "--" + name.replace("_", "-")


_TYPES = {int: int, float: float, str: str}


def build_parser() -> argparse.ArgumentParser:
    from mdrl_lib.training import REWARD_MODES

    parser = argparse.ArgumentParser(
        prog="scripts/grpo_stage.py",
        description="Train the kit's GRPO artifacts (an expert of notebook 01, a chain of notebook 04, a refresh of "
                    "notebook 05) and store them in the run directory where the notebooks look for them. Works alone "
                    "or under `accelerate launch`. Flags left out keep the scale's preset.",
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--domain", choices=DOMAIN_NAMES, help="train the single-domain expert of this domain")
    target.add_argument("--order", help="train the chain of these domains in order, e.g. code,math,qa,cw")
    parser.add_argument("--refresh", choices=DOMAIN_NAMES, default=None,
                        help="with --order: also the refresh on this domain from the chain's end (rl_refresh_steps)")
    parser.add_argument("--rl-seed", type=int, default=0, help="RL seed: several RL runs on one base (default: 0)")
    parser.add_argument("--reward", choices=[m for m in REWARD_MODES if m != "replayed"], default="verifier",
                        help="the verifier's reward, or an older control: permuted (the stage's own verifier rewards "
                             "permuted within each prompt's group), shuffled (across each step's batch) or random (0 or "
                             "1 at even odds). Notebook 04's control, 'replayed' (the real stage's recorded group "
                             "rewards, permuted within each group), needs the real stage as an input and is built by "
                             "the notebook or `python -m mdrl_lib plan --build` (default: verifier)")
    parser.add_argument("--save-every", type=int, default=0,
                        help="also keep the weights every N steps of each stage (notebook 03; default: 0, none)")
    group = parser.add_argument_group("run parameters (the notebooks' own; see `python -m mdrl_lib params`)")
    for name, param in parameter_declarations().items():
        if name == "order":
            continue
        group.add_argument(flag_of(name), dest=name, type=_TYPES.get(param.type, str), default=None,
                           metavar=param.type.__name__.upper(), help=param.help)
    group = parser.add_argument_group("how the stages run")
    group.add_argument("--grpo-overrides", type=Path, default=None, metavar="YAML",
                       help="extra trl GRPOConfig fields (e.g. configs/grpo_full.yaml: vLLM, checkpointing)")
    group.add_argument("--skip-scores", action="store_true",
                       help="do not score every domain after each stage (default: score at toy scale only)")
    group.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def run_config(args: argparse.Namespace) -> RunConfig:
    """The validated RunConfig of the flags (``None`` keeps the scale's preset)."""
    params = {name: getattr(args, name) for name in parameter_declarations() if hasattr(args, name)}
    return RunConfig.from_params(**params)


def flag_message(error: ConfigError) -> str:
    """The config error's message naming the flag rather than the notebook parameter behind it."""
    message = str(error)
    name = message.split(":", 1)[0]
    if name in parameter_declarations():
        return f"{flag_of(name)}{message[len(name):]}"
    return message


def load_grpo_overrides(path: Path | None) -> dict[str, Any]:
    """The GRPOConfig fields of a YAML mapping, checked against trl's GRPOConfig (names and value types)."""
    if path is None:
        return {}
    if not path.is_file():
        raise UsageError(f"--grpo-overrides: no such file {path}")
    import yaml
    from trl import GRPOConfig

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise UsageError(f"--grpo-overrides: {path} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise UsageError(f"--grpo-overrides: {path} must hold a mapping of GRPOConfig fields, "
                         f"got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(GRPOConfig) if f.init}
    for name, value in data.items():
        if name not in fields:
            close = difflib.get_close_matches(str(name), list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UsageError(f"--grpo-overrides: {name!r} in {path} is not a field of trl's GRPOConfig{hint}")
        if name in KIT_OWNED_FIELDS:
            raise UsageError(f"--grpo-overrides: {name!r} in {path} is set by the kit ({KIT_OWNED_FIELDS[name]})")
        _check_override_type(path, name, value, fields[name].default)
    if data.get("vllm_mode", "colocate") not in ("colocate", "server"):
        raise UsageError(f"--grpo-overrides: vllm_mode in {path} must be 'colocate' or 'server', "
                         f"got {data['vllm_mode']!r}")
    return dict(data)


def _check_override_type(path: Path, name: str, value: Any, default: Any) -> None:
    if default is None or default is dataclasses.MISSING or value is None:
        return
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    else:
        ok = True
    if not ok:
        raise UsageError(f"--grpo-overrides: {name} in {path} expects a {type(default).__name__} "
                         f"(trl's default is {default!r}), got {value!r}")


def per_process_batch(config: RunConfig, num_processes: int, overrides: dict[str, Any]):
    """(RLConfig for one process, GRPOConfig overrides): the global prompts per step split over processes,
    and with ``gradient_accumulation_steps`` the per-device batch split into that many micro-batches."""
    prompts, generations = config.rl.prompts_per_step, config.rl.num_generations
    if prompts % num_processes:
        raise UsageError(f"--prompts-per-step {prompts} must divide by the number of processes ({num_processes}), "
                         f"so that every process samples whole prompts")
    local = dataclasses.replace(config.rl, prompts_per_step=prompts // num_processes)
    overrides = dict(overrides)
    accumulation = overrides.get("gradient_accumulation_steps", 1)
    completions = local.prompts_per_step * generations
    if accumulation < 1 or completions % accumulation:
        raise UsageError(f"gradient_accumulation_steps {accumulation} must divide the completions per process "
                         f"({local.prompts_per_step} prompts x {generations} generations = {completions})")
    if accumulation > 1:
        overrides["per_device_train_batch_size"] = completions // accumulation
    return local, overrides


def split_overrides(overrides: dict[str, Any]) -> tuple[dict[str, Any], tuple[tuple[str, Any], ...]]:
    """(execution-only fields: unkeyed trainer overrides, the rest: the stages' keyed ``grpo_options``)."""
    from mdrl_lib.training import EXECUTION_ONLY_GRPO_FIELDS

    execution = {k: v for k, v in overrides.items() if k in EXECUTION_ONLY_GRPO_FIELDS}
    keyed = tuple(sorted((k, v) for k, v in overrides.items() if k not in EXECUTION_ONLY_GRPO_FIELDS))
    return execution, keyed


def zero3_state(model, is_main: bool) -> dict | None:
    """Under DeepSpeed ZeRO-3, every parameter whole and in fp32 on the main process's CPU (an empty dict on
    the others; every process must call it, in the same order). The values are DeepSpeed's fp32 master copy
    while its optimizer still holds it, else the gathered 16-bit weights. None when nothing is sharded."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    if not is_deepspeed_zero3_enabled():
        return None
    import deepspeed
    from deepspeed.utils import safe_get_full_fp32_param

    state = {}
    for name, param in model.named_parameters():
        full = safe_get_full_fp32_param(param)
        if full is None:
            with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
                full = param.detach().float().clone()
        if is_main:
            state[name] = full.cpu()
    return state


def cpu_copy(model, state: dict):
    """A CPU model of ``model``'s class and config holding ``state`` (built on the meta device: no
    random initialisation); tied weights are tied again."""
    import torch

    with torch.device("meta"):
        copy = type(model)(model.config)
    copy.load_state_dict(state, strict=False, assign=True)
    copy.tie_weights()
    missing = [name for name, param in copy.named_parameters() if param.is_meta]
    if missing:
        raise RuntimeError(f"the gathered weights lack {missing[:3]}")
    copy.generation_config = model.generation_config
    return copy.eval()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = run_config(args)
        if args.refresh and not args.order:
            raise UsageError("--refresh needs --order: a refresh starts from the end of a chain")
        if args.save_every < 0:
            raise UsageError(f"--save-every: expected an integer >= 0, got {args.save_every}")
        order = (args.domain,) if args.domain else parse_order(args.order)
        overrides = load_grpo_overrides(args.grpo_overrides)
        return run_stages(args, config, order, overrides)
    except (ConfigError, UsageError) as error:
        if os.environ.get("RANK", "0") == "0":  # under a launcher every process fails alike; say it once
            print(f"error: {flag_message(error) if isinstance(error, ConfigError) else error}", file=sys.stderr)
        return 2


def stage_specs(kit, args: argparse.Namespace, order: tuple[str, ...], grpo_options: tuple) -> list:
    """The kit specs this invocation trains, in order (each the parent of the next): the kit's chain of
    ``order`` with the flags' stage fields, then the refresh."""
    from mdrl_lib.specs import Refresh

    fields = {"reward": args.reward, "save_every": args.save_every, "grpo_options": grpo_options}
    specs = kit.chain_specs(order, args.rl_seed, **fields)
    if args.refresh:
        specs.append(Refresh(specs[-1], args.refresh, rl_seed=args.rl_seed, **fields))
    return specs


class Launch:
    """The processes of one launch as ``Kit.get(spec, processes=...)`` takes them (:class:`mdrl_lib.specs.Processes`):
    accelerate's ``state``, one process's share of the batch (``rl_config``), and the trained weights
    gathered from DeepSpeed ZeRO-3 onto the main process."""

    def __init__(self, state: Any, rl_config: Any) -> None:
        self.state, self.rl_config = state, rl_config

    @property
    def is_main_process(self) -> bool:
        return self.state.is_main_process

    @property
    def num_processes(self) -> int:
        return self.state.num_processes

    def wait_for_everyone(self) -> None:
        self.state.wait_for_everyone()

    def gather(self, model):
        sharded = zero3_state(model, self.is_main_process)  # None unless DeepSpeed ZeRO-3 holds the weights
        return cpu_copy(model, sharded) if (sharded is not None and self.is_main_process) else model

    def metrics(self) -> dict:
        return {"distributed_type": str(self.state.distributed_type),
                "prompts_per_process": self.rl_config.prompts_per_step}


def run_stages(args: argparse.Namespace, config: RunConfig, order: tuple[str, ...], overrides: dict[str, Any]) -> int:
    """Train (or find) each spec through ``kit.get``; every process runs this, only the main one writes."""
    import torch
    from accelerate import PartialState

    from mdrl_lib.kit import open_kit
    from mdrl_lib.specs import Scores

    if config.scale == "toy":
        torch.set_num_threads(1)  # the toy model is fastest on one thread, and processes share the cores
    state = PartialState(cpu=not torch.cuda.is_available())
    execution, grpo_options = split_overrides(overrides)
    local_rl, execution = per_process_batch(config, state.num_processes, execution)
    launch = Launch(state, local_rl)
    progress = state.is_main_process and not args.no_progress
    score = config.scale == "toy" and not args.skip_scores  # at full scale the notebooks score on first use
    if args.save_every and str(state.distributed_type).endswith("DEEPSPEED"):
        raise UsageError("--save-every: checkpoints along a stage are not gathered under DeepSpeed; train without "
                         "DeepSpeed (one GPU, or DDP) for notebook 03's paths")

    with state.main_process_first():  # the main process builds the base; the others then read it
        kit = open_kit(config)
        kit.base(progress=progress)
    specs = stage_specs(kit, args, order, grpo_options)
    stored = []
    for spec in specs:
        artifact = kit.get(spec, progress=progress, trainer_overrides=execution or None, processes=launch)
        if state.is_main_process and artifact.manifest.get("built_by_pid") != os.getpid():
            print(f"already stored: {artifact.path}", file=sys.stderr)
        if score and state.is_main_process:
            kit.get(Scores(spec), progress=progress)
        stored.append((spec, artifact))
    state.wait_for_everyone()
    if state.is_main_process:
        stages = [{"label": spec.label(), "key": a.key, "checkpoint": str(a.path),
                   "num_processes": a.manifest.get("config", {}).get("num_processes", 1),
                   "rewards": a.metrics.get("log", {}).get("rewards"),
                   "scores": kit.scores_of(spec).set_index("domain")["score"].round(4).to_dict() if score else None}
                  for spec, a in stored]
        print(json.dumps({"num_processes": state.num_processes, "stages": stages}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
