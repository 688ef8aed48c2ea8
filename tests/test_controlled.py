"""The ladder's controlled rung (mdrl_lib.controlled): the network's structure, its losses against hand-computed
values, Newton's minimum against a closed form, and a small world's measurements (deterministic, premises read the
way the module says)."""
from __future__ import annotations

import pytest
import torch

from mdrl_lib import perturbation as pt
from mdrl_lib.config import ConfigError, RunConfig
from mdrl_lib.controlled import (GROUPS, LAYER, ControlledNet, ControlledRung, ControlledWorld, TaskLoss, b_stage,
                                 build_world, channel_activity, channel_groups, item_losses, measure, newton_minimum,
                                 task_inputs)
from mdrl_lib.kit import open_kit

SMALL = ControlledWorld(group_inputs=2, group_channels=2, classes=3, train_items=60, held_out_items=200,
                        base_steps=200, rank=4, random_subspaces=3, nonshared_draws=2, gd_max_steps=400)


def test_settings_are_checked_with_clear_errors():
    with pytest.raises(ConfigError, match="controlled leak"):
        ControlledWorld(leak=1.5)
    with pytest.raises(ConfigError, match="checkpoint_every"):
        ControlledWorld(b_steps=3, checkpoint_every=5)
    with pytest.raises(ConfigError, match="b_rates"):
        ControlledWorld(b_rates=())
    with pytest.raises(ConfigError, match="b_rates"):
        ControlledWorld(b_rates=(0.1, -1.0))
    with pytest.raises(ConfigError, match="controlled seed"):
        ControlledWorld(seed=-1)
    with pytest.raises(ConfigError, match="gd_bound"):
        ControlledWorld(gd_bound=1.0)


def test_each_channel_group_reads_its_own_input_group_only():
    net, data = build_world(SMALL)
    mlp = net.mlp
    g, k = SMALL.group_inputs, SMALL.group_channels
    assert mlp.read_mask.shape == (SMALL.channels, SMALL.inputs)
    for i in range(len(GROUPS)):
        block = mlp.read_mask[i * k:(i + 1) * k]
        assert block[:, i * g:(i + 1) * g].all() and block.sum() == k * g  # nothing else is read
    assert torch.equal(mlp.gate_proj.weight * (1 - mlp.read_mask), torch.zeros_like(mlp.gate_proj.weight))
    assert not net.head.weight.requires_grad
    assert sorted(channel_groups(SMALL)["shared"]) == [(LAYER, 2), (LAYER, 3)]
    # an input on A's group moves A's channels only
    x = torch.zeros(1, SMALL.inputs, dtype=torch.float64)
    x[0, 0] = 1.0
    activity = channel_activity(net, x)[LAYER]
    assert activity[:k].abs().sum() > 0 and activity[k:].abs().sum() == 0


