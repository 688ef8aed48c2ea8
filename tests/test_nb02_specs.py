"""Notebook 02's cached analyses (the specs of mdrl_lib.routes): what their keys cover, and each built on a
tiny kit and read back against the same analysis computed directly."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from mdrl_lib import routes
from mdrl_lib.config import ConfigError, RunConfig
from mdrl_lib.domains.base import DOMAIN_NAMES
from mdrl_lib.evaluation import score_items
from mdrl_lib.kit import Kit
from mdrl_lib.routes import (AblationScores, ChannelActivity, GradientsOnRoutes, ObjectiveGradient,
                             UpdatesOnRoutes)
from mdrl_lib.specs import Base, ObjectiveBatch, Spec, Stage


@dataclass(frozen=True)
class Nudged(Spec):
    """A stand-in expert: ``parent``'s weights plus seeded noise, with the ``domain`` UpdatesOnRoutes reads."""

    parent: Spec
    domain: str
    kind: ClassVar[str] = "nudged"

    def inputs(self):
        return (self.parent,)

    def key_fields(self, kit):
        return {"parent": kit.key(self.parent), "domain": self.domain}

    def build(self, kit, directory, progress):
        from mdrl_lib.models import save_model

        model, tokenizer = kit.load(self.parent)
        generator = torch.Generator().manual_seed(DOMAIN_NAMES.index(self.domain))
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * torch.randn(p.shape, generator=generator))
        save_model(model, tokenizer, directory)
        return {}


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("nb02-keys")
    return Kit(RunConfig.from_params(run_dir=str(run_dir)))


def objective(domain="math", seed=0, source=Base()):
    return ObjectiveBatch(source, domain, prompts=3, samples=2, seed=seed, min_score=0.0)


def test_activity_keys_cover_model_domain_positions_and_prompts(kit):
    spec = ChannelActivity(Base(), "math", "answer", 20)
    keys = {kit.key(dataclasses.replace(spec, **change)) for change in
            ({}, {"model": Stage(Base(), "math")}, {"domain": "qa"}, {"positions": "prompt"}, {"prompts": 21})}
    assert len(keys) == 5 and kit.key(ChannelActivity(Base(), " Math ", "answer", 20)) == kit.key(spec)
    with pytest.raises(ConfigError, match="activity positions"):
        ChannelActivity(Base(), "math", "question")


def test_ablation_keys_cover_the_set_and_take_the_seed_only_for_a_control(kit):
    spec = AblationScores(Base(), "shared", ("code", "math"))
    changes = ({}, {"ablate": "only", "domains": ("math",)}, {"domains": ()}, {"domains": ("math", "code")},
               {"control": True}, {"mode": "mean"}, {"route_fraction": 0.2}, {"route_prompts": 50},
               {"model": Stage(Base(), "qa")})
    assert len({kit.key(dataclasses.replace(spec, **c)) for c in changes}) == len(changes)
    assert kit.key(dataclasses.replace(spec, seed=5)) == kit.key(spec)
    control = dataclasses.replace(spec, control=True)
    assert kit.key(dataclasses.replace(control, seed=5)) != kit.key(control)
    assert set(spec.inputs()[1:]) == set(routes.answer_activity_specs(Base(), 300))
    for bad, match in (({"ablate": "only", "domains": ()}, "takes 1"), ({"domains": ("math",)}, "takes 0 or 2"),
                       ({"mode": "noise"}, "ablation mode"), ({"route_fraction": 0.0}, "route_fraction")):
        with pytest.raises(ConfigError, match=match):
            dataclasses.replace(spec, **bad)


def test_gradient_and_route_cosine_keys_cover_their_inputs(kit):
    gradient = ObjectiveGradient(Base(), objective())
    assert len({kit.key(gradient), kit.key(ObjectiveGradient(Base(), objective(seed=1))),
                kit.key(ObjectiveGradient(Stage(Base(), "math"), objective()))}) == 3
    on_routes = GradientsOnRoutes((gradient,), Base(), 0.1, 30)
    changes = ({}, {"gradients": (gradient, gradient)}, {"route_fraction": 0.2}, {"route_prompts": 31},
               {"draws": 5}, {"seed": 1}, {"routes_at": Stage(Base(), "qa")})
    assert len({kit.key(dataclasses.replace(on_routes, **c)) for c in changes}) == len(changes)
    updates = UpdatesOnRoutes(Base(), (Stage(Base(), "math"), Stage(Base(), "qa")))
    changes = ({}, {"experts": (Stage(Base(), "math"), Stage(Base(), "cw"))}, {"route_fraction": 0.2},
               {"route_prompts": 31}, {"draws": 5}, {"seed": 1})
    assert len({kit.key(dataclasses.replace(updates, **c)) for c in changes}) == len(changes)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("nb02-tiny")
    return Kit(RunConfig.from_params(run_dir=str(run_dir), warmup_steps=20, data_eval_size=6, model_hidden_size=32,
                                     model_num_layers=2, model_num_heads=2, model_intermediate_size=64))


