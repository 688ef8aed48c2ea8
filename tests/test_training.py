"""The RL engine (issue 4): GRPO stages through trl, experts, chains, refreshes and the score matrix.

Tiny settings (80 warm-up steps, 2-3 GRPO steps of 2 prompts x 4 completions, 40 eval prompts per
domain) so the whole file runs in well under two minutes on two CPU cores. CW is the domain used for
single stages: its rubric gives partial credit, so after 80 warm-up steps rewards already vary within
a group and GRPO gets a non-zero gradient.
"""
from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from mdrl_lib.config import ConfigError, RunConfig
from mdrl_lib.kit import Kit
from mdrl_lib.training import MASTER_FP32, grpo, stage_seed

TINY = dict(warmup_steps=80, data_train_size=50, data_eval_size=40, rl_steps=3, rl_refresh_steps=2,
            rl_prompts_per_step=2, rl_num_generations=4)



@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("rl-run")


def make_kit(run_dir, **overrides) -> Kit:
    return Kit(RunConfig.from_params(run_dir=str(run_dir), **{**TINY, **overrides}))


@pytest.fixture(scope="module")
def kit(run_dir) -> Kit:
    k = make_kit(run_dir)
    k.base(progress=False)
    return k


def state(model) -> dict[str, torch.Tensor]:
    return {n: t.detach().clone() for n, t in model.state_dict().items()}


def train_cw(kit: Kit, seed: int = 0, **rl_overrides):
    model, tokenizer = kit.load(kit.base(progress=False))
    rl = kit.config.rl if not rl_overrides else RunConfig.from_params(**{**TINY, **rl_overrides}).rl
    return grpo(model, tokenizer, kit.domain("cw"), kit.splits("cw").train, rl, seed, progress=False)


def test_grpo_changes_weights_and_logs_one_reward_per_step(kit, capsys):
    before = state(kit.load(kit.base(progress=False))[0])
    model, log = train_cw(kit)
    after = state(model)
    assert set(after) == set(before)
    assert any(not torch.equal(before[n], after[n]) for n in before)
    assert len(log.rewards) == log.steps == 3
    assert all(0.0 <= r <= 1.0 for r in log.rewards)
    assert log.kl == [] and log.seconds > 0
    assert "{'loss'" not in capsys.readouterr().out  # the trainer's log dicts are not printed


def test_grpo_logs_kl_when_beta_is_positive(kit):
    _, log = train_cw(kit, rl_kl_beta=0.05, rl_steps=2)
    assert len(log.kl) == 2


def test_grpo_same_seed_gives_identical_weights(kit):
    first, second = state(train_cw(kit, seed=3)[0]), state(train_cw(kit, seed=3)[0])
    assert all(torch.equal(first[n], second[n]) for n in first)


def test_grpo_lora_merges_back(kit):
    base_names = set(state(kit.load(kit.base(progress=False))[0]))
    before = state(kit.load(kit.base(progress=False))[0])
    model, log = train_cw(kit, rl_lora_rank=4, rl_lr=5e-3)
    names = set(state(model))
    assert names == base_names
    assert not any("lora" in n for n, _ in model.named_modules())
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert any(not torch.equal(before[n], model.state_dict()[n]) for n in before)
    assert len(log.rewards) == 3


def test_stage_seed_is_stable():
    assert stage_seed(0, "code", "math") == stage_seed(0, "code", "math")
    assert stage_seed(0, "code") != stage_seed(1, "code")
    assert stage_seed(0, "code") == 1858421931  # the same in every process (no salted hash())


def test_bf16_precision_stores_rounded_weights_and_fp32_master(run_dir):
    k = make_kit(run_dir, rl_precision="bf16")
    expert = k.expert("cw", progress=False)
    assert (expert.path / "model.safetensors").is_file() and (expert.path / MASTER_FP32).is_file()
    with safe_open(str(expert.path / "model.safetensors"), "pt") as stored, \
            safe_open(str(expert.path / MASTER_FP32), "pt") as master:
        names = set(stored.keys())
        assert names <= set(master.keys())
        differs = False
        for name in names:
            rounded, full = stored.get_tensor(name), master.get_tensor(name)
            assert full.dtype == torch.float32
            as_fp32 = rounded.float()
            assert torch.equal(as_fp32.bfloat16().float(), as_fp32)  # exactly bf16-representable
            assert torch.equal(as_fp32, full.bfloat16().float())  # the rounding of the master
            differs |= not torch.equal(as_fp32, full)
        assert differs
    model, _ = k.load(expert)
    assert next(model.parameters()).dtype == torch.float32


