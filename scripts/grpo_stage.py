#!/usr/bin/env python
"""Run GRPO stages from the command line, on one process or on several under ``accelerate launch``.

``--domain D`` trains the kit's single-domain expert (notebook ``01_sparse_edits``); ``--order a,b,...``
trains the sequential chain (notebook ``04_sequential_rl``), resuming after its last stored stage.
Each stage is ``--steps`` GRPO steps through :func:`mdrl_lib.training.grpo` (trl's GRPOTrainer) with
the seed ``Kit.chain`` uses, stored in the run directory under the key ``Kit.chain`` looks for: the
notebooks find these checkpoints and do not train them again. The manifest also records how many
processes trained the stage. Toy scale by default: the base is built (or loaded) by
``mdrl_lib.kit.open_kit``, with its size and warm-up set by the flags below.

    python scripts/grpo_stage.py --domain math --warmup-steps 300 --steps 20
    accelerate launch --config_file configs/accelerate/cpu_2proc.yaml scripts/grpo_stage.py \\
        --domain cw --warmup-steps 80 --steps 4 --prompts-per-step 4 --num-generations 4
    accelerate launch --config_file configs/accelerate/multi_gpu_zero3.yaml scripts/grpo_stage.py \\
        --scale full --order code,math,qa,cw --grpo-overrides configs/grpo_full.yaml

Several processes share one stage: ``--prompts-per-step`` counts prompts per optimizer step over all
processes, so each process samples ``prompts_per_step / num_processes`` prompts x ``num_generations``
completions (trl's per-device batch counts completions) and the stage sees the same batch as on one
process. Only the main process writes: it builds the base while the others wait, and it stores each
stage. The run directory must be on a file system all processes see. See docs/run_at_scale.md.
"""
from __future__ import annotations

import argparse
import contextlib
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

from mdrl_lib.config import ConfigError, RunConfig, parse_order  # noqa: E402  (light: no torch)
from mdrl_lib.domains.base import DOMAIN_NAMES, SCALES  # noqa: E402

