"""Notebook 04's replayed-reward control: each control group gets a permutation of the real stage's group rewards
at the same call, whatever its completions; the Stage field that names the replayed stage; the clear error for a
stage stored before group rewards were recorded. Nothing is trained here."""
from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from mdrl_lib.config import ConfigError, RunConfig
from mdrl_lib.specs import Base, Stage
from mdrl_lib.store import Artifact
from mdrl_lib.training import (GROUP_REWARDS_FILE, REWARD_MODES, GroupRecorder, GRPOLog, as_groups,
                               overridden_reward, replay_groups, replayed_reward)

G = 4  # completions per group


def recorded_calls(calls=5, groups=3, seed=0):
    """Hand-made real-stage records: per call, ``groups`` groups of ``G`` rewards, some all-equal (zero advantage)."""
    rng = random.Random(seed)
    out = []
    for _ in range(calls):
        call = []
        for g in range(groups):
            if rng.random() < 0.4:
                call.append([float(rng.random() < 0.5)] * G)  # a zero-advantage group
            else:
                call.append([round(rng.random(), 3) for _ in range(G)])
        out.append(call)
    return out


def zero_advantage_share(flat, size=G):
    groups = as_groups(flat, size)
    return sum(len(set(g)) == 1 for g in groups) / len(groups)


def advantages(flat, size=G):
    """GRPO's group-normalised advantages (r - mean) / (std + 1e-4), as trl computes them, rounded."""
    out = []
    for g in as_groups(flat, size):
        mean = sum(g) / len(g)
        std = (sum((x - mean) ** 2 for x in g) / (len(g) - 1)) ** 0.5
        out += [round((x - mean) / (std + 1e-4), 9) for x in g]
    return out


def verifier_calls():
    seen = []

    def verifier(prompts=None, completions=None, **_):
        seen.append(list(completions))
        return [float(len(c) % 2) for c in completions]

    return verifier, seen


def test_each_control_group_gets_a_permutation_of_the_real_groups_rewards_at_the_same_call():
    recorded = recorded_calls()
    verifier, _ = verifier_calls()
    control = replayed_reward(verifier, recorded, seed=11, num_generations=G)
    orders_changed = 0
    for t, call in enumerate(recorded):
        completions = [f"c{t}-{i}" for i in range(len(call) * G)]
        given = control(prompts=["p"] * len(completions), completions=completions)
        for g, real in enumerate(call):
            assert sorted(given[G * g:G * g + G]) == sorted(real)  # the same multiset, group by group
            orders_changed += given[G * g:G * g + G] != real
        flat_real = [r for group in call for r in group]
        assert zero_advantage_share(given) == zero_advantage_share(flat_real)  # exactly, at every call
        assert sorted(map(abs, advantages(given))) == sorted(map(abs, advantages(flat_real)))
    assert orders_changed > 0  # a permutation, not a copy


def test_the_control_rewards_do_not_depend_on_the_completions():
    recorded = recorded_calls(calls=3)
    a_verifier, a_seen = verifier_calls()
    b_verifier, _ = verifier_calls()
    a = replayed_reward(a_verifier, recorded, seed=3, num_generations=G)
    b = replayed_reward(b_verifier, recorded, seed=3, num_generations=G)
    for t in range(3):
        n = len(recorded[t]) * G
        right = a(prompts=["p"] * n, completions=["the right answer"] * n)
        junk = b(prompts=["q"] * n, completions=[f"junk {i} " * i for i in range(n)])
        assert right == junk
    assert len(a_seen) == 3  # the verifier is asked (for the record) but its answer is not used
    # the permutation is the control's own, seeded by its seed and the call
    first = replayed_reward(a_verifier, recorded, seed=3, num_generations=G)
    n = len(recorded[0]) * G
    assert first(prompts=["p"] * n, completions=["x"] * n) == replay_groups(recorded[0], random.Random("replayed:3:0"))
    seeds = [replayed_reward(a_verifier, recorded, seed=s, num_generations=G)(prompts=["p"] * n, completions=["x"] * n)
             for s in range(8)]
    assert len({tuple(x) for x in seeds}) > 1


def test_the_replayed_control_refuses_calls_that_do_not_match_the_record():
    recorded = recorded_calls(calls=1, groups=2)
    verifier, _ = verifier_calls()
    control = replayed_reward(verifier, recorded, seed=0, num_generations=G)
    with pytest.raises(ValueError, match="has 5 completions, the replayed stage's had 8"):
        control(prompts=["p"] * 5, completions=["x"] * 5)
    control = replayed_reward(verifier, recorded, seed=0, num_generations=G)
    control(prompts=["p"] * 8, completions=["x"] * 8)
    with pytest.raises(ValueError, match="recorded 1 calls"):
        control(prompts=["p"] * 8, completions=["x"] * 8)
    with pytest.raises(ValueError, match="num_generations is 2"):
        replayed_reward(verifier, recorded, seed=0, num_generations=2)(prompts=["p"] * 8, completions=["x"] * 8)
    with pytest.raises(ValueError, match="needs replay"):
        overridden_reward(verifier, "replayed", seed=0, num_generations=G)
    with pytest.raises(ValueError, match="for reward mode 'replayed' only"):
        overridden_reward(verifier, "permuted", seed=0, num_generations=G, replay=recorded)
    assert "replayed" in REWARD_MODES


