"""scripts/gpu_smoke.py: the tiny run here on CPU, the paper-size config by hand.

The full-size run needs a GPU (docs/run_at_scale.md has the command); here the same code runs with
``--tiny`` (about 12 s on two cores, bounded at 60 s), and the hand-written Qwen3-4B config is checked
against the published parameter count by building it on the meta device (no memory, no download).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from script_runner import load_script, run_bounded

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_smoke.py"
TINY_TIMEOUT_S = 60


def test_tiny_smoke_runs_three_grpo_steps_and_an_edits_pass(tmp_path):
    report_path = tmp_path / "report.json"
    result = run_bounded([sys.executable, str(SCRIPT), "--tiny", "--report", str(report_path),
                          "--work-dir", str(tmp_path / "work")],
                         TINY_TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["steps"] == 3 and len(report["rewards"]) == 3
    assert report["generated_completion_tokens"] > 0 and report["completion_tokens_per_s"] > 0
    assert report["out_of_vocab_tokens"] == 0  # every sampled id is a toy character
    assert 0 < report["share_unchanged"] < 1  # GRPO moved some weights, not all
    assert report["mlp_layers"] == 2 and report["neurons_edited"] > 0
    assert report["within_budget"] and "tokens/s" in result.stdout
    assert report["scored_on"] == "cpu" and report["scored_items"] == 64 and report["score_batch_size"] == 256
    assert (tmp_path / "work" / "before.safetensors").is_file()  # --work-dir is kept


def test_full_size_refuses_a_machine_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here; the refusal is for CPU-only machines")
    result = run_bounded([sys.executable, str(SCRIPT)], TINY_TIMEOUT_S)
    assert result.returncode == 2
    assert "needs a CUDA GPU" in result.stderr and "--tiny" in result.stderr


def test_the_hand_written_config_is_qwen3_4b():
    from transformers import Qwen3Config, Qwen3ForCausalLM

    script = load_script(SCRIPT)
    with torch.device("meta"):
        model = Qwen3ForCausalLM(Qwen3Config(**script.QWEN3_4B))
    parameters = sum(p.numel() for p in model.parameters())
    assert parameters == script.parameter_estimate(script.QWEN3_4B) == 4_022_468_096  # "4.0B", tied embeddings
    assert model.lm_head.weight is model.model.embed_tokens.weight
    layer = model.model.layers[0]
    assert layer.self_attn.q_proj.weight.shape == (32 * 128, 2560)
    assert layer.self_attn.k_proj.weight.shape == (8 * 128, 2560)
    assert layer.mlp.gate_proj.weight.shape == (9728, 2560)
