"""Where scoring and analyses run (config and machine), and the full scale through the same code path
on a CPU: a tiny local model directory and the local fixture files of the paper's datasets."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mdrl_lib.config import ConfigError, RunConfig
from mdrl_lib.kit import Kit
from mdrl_lib.specs import Base

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "full"


def test_device_and_dtype_follow_the_config_and_the_machine(tmp_path):
    def kit(**params):
        return Kit(RunConfig.from_params(run_dir=str(tmp_path), **params))

    gpu = torch.cuda.is_available()
    assert kit().device.type == ("cuda" if gpu else "cpu")
    assert kit().compute_dtype == torch.float32  # toy scale: fp32 everywhere
    assert kit(compute_device="cpu").device.type == "cpu"
    assert kit(compute_dtype="bf16").compute_dtype == torch.bfloat16
    full = Kit(RunConfig.from_params(scale="full", model="org/model", run_dir=str(tmp_path)))
    assert full.compute_dtype == (torch.bfloat16 if gpu else torch.float32)
    if not gpu:
        with pytest.raises(ConfigError, match="compute_device: 'cuda'.*no GPU"):
            kit(compute_device="cuda").device


@pytest.fixture(scope="module")
def local_model(tmp_path_factory):
    """A tiny Qwen2 with the toy tokenizer, saved as a model directory (stands in for a hub model)."""
    from mdrl_lib.config import ModelConfig
    from mdrl_lib.models import build_toy_model, build_toy_tokenizer, save_model

    directory = tmp_path_factory.mktemp("local-model")
    tokenizer = build_toy_tokenizer()
    save_model(build_toy_model(ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64),
                               tokenizer, seed=0), tokenizer, directory)
    return directory


def full_kit(run_dir, model_dir, device: str = "cpu") -> Kit:
    return Kit(RunConfig.from_params(
        scale="full", model=str(model_dir), run_dir=str(run_dir), data_train_size=2, data_eval_size=2,
        data_max_prompt_tokens=24, rl_max_completion_length=3,
        data_math_source=str(FIXTURES / "openr1_math.jsonl"), data_math_eval_source=str(FIXTURES / "aime25.jsonl"),
        data_code_source=str(FIXTURES / "klear_code.jsonl"), data_qa_source=str(FIXTURES / "supergpqa.jsonl"),
        data_cw_source=",".join(str(FIXTURES / f) for f in ("cw_sonnet.jsonl", "cw_gemini.jsonl")),
        compute_device=device))


def test_full_scale_reads_its_data_sources_and_truncates_with_the_model_tokenizer(tmp_path, local_model):
    kit = full_kit(tmp_path, local_model)
    math_domain = kit.domain("math")
    assert math_domain.source.endswith("openr1_math.jsonl") and math_domain.max_prompt_tokens == 24
    assert math_domain.tokenizer is kit.tokenizer
    splits = kit.splits("math")
    assert len(splits.train) == 2 and len(splits.eval) == 2
    assert len(kit.domain("cw").sources) == 2


def test_full_scale_scores_per_item_through_the_same_code_path(tmp_path, local_model):
    kit = full_kit(tmp_path, local_model)
    items = kit.item_results(Base())
    assert sorted(items["domain"].unique()) == ["code", "cw", "math", "qa"]
    assert (items.groupby("domain").size() == 2).all()
    assert items["score"].between(0, 1).all()
    scores = kit.scores_of(Base())
    assert list(scores["n"]) == [2, 2, 2, 2]
    assert kit.get(Base()).metrics == {"model": str(local_model)}
    with pytest.raises(ValueError, match="does not hold"):
        kit.weights_file(Base())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (run on a lent GPU machine)")
def test_on_a_gpu_full_scale_scores_in_bf16_there_and_analyses_in_fp32(tmp_path, local_model):
    from mdrl_lib.objectives import DomainObjective
    from mdrl_lib.specs import Scores

    kit = full_kit(tmp_path, local_model, device="auto")
    assert kit.device.type == "cuda" and kit.compute_dtype == torch.bfloat16
    model, _ = kit.load(Base())
    assert next(model.parameters()).is_cuda and next(model.parameters()).dtype == torch.bfloat16
    assert kit.get(Scores(Base())).metrics["device"].startswith("cuda")
    assert len(kit.item_results(Base())) == 8
    analysis, tokenizer = kit.load(Base(), placement="analysis")
    assert next(analysis.parameters()).is_cuda and next(analysis.parameters()).dtype == torch.float32
    objective = DomainObjective([("m:1+2=", "3"), ("m:3+4=", "7")], tokenizer, device=kit.device)
    gradient = objective.gradient(analysis)
    assert all(g.is_cuda for g in gradient.values())
