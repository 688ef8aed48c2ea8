"""The RL engine: GRPO stages through trl, experts, chains, refreshes and the score matrix.

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
from mdrl_lib.specs import Base, Refresh, Stage
from mdrl_lib.training import MASTER_FP32, grpo, stage_seed

TINY = dict(warmup_steps=80, warmup_lr=3e-3, data_train_size=50, data_eval_size=40, rl_steps=3, rl_refresh_steps=2,
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
    assert stages[1].manifest["config"]["fields"]["parent"] == stages[0].key
    assert kit.expert("code", progress=False).key == stages[0].key

    def no_training(*args, **kwargs):
        raise AssertionError("a cached chain must not train")

    monkeypatch.setattr(Stage, "build", no_training)
    again = make_kit(kit.config.run_dir).chain(progress=False)
    assert [s.key for s in again] == [s.key for s in stages]
    matrix = kit.score_matrix(progress=False)
    assert list(matrix.index) == ["base", "code", "math", "qa", "cw"]
    assert list(matrix.columns) == ["code", "math", "qa", "cw"]
    assert matrix.loc["math", "qa"] == kit.scores_of(kit.chain_specs()[1]).set_index("domain").loc["qa", "score"]
    assert matrix.attrs["se"].shape == matrix.shape


def test_chain_resumes_after_an_interruption(run_dir, monkeypatch):
    k = make_kit(run_dir, rl_steps=2)
    trained: list[str] = []
    real = Stage.build

    def interrupted(self, kit, directory, *args, **kwargs):
        if len(trained) == 2:
            raise KeyboardInterrupt("killed during stage 3")
        trained.append(self.domain)
        return real(self, kit, directory, *args, **kwargs)

    monkeypatch.setattr(Stage, "build", interrupted)
    with pytest.raises(KeyboardInterrupt):
        k.chain(progress=False)
    assert trained == ["code", "math"]
    specs = k.chain_specs()
    assert k.store.get(k.key(specs[1])) is not None
    assert k.store.get(k.key(specs[2])) is None
    assert not list((k.store.root / ".tmp").iterdir())  # no half-written stage left behind

    trained.clear()

    def counting(self, kit, directory, *args, **kwargs):
        trained.append(self.domain)
        return real(self, kit, directory, *args, **kwargs)

    monkeypatch.setattr(Stage, "build", counting)
    stages = make_kit(run_dir, rl_steps=2).chain(progress=False)
    assert trained == ["qa", "cw"]
    assert len(stages) == 4


def test_refresh_starts_from_the_chain_end(kit):
    refresh = kit.refreshed("math", progress=False)
    assert refresh.manifest["config"]["fields"]["parent"] == kit.chain(progress=False)[-1].key
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
    lambda k: k.expert("math", lr=0.0),
    lambda k: k.expert("math", rl_seed=-1),
    lambda k: k.get(Stage(Base(), "math", reward="bogus")),
    lambda k: k.get(Refresh(Base(), "math", grpo_options=(("use_vllm", True),))),
])
def test_invalid_domains_and_orders_fail_before_training(run_dir, monkeypatch, call):
    def never(*args, **kwargs):
        raise AssertionError("training started before validation")

    monkeypatch.setattr(Stage, "build", never)
    monkeypatch.setattr(Base, "build", never)
    with pytest.raises(ConfigError, match="code, math, qa, cw|expected an integer|expected a finite number|"
                                          "verifier, replayed, permuted, shuffled, random|trainer_overrides"):
        call(make_kit(run_dir, rl_steps=4))


def test_stage_keys_cover_what_changes_the_weights(kit):
    """Each spec field and RL setting that changes a stage's bytes changes its key; a refresh with the
    same fields as a stage is still another artifact; execution-only trainer fields are not keyed."""
    plain = Stage(Base(), "math")
    key = kit.key(plain)
    variants = [Stage(Base(), "math", rl_seed=1), Stage(Base(), "math", lr=1e-4), Stage(Base(), "math", steps=7),
                Stage(Base(), "math", lr_schedule="constant"), Stage(Base(), "math", reward="shuffled"),
                Stage(Base(), "math", save_every=2), Stage(Base(), "math", grpo_options=(("epsilon", 0.3),)),
                Refresh(Base(), "math", steps=kit.config.rl.steps), Stage(Base(), "qa"),
                Stage(Stage(Base(), "code"), "math")]
    keys = [kit.key(v) for v in variants]
    assert key not in keys and len(set(keys)) == len(keys)
    assert kit.key(Stage(Base(), "math", lr=kit.config.rl.lr)) == key  # the run's own rate, spelled out
    assert kit.key(Stage(Base(), "Math ")) == key
    assert make_kit(kit.config.run_dir, rl_temperature=0.7).key(plain) != key
    assert make_kit(kit.config.run_dir, rl_refresh_steps=9).key(plain) == key  # a stage does not read it


def test_shuffled_reward_control_trains_on_permuted_rewards(kit):
    """The control stage keeps the verifier's rewards' values but permutes them within each step."""
    from mdrl_lib.training import overridden_reward

    calls = []

    def verifier(prompts=None, completions=None, **_):
        calls.append(list(completions))
        return [float(len(c)) for c in completions]

    shuffled = overridden_reward(verifier, "shuffled", seed=3)
    completions = ["a", "bb", "ccc", "dddd", "eeeee", "ffffff"]
    rewards = shuffled(prompts=[""] * 6, completions=completions)
    assert sorted(rewards) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0] and rewards != [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert overridden_reward(verifier, "shuffled", seed=3)(prompts=[""] * 6, completions=completions) == rewards
    randoms = overridden_reward(verifier, "random", seed=3)(prompts=[""] * 6, completions=completions)
    assert set(randoms) <= {0.0, 1.0} and len(calls) == 2  # random never asks the verifier
    assert overridden_reward(verifier, "verifier", seed=3) is verifier
    control = kit.get(Stage(Base(), "cw", reward="shuffled", steps=2), progress=False)
    assert len(control.metrics["log"]["rewards"]) == 2


def test_a_stage_stores_grpos_diagnostics_per_step_and_the_permuted_control_keeps_the_first_steps_groups(kit):
    """Zero-advantage share, mean |advantage|, loss and entropy per step go to the manifest without changing the
    key; with the real reward's trainer seed the within-group control samples the same first completions, so its
    first step's zero-advantage share and |advantage| are the real ones exactly."""
    from mdrl_lib.training import DIAGNOSTICS

    real = kit.get(Stage(Base(), "cw", steps=2), progress=False).metrics["log"]["diagnostics"]
    control = kit.get(Stage(Base(), "cw", steps=2, reward="permuted"), progress=False).metrics["log"]["diagnostics"]
    assert set(real) == set(DIAGNOSTICS) and all(len(v) == 2 for v in real.values())
    assert all(0 <= s <= 1 for s in real["zero_advantage_share"]) and all(e > 0 for e in real["entropy"])
    assert control["zero_advantage_share"][0] == real["zero_advantage_share"][0]
    assert control["mean_abs_advantage"][0] == pytest.approx(real["mean_abs_advantage"][0])