def test_chain_builds_each_stage_and_is_served_from_the_store(kit, monkeypatch):
    stages = kit.chain(progress=False)
    assert [s.metrics["domain"] for s in stages] == ["code", "math", "qa", "cw"]
    assert all(len(s.metrics["log"]["rewards"]) == 3 for s in stages)
    assert stages[1].manifest["config"]["parent"] == stages[0].key
    assert kit.expert("code", progress=False).key == stages[0].key

    def no_training(*args, **kwargs):
        raise AssertionError("a cached chain must not train")

    monkeypatch.setattr(Kit, "_build_stage", no_training)
    again = make_kit(kit.config.run_dir).chain(progress=False)
    assert [s.key for s in again] == [s.key for s in stages]
    matrix = kit.score_matrix(progress=False)
    assert list(matrix.index) == ["base", "code", "math", "qa", "cw"]
    assert list(matrix.columns) == ["code", "math", "qa", "cw"]
    assert matrix.loc["math", "qa"] == stages[1].metrics["scores"]["qa"]
    assert matrix.attrs["se"].shape == matrix.shape


def test_chain_resumes_after_an_interruption(run_dir, monkeypatch):
    k = make_kit(run_dir, rl_steps=2)
    trained: list[str] = []
    real = Kit._build_stage

    def interrupted(self, directory, parent, domain, *args, **kwargs):
        if len(trained) == 2:
            raise KeyboardInterrupt("killed during stage 3")
        trained.append(domain)
        return real(self, directory, parent, domain, *args, **kwargs)

    monkeypatch.setattr(Kit, "_build_stage", interrupted)
    with pytest.raises(KeyboardInterrupt):
        k.chain(progress=False)
    assert trained == ["code", "math"]
    assert k.store.get(k.stage_key(("code", "math"))) is not None
    assert k.store.get(k.stage_key(("code", "math", "qa"))) is None
    assert not list((k.store.root / ".tmp").iterdir())  # no half-written stage left behind

    trained.clear()

    def counting(self, directory, parent, domain, *args, **kwargs):
        trained.append(domain)
        return real(self, directory, parent, domain, *args, **kwargs)

    monkeypatch.setattr(Kit, "_build_stage", counting)
    stages = make_kit(run_dir, rl_steps=2).chain(progress=False)
    assert trained == ["qa", "cw"]
    assert len(stages) == 4


def test_refresh_starts_from_the_chain_end(kit):
    refresh = kit.refreshed("math", progress=False)
    assert refresh.manifest["config"]["parent"] == kit.chain(progress=False)[-1].key
    assert refresh.metrics["log"]["steps"] == 2
    assert kit.refreshed("math", steps=2, progress=False).key == refresh.key


@pytest.mark.parametrize("call", [
    lambda k: k.chain("code,physics"),
    lambda k: k.chain("code,math,code"),
    lambda k: k.chain(""),
    lambda k: k.expert("physics"),
    lambda k: k.refreshed("bio"),
    lambda k: k.refreshed("math", steps=0),
    lambda k: k.refreshed("math", order="math,poetry"),
    lambda k: k.score_matrix(order=["code", 3]),
])
def test_invalid_domains_and_orders_fail_before_training(run_dir, monkeypatch, call):
    def never(*args, **kwargs):
        raise AssertionError("training started before validation")

    monkeypatch.setattr(Kit, "_build_stage", never)
    monkeypatch.setattr(Kit, "base", never)
    with pytest.raises(ConfigError, match="code, math, qa, cw|expected an integer"):
        call(make_kit(run_dir, rl_steps=4))
