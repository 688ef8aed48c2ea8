"""More than one process: a GRPO stage under `accelerate launch` with two CPU
processes, and the files that configure full scale (accelerate, DeepSpeed ZeRO-3, vLLM settings).

The two-process run uses a tiny setting (80 warm-up steps of the default toy model, 2 GRPO steps of
2 prompts x 4 completions on CW, whose rubric gives partial credit so that the weights really move);
it takes about 15 s on two cores and is bounded at 90 s.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from mdrl_lib.config import RunConfig
from mdrl_lib.kit import Kit
from mdrl_lib.specs import Base, Scores, Stage
from script_runner import load_script, run_bounded

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "grpo_stage.py"
CPU_2PROC = ROOT / "configs" / "accelerate" / "cpu_2proc.yaml"
ZERO3 = ROOT / "configs" / "accelerate" / "multi_gpu_zero3.yaml"
GRPO_FULL = ROOT / "configs" / "grpo_full.yaml"
LAUNCH_TIMEOUT_S = 90
TINY_FLAGS = ["--warmup-steps", "80", "--warmup-lr", "3e-3", "--rl-steps", "2", "--rl-prompts-per-step", "2", "--rl-num-generations", "4",
              "--data-train-size", "50", "--data-eval-size", "20", "--no-progress"]
TINY_PARAMS = dict(warmup_steps=80, warmup_lr=3e-3, rl_steps=2, rl_prompts_per_step=2, rl_num_generations=4, data_train_size=50,
                   data_eval_size=20)


def tensor_names(path: Path) -> set[str]:
    with safe_open(str(path / "model.safetensors"), "pt") as handle:
        return set(handle.keys())


def test_a_stage_trains_with_two_cpu_processes_and_is_stored_once_where_the_kit_looks(tmp_path):
    run_dir = tmp_path / "run"
    result = run_bounded([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_2PROC),
                          str(SCRIPT), "--domain", "cw", "--run-dir", str(run_dir), *TINY_FLAGS], LAUNCH_TIMEOUT_S,
                         OMP_NUM_THREADS="1")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])  # printed once, by the main process
    assert summary["num_processes"] == 2 and len(summary["stages"]) == 1

    kit = Kit(RunConfig.from_params(run_dir=str(run_dir), **TINY_PARAMS))
    stores = sorted(p.name for p in kit.store.root.iterdir() if not p.name.startswith("."))
    expert_spec = Stage(Base(), "cw")
    # the base, one stage written once, and its scores
    assert stores == sorted([kit.key(Base()), kit.key(expert_spec), kit.key(Scores(expert_spec))])
    assert not any((kit.store.root / ".tmp").glob("*")), "a half-written artifact was left behind"
    expert = kit.expert("cw", progress=False)  # served from the store: the notebooks find it
    metrics = expert.metrics
    assert expert.manifest["config"]["num_processes"] == 2 and metrics["prompts_per_process"] == 1
    assert metrics["distributed_type"].endswith("MULTI_CPU")
    assert len(metrics["log"]["rewards"]) == 2
    assert set(kit.scores_of(expert_spec)["domain"]) == {"code", "math", "qa", "cw"}
    base = kit.base(progress=False)
    assert tensor_names(expert.path) == tensor_names(base.path)
    with safe_open(str(base.path / "model.safetensors"), "pt") as a, \
            safe_open(str(expert.path / "model.safetensors"), "pt") as b:
        assert any(not torch.equal(a.get_tensor(n), b.get_tensor(n)) for n in a.keys()), "GRPO changed nothing"


def test_prompts_are_split_over_processes_with_clear_errors():
    script = load_script(SCRIPT)
    config = RunConfig.from_params(rl_prompts_per_step=8, rl_num_generations=4)
    local, overrides = script.per_process_batch(config, 2, {})
    assert local.prompts_per_step == 4 and overrides == {}
    local, overrides = script.per_process_batch(config, 2, {"gradient_accumulation_steps": 4})
    assert overrides == {"gradient_accumulation_steps": 4, "per_device_train_batch_size": 4}
    with pytest.raises(script.UsageError, match="must divide by the number of processes"):
        script.per_process_batch(config, 3, {})
    with pytest.raises(script.UsageError, match="must divide the completions per process"):
        script.per_process_batch(config, 2, {"gradient_accumulation_steps": 3})


def test_bad_flags_exit_2_with_one_line(capsys):
    script = load_script(SCRIPT)
    assert script.main(["--domain", "math", "--model-num-heads", "3", "--model-hidden-size", "32"]) == 2
    assert "--model-num-heads: 3 must divide model_hidden_size 32" in capsys.readouterr().err
    assert script.main(["--domain", "math", "--rl-temperature", "0"]) == 2
    assert "--rl-temperature: expected a finite number > 0" in capsys.readouterr().err
    assert script.main(["--order", "math,physics"]) == 2
    assert "unknown domain 'physics'" in capsys.readouterr().err


def test_the_full_scale_grpo_settings_are_real_grpo_config_fields(tmp_path):
    script = load_script(SCRIPT)
    overrides = script.load_grpo_overrides(GRPO_FULL)
    assert overrides["use_vllm"] is True and overrides["vllm_mode"] == "colocate"
    assert 0 < overrides["vllm_gpu_memory_utilization"] < 1
    bad = tmp_path / "bad.yaml"
    for text, message in [("vllm_gpu_memory_utilisation: 0.3\n", "did you mean 'vllm_gpu_memory_utilization'"),
                          ("learning_rate: 0.1\n", "set by the kit"),
                          ("use_vllm: 'yes'\n", "expects a bool"),
                          ("- use_vllm\n", "must hold a mapping")]:
        bad.write_text(text)
        with pytest.raises(script.UsageError, match=message):
            script.load_grpo_overrides(bad)


def test_overrides_reach_the_grpo_config_that_training_builds(tmp_path):
    from mdrl_lib import training

    script = load_script(SCRIPT)
    rl = RunConfig.from_params(rl_prompts_per_step=2, rl_num_generations=4).rl
    overrides = {"activation_checkpointing": True, "gradient_accumulation_steps": 2,
                 "vllm_gpu_memory_utilization": 0.5, "epsilon": 0.3}
    execution, keyed = script.split_overrides(overrides)
    assert keyed == (("epsilon", 0.3),) and "epsilon" not in execution  # the algorithm is keyed
    local, execution = script.per_process_batch(RunConfig.from_params(rl_prompts_per_step=2, rl_num_generations=4),
                                                1, execution)
    args = training._grpo_args(local, 0, 3, str(tmp_path), {**execution, **dict(keyed)})
    assert args.activation_checkpointing and args.gradient_checkpointing
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (4, 2)
    assert args.generation_batch_size == 8 and args.steps_per_generation == 2  # 2 prompts x 4 per optimizer step
    assert args.vllm_gpu_memory_utilization == 0.5 and args.learning_rate == rl.lr and args.max_steps == 3
    assert args.epsilon == 0.3
    with pytest.raises(ValueError, match="not fields of trl's GRPOConfig"):
        training._grpo_args(local, 0, 3, str(tmp_path), {"no_such_field": 1})


def test_the_script_and_the_kit_store_the_same_stages_under_the_same_keys(tmp_path, capsys):
    """One process: the script trains a chain and its refresh; the kit then finds every one of them
    (nothing is trained again), and a control stage with a shuffled reward is another artifact."""
    script = load_script(SCRIPT)
    run_dir = tmp_path / "run"
    flags = [*TINY_FLAGS, "--run-dir", str(run_dir), "--rl-refresh-steps", "1", "--skip-scores"]
    assert script.main(["--order", "math,cw", "--refresh", "math", *flags]) == 0
    kit = Kit(RunConfig.from_params(run_dir=str(run_dir), rl_refresh_steps=1, **TINY_PARAMS))
    specs = [*kit.chain_specs("math,cw"), kit.refresh_spec("math", order="math,cw")]
    assert all(kit.store.get(kit.key(spec)) is not None for spec in specs)
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [s["key"] for s in summary["stages"]] == [kit.key(spec) for spec in specs]
    assert script.main(["--domain", "cw", "--reward", "shuffled", *flags]) == 0
    assert kit.store.get(kit.key(Stage(Base(), "cw", reward="shuffled"))) is not None
    assert kit.store.get(kit.key(Stage(Base(), "cw"))) is None
    assert script.main(["--domain", "cw", "--refresh", "math", *flags]) == 2
    assert "--refresh needs --order" in capsys.readouterr().err


def test_accelerate_configs_load_and_zero3_points_at_its_deepspeed_file():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    cpu = load_config_from_file(str(CPU_2PROC))
    assert cpu.num_processes == 2 and cpu.use_cpu
    zero3 = load_config_from_file(str(ZERO3))
    ds_file = ROOT / zero3.deepspeed_config["deepspeed_config_file"]
    ds = json.loads(ds_file.read_text())
    assert ds["zero_optimization"]["stage"] == 3 and ds["bf16"]["enabled"] == "auto"
    assert "optimizer" not in ds and "scheduler" not in ds  # the kit's AdamW and rate schedule apply
    args = launch_command_parser().parse_args(["--config_file", str(ZERO3), str(SCRIPT), "--domain", "math"])
    args, _, mixed_precision_from_config = _validate_launch_command(args)
    assert args.use_deepspeed and args.zero3_init_flag and not mixed_precision_from_config


def test_the_cpu_copy_used_after_zero3_stores_exactly_what_the_model_would(tmp_path):
    """Under ZeRO-3 the stage is stored from a CPU copy of the gathered weights (the gathering itself
    needs DeepSpeed and GPUs and is not run here); the copy must store byte-identical checkpoints."""
    from mdrl_lib.models import build_toy_model, build_toy_tokenizer
    from mdrl_lib.training import MASTER_FP32, save_stage

    script = load_script(SCRIPT)
    tokenizer = build_toy_tokenizer()
    model = build_toy_model(RunConfig().model, tokenizer, seed=0)
    state = {name: p.detach().float().clone() for name, p in model.named_parameters()}
    copy = script.cpu_copy(model, state)
    assert copy.lm_head.weight is copy.model.embed_tokens.weight
    for name, source in (("direct", model), ("copy", copy)):
        (tmp_path / name).mkdir()
        save_stage(source, tokenizer, tmp_path / name, "bf16")
    for file in ("model.safetensors", MASTER_FP32):
        with safe_open(str(tmp_path / "direct" / file), "pt") as a, safe_open(str(tmp_path / "copy" / file), "pt") as b:
            assert set(a.keys()) == set(b.keys())
            assert all(torch.equal(a.get_tensor(n), b.get_tensor(n)) for n in a.keys())