def test_the_replayed_control_has_the_real_stages_zero_advantage_share_at_every_step(kit):
    """A stage stores its group rewards per call beside its weights; the replayed control (another RL seed, so
    other completions) is given, at each step, the real stage's groups permuted within each group, so trl counts
    exactly the real zero-advantage share at every step, and its record keeps what the verifier said of its own
    completions."""
    import json

    from mdrl_lib.training import GROUP_REWARDS_FILE

    real = Stage(Base(), "cw", steps=2)
    control = Stage(Base(), "cw", steps=2, rl_seed=1, reward="replayed", replay=real)
    stored = kit.get(control, progress=False)
    record = json.loads((stored.path / GROUP_REWARDS_FILE).read_text())
    real_record = json.loads((kit.get(real).path / GROUP_REWARDS_FILE).read_text())
    assert real_record["mode"] == "verifier" and len(real_record["calls"]) == 2 and "verifier_calls" not in real_record
    assert [[sorted(g) for g in call] for call in record["calls"]] == \
        [[sorted(g) for g in call] for call in real_record["calls"]]
    assert record["mode"] == "replayed" and len(record["verifier_calls"]) == 2
    ours, theirs = stored.metrics["log"]["diagnostics"], kit.get(real).metrics["log"]["diagnostics"]
    assert ours["zero_advantage_share"] == theirs["zero_advantage_share"]
    assert ours["mean_abs_advantage"] == pytest.approx(theirs["mean_abs_advantage"], abs=1e-5)
    assert stored.metrics["log"]["rewards"] == pytest.approx(kit.get(real).metrics["log"]["rewards"])


def test_checkpoints_along_a_stage_end_at_the_stored_weights(kit):
    along = Stage(Base(), "cw", steps=2, save_every=1)
    steps = kit.checkpoints_along(along)
    assert [s for s, _ in steps] == [0, 1, 2]
    stored = dict(kit.weights(along))
    with safe_open(str(steps[-1][1]), "pt") as last:
        assert all(torch.equal(last.get_tensor(n), stored[n]) for n in last.keys())
    with pytest.raises(ValueError, match="save_every"):
        kit.checkpoints_along(Stage(Base(), "cw", steps=2))