def test_activity_round_trips_in_layer_order(tiny):
    spec = ChannelActivity(Base(), "qa", "answer", 12)
    opened = tiny.open(spec, progress=False)
    model, tokenizer = tiny.load(Base())
    examples = tiny.splits("qa").train[:12]
    direct = routes.route_activity(model, tokenizer, [e.prompt for e in examples], [e.answer for e in examples],
                                   positions="answer")
    assert opened.tokens == direct.tokens and tiny.get(spec).metrics["prompts"] == 12
    for part in ("channels", "channel_means", "heads"):
        assert list(getattr(opened, part)) == list(getattr(direct, part)) == ["model.layers.0", "model.layers.1"]
        assert all(torch.equal(getattr(opened, part)[n], getattr(direct, part)[n]) for n in getattr(direct, part))


def test_ablations_score_the_chosen_set_and_a_matched_disjoint_control(tiny):
    only = AblationScores(Base(), "only", ("math",), route_fraction=0.2, route_prompts=12)
    shared = AblationScores(Base(), "shared", (), route_fraction=0.2, route_prompts=12)
    sets, _ = routes.answer_routes(tiny, Base(), 12, 0.2)
    expected_only, _ = routes.ablation_channels(sets, "only", ("math",))
    expected_shared, pair = routes.ablation_channels(sets, "shared")
    opened = tiny.open(only, progress=False)
    assert expected_only and set(opened.channels) == expected_only and opened.domains == ("math",)
    assert tiny.open(shared, progress=False).domains == pair
    model, tokenizer = tiny.load(Base())
    with routes.ablate_channels(model, expected_only):
        direct = score_items(model, tokenizer, tiny.evals, max_new_tokens=tiny.config.rl.max_completion_length)
    assert opened.items[["domain", "item", "score"]].equals(direct[["domain", "item", "score"]])
    control = tiny.open(dataclasses.replace(shared, control=True, seed=4), progress=False)
    chosen = set(tiny.open(shared, progress=False).channels)
    assert chosen == expected_shared and not set(control.channels) & chosen
    per_layer = lambda channels: sorted(layer for layer, _ in channels)  # noqa: E731
    assert per_layer(control.channels) == per_layer(chosen)


def test_gradients_round_trip_and_their_route_cosines_follow_them(tiny):
    specs = {(n, r): ObjectiveGradient(Base(), objective(n, r)) for n in ("math", "qa") for r in (0, 1)}
    model, _ = tiny.load(Base(), placement="analysis")
    direct = tiny.objective(objective("math")).gradient(model)
    opened = tiny.open(specs[("math", 0)], progress=False)
    assert list(opened) == list(direct) and all(torch.equal(opened[n], direct[n]) for n in direct)
    split = routes.split_by_module(opened)
    by_module = routes.module_gradients(tiny.objective(objective("math")).loss, model)
    assert all(torch.equal(split[m], by_module[m]) for m in by_module)
    on_routes = GradientsOnRoutes(tuple(specs.values()), Base(), 0.3, 12, draws=3, seed=2)
    rows = tiny.open(on_routes, progress=False)
    sets, sizes = routes.answer_routes(tiny, Base(), 12, 0.3)
    both = sets["math"] & sets["qa"]
    assert both and [(r["a"], r["b"]) for r in rows] == [("math", "qa")]
    grads = {k: tiny.open(s) for k, s in specs.items()}
    row = rows[0]
    assert row["shared"] == len(both)
    assert row["on"] == [routes.on_channels(grads[("math", r)], grads[("qa", r)], both).on for r in (0, 1)]
    assert row["floor"] == min(routes.on_channels(grads[(n, 0)], grads[(n, 1)], both).on for n in ("math", "qa"))
    assert (row["random_mean"], row["random_sd"]) == routes.on_random_channels(
        grads[("math", 0)], grads[("qa", 0)], both, sizes, seed=2, draws=3)


def test_updates_on_routes_compare_expert_deltas_on_shared_channels(tiny):
    experts = (Nudged(Base(), "code"), Nudged(Base(), "math"), Nudged(Base(), "qa"))
    rows = tiny.open(UpdatesOnRoutes(Base(), experts, 0.3, 12, draws=3), progress=False)
    sets, _ = routes.answer_routes(tiny, Base(), 12, 0.3)
    pairs = [(a, b) for a, b in (("code", "math"), ("code", "qa"), ("math", "qa")) if sets[a] & sets[b]]
    assert pairs and [(r["a"], r["b"]) for r in rows] == pairs
    base = dict(tiny.weights(Base()))
    deltas = {e.domain: {n: t - base[n] for n, t in tiny.weights(e)} for e in experts}
    for row in rows:
        expected = routes.on_channels(deltas[row["a"]], deltas[row["b"]], sets[row["a"]] & sets[row["b"]])
        assert row["on"] == pytest.approx(expected.on) and row["elsewhere"] == pytest.approx(expected.off)
        assert -1 <= row["random_mean"] <= 1 and row["random_sd"] >= 0