# GRPOConfig fields the kit sets from the run config (or derives); an overrides file may not set them.
KIT_OWNED_FIELDS: dict[str, str] = {
    "output_dir": "the kit trains in a temporary directory",
    "max_steps": "use --steps",
    "learning_rate": "use --lr",
    "lr_scheduler_type": "use --lr-schedule",
    "num_generations": "use --num-generations",
    "max_completion_length": "use --max-completion-length",
    "temperature": "use --temperature",
    "beta": "use --kl-beta",
    "seed": "use --seed",
    "data_seed": "use --seed",
    "bf16": "use --precision",
    "fp16": "use --precision",
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/grpo_stage.py",
        description="Run GRPO stages (an expert of notebook 01 or a chain of notebook 04) and store them in the "
                    "run directory where the kit looks for them. Works alone or under `accelerate launch`. "
                    "Flags left out keep the scale's preset.",
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--domain", choices=DOMAIN_NAMES, help="train the single-domain expert of this domain")
    target.add_argument("--order", help="train the chain of these domains in order, e.g. code,math,qa,cw")
    parser.add_argument("--scale", default="toy", choices=SCALES, help="toy (CPU, built here) or full (default: toy)")
    parser.add_argument("--model", default=None, help="full scale: a causal LM id or local directory")
    parser.add_argument("--seed", type=int, default=0, help="run seed (default: 0)")
    parser.add_argument("--run-dir", default=None, help="run directory (default: runs/<scale>-seed<seed>)")
    group = parser.add_argument_group("toy base model and warm-up")
    group.add_argument("--hidden-size", type=int, default=None, help="toy model width")
    group.add_argument("--layers", type=int, default=None, help="toy model layers")
    group.add_argument("--heads", type=int, default=None, help="toy attention heads (must divide --hidden-size)")
    group.add_argument("--intermediate-size", type=int, default=None, help="toy MLP width")
    group.add_argument("--warmup-steps", type=int, default=None, help="supervised warm-up steps of the toy base")
    group.add_argument("--train-size", type=int, default=None, help="train prompts per domain (0: domain default)")
    group.add_argument("--eval-size", type=int, default=None, help="eval prompts per domain (0: domain default)")
    group = parser.add_argument_group("GRPO stage")
    group.add_argument("--steps", type=int, default=None, help="GRPO optimizer steps")
    group.add_argument("--lr", type=float, default=None, help="learning rate")
    group.add_argument("--lr-schedule", default=None, help="linear, constant or cosine")
    group.add_argument("--prompts-per-step", type=int, default=None,
                       help="prompts per optimizer step over all processes (must divide by the process count)")
    group.add_argument("--num-generations", type=int, default=None, help="completions per prompt (>= 2)")
    group.add_argument("--max-completion-length", type=int, default=None, help="completion tokens at most")
    group.add_argument("--temperature", type=float, default=None, help="sampling temperature")
    group.add_argument("--kl-beta", type=float, default=None, help="KL weight (0: no reference model)")
    group.add_argument("--lora-rank", type=int, default=None, help="LoRA rank (0: full fine-tuning)")
    group.add_argument("--precision", default=None, help="fp32 or bf16 (bf16 also keeps the fp32 master)")
    group.add_argument("--grpo-overrides", type=Path, default=None, metavar="YAML",
                       help="extra trl GRPOConfig fields (e.g. configs/grpo_full.yaml: vLLM, checkpointing)")
    group.add_argument("--skip-scores", action="store_true",
                       help="do not score every domain after the stage (default: score at toy scale only)")
    group.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def run_config(args: argparse.Namespace) -> RunConfig:
    """The validated RunConfig of the flags (``None`` keeps the scale's preset)."""
    params = {
        "scale": args.scale, "seed": args.seed, "run_dir": args.run_dir, "model": args.model,
        "model_hidden_size": args.hidden_size, "model_num_layers": args.layers, "model_num_heads": args.heads,
        "model_intermediate_size": args.intermediate_size, "warmup_steps": args.warmup_steps,
        "data_train_size": args.train_size, "data_eval_size": args.eval_size,
        "rl_steps": args.steps, "rl_lr": args.lr, "rl_lr_schedule": args.lr_schedule,
        "rl_prompts_per_step": args.prompts_per_step, "rl_num_generations": args.num_generations,
        "rl_max_completion_length": args.max_completion_length, "rl_temperature": args.temperature,
        "rl_kl_beta": args.kl_beta, "rl_lora_rank": args.lora_rank, "rl_precision": args.precision,
    }
    config = RunConfig.from_params(**params)
    if config.rl.steps < 1:
        raise ConfigError(f"--steps: expected an integer >= 1, got {config.rl.steps}")
    if config.scale == "toy" and config.model.hidden_size % config.model.num_heads:
        raise ConfigError(f"--heads {config.model.num_heads} must divide --hidden-size {config.model.hidden_size}")
    return config


FLAG_OF_PARAMETER = {
    "model_hidden_size": "--hidden-size", "model_num_layers": "--layers", "model_num_heads": "--heads",
    "model_intermediate_size": "--intermediate-size", "warmup_steps": "--warmup-steps",
    "data_train_size": "--train-size", "data_eval_size": "--eval-size", "rl_steps": "--steps", "rl_lr": "--lr",
    "rl_lr_schedule": "--lr-schedule", "rl_prompts_per_step": "--prompts-per-step",
    "rl_num_generations": "--num-generations", "rl_max_completion_length": "--max-completion-length",
    "rl_temperature": "--temperature", "rl_kl_beta": "--kl-beta", "rl_lora_rank": "--lora-rank",
    "rl_precision": "--precision", "scale": "--scale", "seed": "--seed", "run_dir": "--run-dir", "model": "--model",
    "order": "--order",
}


def flag_message(error: ConfigError) -> str:
    """The config error's message naming the flag rather than the notebook parameter behind it."""
    message = str(error)
    for name, flag in FLAG_OF_PARAMETER.items():
        if message.startswith(f"{name}:"):
            return f"{flag}{message[len(name):]}"
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


@contextlib.contextmanager
def grpo_config_overrides(overrides: dict[str, Any]):
    """Make :func:`mdrl_lib.training.grpo` build its GRPOConfig with ``overrides`` on top of the kit's values.

    ``training.grpo`` takes no trainer options, so this wraps its ``_grpo_args`` for the duration and
    checks that the overrides reached the config before any training starts.
    """
    if not overrides:
        yield
        return
    import trl

    from mdrl_lib import training

    if not hasattr(training, "_grpo_args"):
        raise RuntimeError("mdrl_lib.training no longer has _grpo_args; --grpo-overrides needs updating")
    base_class, build_args = trl.GRPOConfig, training._grpo_args

    class GRPOConfigWithOverrides(base_class):
        """trl's GRPOConfig with the overrides file's fields taking precedence."""

        def __init__(self, **kwargs):
            super().__init__(**{**kwargs, **overrides})

    def build_with_overrides(*args, **kwargs):
        trl.GRPOConfig = GRPOConfigWithOverrides
        try:
            grpo_args = build_args(*args, **kwargs)
        finally:
            trl.GRPOConfig = base_class
        if not isinstance(grpo_args, GRPOConfigWithOverrides):
            raise RuntimeError("--grpo-overrides did not reach trl's GRPOConfig (mdrl_lib.training changed how "
                               "it builds it); nothing was trained")
        return grpo_args

    training._grpo_args = build_with_overrides
    try:
        yield
    finally:
        training._grpo_args = build_args


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
        order = (args.domain,) if args.domain else parse_order(args.order)
        overrides = load_grpo_overrides(args.grpo_overrides)
        return run_stages(args, config, order, overrides)
    except (ConfigError, UsageError) as error:
        if os.environ.get("RANK", "0") == "0":  # under a launcher every process fails alike; say it once
            print(f"error: {flag_message(error) if isinstance(error, ConfigError) else error}", file=sys.stderr)
        return 2


def run_stages(args: argparse.Namespace, config: RunConfig, order: tuple[str, ...], overrides: dict[str, Any]) -> int:
    """Train (or find) each stage of ``order`` and store it; every process runs this, only the main one writes."""
    import torch
    from accelerate import PartialState

    from mdrl_lib.kit import open_kit
    from mdrl_lib.training import stage_seed

    if config.scale == "toy":
        torch.set_num_threads(1)  # the toy model is fastest on one thread, and processes share the cores
    state = PartialState(cpu=not torch.cuda.is_available())
    local_rl, overrides = per_process_batch(config, state.num_processes, overrides)
    progress = state.is_main_process and not args.no_progress
    score = config.scale == "toy" and not args.skip_scores  # at full scale the notebooks score on first use

    with state.main_process_first():  # the main process builds the base; the others then read it
        kit = open_kit(config)
        parent = kit.base(progress=progress)
    stored = []
    for index, name in enumerate(order):
        prefix = order[:index + 1]
        key = kit.stage_key(prefix)
        artifact = kit.store.get(key)
        if artifact is None:
            artifact = train_stage(kit, state, parent, key, prefix, local_rl, overrides,
                                   seed=stage_seed(config.seed, *prefix), score=score, progress=progress)
        elif state.is_main_process:
            print(f"already stored: {artifact.path}", file=sys.stderr)
        stored.append(artifact)
        parent = artifact
    if state.is_main_process:
        stages = [{"order": list(order[:i + 1]), "checkpoint": str(a.path),
                   "num_processes": a.metrics.get("num_processes", 1),
                   "rewards": a.metrics.get("log", {}).get("rewards"), "scores": a.metrics.get("scores")}
                  for i, a in enumerate(stored)]
        print(json.dumps({"num_processes": state.num_processes, "stages": stages}))
    return 0


def train_stage(kit, state, parent, key: str, prefix: tuple[str, ...], local_rl, overrides: dict[str, Any], *,
                seed: int, score: bool, progress: bool):
    """One GRPO stage on ``prefix[-1]`` from ``parent``, stored under ``key`` as ``Kit.chain`` stores it
    (plus the process count); returns the stored artifact on every process."""
    from mdrl_lib.training import grpo, save_stage

    config, domain = kit.config, kit.domain(prefix[-1])
    model, tokenizer = kit.load(parent)
    desc = f"RL {len(prefix)} {domain.title} x{state.num_processes}"
    with grpo_config_overrides(overrides):
        model, log = grpo(model, tokenizer, domain, kit.splits(domain.name).train, local_rl, seed,
                          progress=progress, desc=desc)

    sharded = zero3_state(model, state.is_main_process)  # None unless DeepSpeed ZeRO-3 holds the weights
    if sharded is not None and state.is_main_process:
        model = cpu_copy(model, sharded)

    def write(directory: Path) -> dict:
        save_stage(model, tokenizer, directory, config.rl.precision)
        metrics = {"domain": domain.name, "parent": parent.key, "precision": config.rl.precision,
                   "log": log.to_metrics(), "num_processes": state.num_processes,
                   "distributed_type": str(state.distributed_type), "prompts_per_process": local_rl.prompts_per_step,
                   "grpo_overrides": overrides}
        if score:  # as Kit.chain does
            from mdrl_lib.evaluation import score_domains

            table = score_domains(model, tokenizer, kit.evals,
                                  max_new_tokens=config.rl.max_completion_length).set_index("domain")
            metrics.update(scores=table["score"].round(6).to_dict(), se=table["se"].round(6).to_dict(),
                           n=table["n"].astype(int).to_dict())
        return metrics

    if state.is_main_process:
        kit.store.get_or_create(
            key, write, seed=config.seed,
            config={"kind": "stage", "order": list(prefix), "base": kit.base_key(), "parent": parent.key,
                    "rl": kit.rl_fields(), "steps": config.rl.steps, "stage_seed": seed,
                    "run": config.fields_for("model", "data", "warmup"),
                    "num_processes": state.num_processes, "grpo_overrides": overrides})
    state.wait_for_everyone()
    return kit.store.get(key)


if __name__ == "__main__":
    sys.exit(main())