def test_the_recorder_keeps_each_calls_groups_and_the_stage_record_says_what_was_given():
    verifier, _ = verifier_calls()
    recorder = GroupRecorder(G)
    seen = recorder.wrap(verifier, "verifier")
    recorded = recorded_calls(calls=2, groups=2)
    given = recorder.wrap(overridden_reward(seen, "replayed", 5, num_generations=G, replay=recorded), "given")
    for _ in range(2):
        given(prompts=["p"] * 8, completions=["ab", "a", "abc", "", "a", "a", "ab", "abcd"])
    assert [[sorted(g) for g in call] for call in recorder.calls["given"]] == \
        [[sorted(g) for g in call] for call in recorded]
    assert recorder.calls["verifier"][0] == [[0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]]
    log = GRPOLog([0.5, 0.5], [], 2, 1.0, group_rewards=recorder.calls)
    record = log.group_rewards_record("replayed", G)
    assert record["calls"] == recorder.calls["given"] and record["verifier_calls"] == recorder.calls["verifier"]
    assert "verifier_calls" not in GRPOLog([0.5], [], 1, 1.0, group_rewards={"given": [[[1.0] * G]]}) \
        .group_rewards_record("verifier", G)
    assert "group_rewards" not in log.to_metrics()  # stored in its own file, not in the manifest
    with pytest.raises(ValueError, match="groups of 4"):
        as_groups([1.0] * 6, 4)


# ---- the Stage field that names the replayed stage ------------------------------------------------------------

def kit_at(tmp_path):
    from mdrl_lib.kit import Kit

    return Kit(RunConfig.from_params(run_dir=str(tmp_path)))


def test_a_stage_key_is_unchanged_without_replay_and_changes_with_it(tmp_path):
    kit = kit_at(tmp_path)
    after = Stage(Base(), "math")
    real = Stage(after, "qa")
    assert "replay" not in real.key_fields(kit) and real.inputs() == (after,)
    assert kit.key(Stage(after, "qa", replay=None)) == kit.key(real)
    control = Stage(after, "qa", rl_seed=1, reward="replayed", replay=real)
    assert control.key_fields(kit)["replay"] == kit.key(real) and control.inputs() == (after, real)
    other = Stage(after, "qa", rl_seed=1, reward="replayed", replay=Stage(after, "qa", rl_seed=2))
    assert len({kit.key(control), kit.key(other), kit.key(Stage(after, "qa", rl_seed=1))}) == 3
    assert "reward=replayed" in control.label()


def test_a_stage_refuses_replay_without_the_replayed_reward_and_the_reverse():
    real = Stage(Base(), "qa")
    with pytest.raises(ConfigError, match="needs replay="):
        Stage(Base(), "qa", reward="replayed")
    with pytest.raises(ConfigError, match="replay goes with reward 'replayed' only"):
        Stage(Base(), "qa", replay=real)
    with pytest.raises(ConfigError, match="same domain"):
        Stage(Base(), "cw", reward="replayed", replay=real)
    with pytest.raises(ConfigError, match="expected a Stage"):
        Stage(Base(), "qa", reward="replayed", replay=Base())


def test_a_stage_stored_without_group_rewards_cannot_be_replayed_and_says_to_rebuild_it(tmp_path):
    real = Stage(Stage(Base(), "math"), "qa")
    (tmp_path / "old").mkdir()
    fake = SimpleNamespace(get=lambda spec: Artifact("stage-old", tmp_path / "old", {}),
                           key=lambda spec: "stage-old")
    with pytest.raises(FileNotFoundError, match=r"no recorded group rewards.*rebuild that stage.*deleting"):
        real.recorded_group_rewards(fake)
    calls = recorded_calls(calls=2)
    (tmp_path / "old" / GROUP_REWARDS_FILE).write_text(json.dumps({"mode": "verifier", "num_generations": G,
                                                                    "calls": calls}))
    assert real.recorded_group_rewards(fake) == calls


def test_notebook_04s_control_replays_the_real_later_stages(tmp_path):
    from mdrl_lib.interference import REAL, control_specs, replicate_names

    kit = kit_at(tmp_path)
    specs = control_specs(kit, ["code", "math", "qa", "cw"], "math", rl_seed=0, replicates=3)
    chain = kit.chain_specs(["code", "math", "qa", "cw"], 0)
    names = replicate_names(specs)
    assert names == [f"replayed rewards (seed {s})" for s in (0, 1, 2)]
    for name in names:
        cw = specs[name]
        assert (cw.reward, cw.replay, cw.parent.reward, cw.parent.replay) == ("replayed", chain[3], "replayed", chain[2])
        assert cw.parent.parent == specs["after"] == chain[1]
    assert specs[REAL] == chain[3]
    assert Path(GROUP_REWARDS_FILE).suffix == ".json"