def test_task_inputs_scale_the_other_task_s_group_by_the_leak():
    world = ControlledWorld(group_inputs=3, leak=0.25)
    one = task_inputs(world, "a", 50, torch.Generator().manual_seed(0))
    unscaled = torch.randn(50, world.inputs, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(one[:, :6], unscaled[:, :6]) and torch.allclose(one[:, 6:], 0.25 * unscaled[:, 6:])
    with pytest.raises(ValueError, match="valid: a, b"):
        task_inputs(world, "c", 1, torch.Generator())


def test_losses_against_hand_computed_values():
    net, data = build_world(SMALL)
    x, p = data.train["a"]
    by_hand = -(p * torch.log(torch.softmax(net(x), dim=1))).sum(1).detach()
    assert torch.allclose(item_losses(net, x, p), by_hand)
    mask = net.trained_mask()
    reference = {n: q.detach().clone() - 0.1 for n, q in net.named_parameters() if n in mask}
    loss = TaskLoss(data, "a", mask, reference, proximal=0.5)
    coordinates = sum(int(m.sum()) for m in mask.values())
    assert float(loss(net).detach()) == pytest.approx(float(by_hand.mean()) + 0.5 * 0.5 * coordinates * 0.01)
    assert float(TaskLoss(data, "a", mask)(net).detach()) == pytest.approx(float(by_hand.mean()))


def test_newton_finds_the_closed_form_minimum_of_a_strictly_convex_loss():
    model = torch.nn.Linear(3, 1, bias=False).double()
    target = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    matrix = torch.tensor([[2.0, 0.3, 0.0], [0.3, 1.0, 0.1], [0.0, 0.1, 0.5]], dtype=torch.float64)

    def loss(m):  # 1/2 (w - t)^T A (w - t) + sum cosh(w - t) - 3: minimum at w = t
        d = m.weight[0] - target
        return 0.5 * d @ matrix @ d + torch.cosh(d).sum() - 3.0

    space = pt.ParameterSpace.from_model(model)
    result = newton_minimum(loss, model, space, tolerance=1e-12)
    assert result["converged"] and result["grad_norm"] <= 1e-12
    assert torch.allclose(model.weight[0], target, atol=1e-10)
    eigenvalues = torch.linalg.eigvalsh(matrix + torch.eye(3, dtype=torch.float64))  # A + cosh''(0) I
    assert result["hessian_min"] == pytest.approx(float(eigenvalues[0]))


def test_b_stage_keeps_its_checkpoints_and_restores_the_weights():
    net, data = build_world(SMALL)
    mask = net.trained_mask()
    space = pt.ParameterSpace.from_model(net, list(mask), mask=mask)
    theta = space.get(net).clone()
    loss_b = TaskLoss(data, "b", mask)
    points = b_stage(net, space, loss_b, theta, 0.1, 5, 2)
    assert sorted(points) == [0, 2, 4, 5] and torch.equal(space.get(net), theta)
    step = theta - 0.1 * pt.gradient(loss_b, net, space).double()
    assert torch.allclose(b_stage(net, space, loss_b, theta, 0.1, 1, 1)[1], step)


@pytest.fixture(scope="module")
def small_result():
    torch.set_num_threads(1)
    return measure(SMALL)


def test_measure_is_deterministic_and_reads_the_rate_rule(small_result):
    again = measure(SMALL)
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in small_result.items()
                                                                  if k != "seconds"}
    trials = small_result["b_trials"]
    assert [t["rate"] for t in trials] == list(SMALL.b_rates[:len(trials)])
    assert small_result["b_rate"] == trials[-1]["rate"]
    # the rule: the first (largest) rate within the target, or the last rate tried
    assert all(t["locality_error"] > SMALL.locality_target for t in trials[:-1])
    assert trials[-1]["locality_error"] <= SMALL.locality_target or len(trials) == len(SMALL.b_rates)


def test_measure_s_figures_hang_together(small_result):
    r = small_result
    assert r["minimum"]["converged"] and r["minimum"]["hessian_min"] > 0  # a true minimum of L_A
    assert set(r["routes"]["shared"]) <= set(r["routes"]["a"]) & set(r["routes"]["b"])
    assert r["rank"] == min(SMALL.rank, r["coordinates"]) and len(r["eigenvalues"]) == r["rank"]
    assert r["eigenvalues"] == sorted(r["eigenvalues"], reverse=True)
    assert len(r["nonshared_parts"]) == SMALL.nonshared_draws and len(r["before"]) == SMALL.held_out_items
    assert r["segment"]["t"] == [0.25, 0.5, 0.75, 1.0]
    assert [a["step"] for a in r["along"]] == [0, 2, 4, 6, 8, 10]
    last = r["along"][-1]
    assert last["measured"] == pytest.approx(r["segment"]["measured"][-1])
    assert last["predicted"] == pytest.approx(r["segment"]["predicted"][-1], rel=1e-6)
    assert 0.0 <= r["backflow"] and r["curvature_term"] > 0
    refresh = r["refresh"]
    assert refresh["alpha"] == pytest.approx(SMALL.gd_rate_scale / r["lambda_max"])
    assert len(refresh["distance_s"]) == refresh["steps"] + 1
    assert refresh["steps"] == pt.steps_to_bound(refresh["alpha"], r["mu"], SMALL.gd_bound, SMALL.gd_max_steps)


def test_the_artifact_s_key_follows_every_setting(tmp_path):
    kit = open_kit(RunConfig.from_params(scale="toy", seed=0, run_dir=str(tmp_path / "run")))
    keys = {kit.key(ControlledRung(w)) for w in (SMALL, ControlledWorld(), ControlledWorld(seed=1),
                                                 ControlledWorld(leak=0.2), ControlledWorld(b_rates=(0.01,)))}
    assert len(keys) == 5 and kit.key(ControlledRung(ControlledWorld())) == kit.key(ControlledRung())
    with pytest.raises(ConfigError, match="ControlledWorld"):
        ControlledRung({"seed": 0})
    net = ControlledNet(SMALL, torch.Generator().manual_seed(0))
    assert net.mlp.down_proj.weight.dtype == torch.float64  # the rung runs in float64
