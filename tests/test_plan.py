"""The plan: what the notebooks need, the build graph and its schedule, building with workers."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from mdrl_lib import plan
from mdrl_lib.config import ConfigError, RunConfig
from mdrl_lib.kit import open_kit
from mdrl_lib.specs import Base, Scores, Spec, Stage

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@dataclass(frozen=True)
class Fake(Spec):
    """A cheap artifact: writes its name after ``seconds`` of sleep; ``fail`` raises instead."""

    name: str
    parents: tuple = ()
    seconds: float = 0.0
    fail: bool = False
    kind: ClassVar[str] = "fake"

    def inputs(self):
        return self.parents

    def key_fields(self, kit):
        return {"name": self.name, "parents": [kit.key(p) for p in self.parents]}

    def build(self, kit, directory, progress):
        if self.fail:
            raise ValueError(f"{self.name} cannot be built")
        for parent in self.parents:  # what it needs is stored before it starts
            assert kit.store.get(kit.key(parent)) is not None
        time.sleep(self.seconds)
        (directory / "name.txt").write_text(self.name)
        return {"start": time.time() - self.seconds}

    def label(self):
        return self.name


def planned(run_dir, *specs):
    params = (("run_dir", str(run_dir)),)
    return [plan.Planned(spec, params, ("test",)) for spec in specs]


def test_graph_shares_inputs_and_ranks_the_longest_chain_first(tmp_path):
    a = Fake("a")
    b = Fake("b", (a,))
    c = Fake("c", (b,))
    d = Fake("d")
    nodes = plan.build_graph(planned(tmp_path, c, b, d))
    by_name = {n.label: n for n in nodes.values()}
    assert sorted(by_name) == ["a", "b", "c", "d"]  # b is listed twice and needed by c: one node
    assert by_name["c"].needs == {by_name["b"].key} and by_name["b"].needs == {by_name["a"].key}
    cost = plan.TOY_SECONDS.get("fake", 1.0)
    assert by_name["a"].priority == pytest.approx(3 * cost)  # a -> b -> c
    assert by_name["d"].priority == pytest.approx(cost)
    assert plan.critical_path(nodes) == pytest.approx(3 * cost)
    # two workers: a, d at once, then b, then c: three units; one worker: all four in a row
    assert plan.wall_estimate(nodes, 2) == pytest.approx(3 * cost)
    assert plan.wall_estimate(nodes, 1) == pytest.approx(4 * cost)


def test_stored_artifacts_are_not_rebuilt_and_free_what_waits_for_them(tmp_path):
    kit = open_kit(RunConfig.from_params(run_dir=str(tmp_path)))
    a = Fake("a")
    kit.get(a, progress=False)
    nodes = plan.build_graph(planned(tmp_path, Fake("b", (a,))))
    by_name = {n.label: n for n in nodes.values()}
    assert by_name["a"].stored and by_name["a"].cost == 0
    assert by_name["b"].needs == set()
    assert plan.build(plan.build_graph(planned(tmp_path, a)), workers=2) == {}


def test_build_runs_independent_artifacts_at_once_and_each_after_its_inputs(tmp_path):
    a, b = Fake("a", seconds=1.5), Fake("b", seconds=1.5)
    c = Fake("c", (a, b))
    nodes = plan.build_graph(planned(tmp_path, c))
    lines = []
    built = plan.build(nodes, workers=2, log=lines.append)
    assert set(built) == set(nodes) and len(lines) == 3
    kit = open_kit(RunConfig.from_params(run_dir=str(tmp_path)))
    starts = {s.name: kit.store.get(kit.key(s)).metrics["start"] for s in (a, b, c)}
    assert abs(starts["a"] - starts["b"]) < 1.0  # the two workers slept side by side
    assert starts["c"] >= max(starts["a"], starts["b"]) + 1.4
    assert (kit.store.get(kit.key(c)).path / "name.txt").read_text() == "c"


def test_a_failed_build_names_the_artifact_and_leaves_nothing_half_written(tmp_path):
    nodes = plan.build_graph(planned(tmp_path, Fake("broken", fail=True)))
    with pytest.raises(RuntimeError, match="building broken .* ValueError: broken cannot be built"):
        plan.build(nodes, workers=1)
    assert open_kit(RunConfig.from_params(run_dir=str(tmp_path))).store.keys() == []
    with pytest.raises(ConfigError, match="workers"):
        plan.build(nodes, workers=0)


def test_estimates_count_steps(tmp_path):
    config = RunConfig.from_params(run_dir=str(tmp_path))
    assert plan.estimate("base", Base(), config) == pytest.approx(plan.TOY_SECONDS["warmup_step"] * config.warmup.steps)
    assert plan.estimate("stage", Stage(Base(), "qa", steps=10), config) == pytest.approx(10 * plan.TOY_SECONDS["grpo_step"])
    assert plan.estimate("stage", Stage(Base(), "qa"), config) == pytest.approx(config.rl.steps * plan.TOY_SECONDS["grpo_step"])


def test_notebook_params_take_the_overrides_a_notebook_declares(tmp_path):
    """``run -p NAME VALUE`` reaches only the notebooks that declare NAME; the rest keep their recipe's defaults."""
    two = plan.notebook_params("02_shared_routes", {"run_dir": str(tmp_path), "route_fraction": 0.3, "rate_grid": "1e-5"})
    one = plan.notebook_params("01_sparse_edits", {"run_dir": str(tmp_path), "route_fraction": 0.3, "rate_grid": "1e-5"})
    assert two.route_fraction == 0.3 and one.rate_grid == "1e-05" and one.rates == (1e-5,)
    three = plan.notebook_params("03_perturbation_theory", {"route_fraction": 0.3})
    assert three.conflict_route_fraction == 0.2  # another name, another meaning: untouched
    with pytest.raises(ConfigError, match="route_fraction: expected a finite number > 0"):
        plan.notebook_params("02_shared_routes", {"route_fraction": -1.0})


def test_the_plans_of_notebooks_00_and_01_hold_what_they_ask_for(tmp_path):
    """Notebook 01 trains every expert, a second RL seed of Math and a bf16 grid (its own run config)."""
    items = plan.notebook_plan(NOTEBOOKS / "01_sparse_edits.ipynb", {"run_dir": str(tmp_path), "grid_steps": 7,
                                                                    "rate_grid": "2e-4,1e-5,1e-6"})
    kit = open_kit(RunConfig.from_params(run_dir=str(tmp_path)))
    keys = {kit.key(i.spec) for i in items if "rl_precision" not in i.params}
    for name in ("code", "math", "qa", "cw"):
        assert kit.key(Stage(Base(), name)) in keys and kit.key(Scores(Stage(Base(), name))) in keys
    assert kit.key(Stage(Base(), "math", rl_seed=1)) in keys
    grid = [i for i in items if i.params.get("rl_precision") == "bf16"]
    assert {i.spec.of.lr for i in grid if isinstance(i.spec, Scores)} == {2e-4, 1e-5, 1e-6}
    assert {i.spec.steps for i in grid if isinstance(i.spec, Stage)} == {7}
    nodes = plan.build_graph(items + plan.notebook_plan(NOTEBOOKS / "00_toy_world.ipynb", {"run_dir": str(tmp_path)}))
    assert sum(n.kind == "base" for n in nodes.values()) == 1  # the bf16 grid's config shares the base
    text = plan.format_plan(nodes, "toy", 2)
    assert "to build" in text and "with 2 worker(s)" in text


def test_default_workers_fit_memory(monkeypatch):
    monkeypatch.setattr(plan, "available_memory_gb", lambda: 1.5)
    assert plan.default_workers("toy") == 1
    monkeypatch.setattr(plan, "available_memory_gb", lambda: 64.0)
    assert plan.default_workers("toy") >= 1
    assert plan.default_workers("full") == 1


def test_a_build_process_lets_a_notebook_start_once_its_own_artifacts_are_in(tmp_path):
    import sys

    quick, slow = Fake("quick"), Fake("slow")
    params = (("run_dir", str(tmp_path)),)
    nodes = plan.build_graph([plan.Planned(quick, params, ("00_a",)), plan.Planned(slow, params, ("01_b",))])
    keys = {n.label: k for k, n in nodes.items()}
    store = tmp_path / "store"
    script = ("import pathlib, sys, time\n"
              "store = pathlib.Path(sys.argv[1])\n"
              "for key in sys.argv[2:]:\n"
              "    time.sleep(1.5)\n"
              "    (store / key).mkdir(parents=True)\n"
              "    (store / key / 'manifest.json').write_text('{}')\n")
    builder = plan.BuildProcess(nodes, [sys.executable, "-c", script, str(store), keys["quick"], keys["slow"]], store,
                                poll_seconds=0.1)
    builder.wait_for("00_a")
    assert (store / keys["quick"] / "manifest.json").is_file() and not (store / keys["slow"]).exists()
    builder.wait_for("01_b")
    assert (store / keys["slow"] / "manifest.json").is_file()
    builder.join()
    failing = plan.BuildProcess(nodes, [sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "other",
                                poll_seconds=0.1)
    with pytest.raises(RuntimeError, match="exit code 3"):
        failing.wait_for("00_a")



def test_cheap_builds_go_first_then_the_longest_chain(tmp_path):
    params = (("run_dir", str(tmp_path)),)
    long_chain = Stage(Stage(Base(), "code", steps=200), "math", steps=200)
    items = [plan.Planned(Scores(Base()), params, ("00_a",)), plan.Planned(long_chain, params, ("04_d",)),
             plan.Planned(Stage(Base(), "qa", steps=10), params, ("01_b",))]
    nodes = plan.build_graph(items)
    ready = [n for n in nodes.values() if n.needs == {k for k, m in nodes.items() if m.kind == "base"}]
    order = [n.label for n in sorted(ready, key=plan.schedule_order)]
    assert order == ["scores of base", "base > qa (steps=10)", "base > code (steps=200)"]


def test_the_plan_prints_the_budget_per_world(tmp_path):
    items = plan.notebook_plan(NOTEBOOKS / "04_sequential_rl.ipynb",
                               {"run_dir": str(tmp_path), "world_seeds": "7", "digit_free_control": True})
    nodes = plan.build_graph(items)
    worlds = plan.world_costs(n for n in nodes.values() if not n.stored)
    assert set(worlds) == {"world seed 0", "world seed 7", "world seed 0 (digit-free)"}
    assert sum(worlds.values()) == pytest.approx(sum(n.cost for n in nodes.values()))
    assert worlds["world seed 7"] == pytest.approx(worlds["world seed 0 (digit-free)"])  # a base and one chain each
    text = plan.format_plan(nodes, "toy", 2)
    assert f"budget: {plan.TOY_BUDGET['work_per_world_cpu_s']} s of work per world seed" in text
    assert "world seed 7:" in text


def test_the_budget_scales_with_this_cpu_s_warm_up():
    scaled = plan.budget_on_this_cpu(plan.BUDGET_REFERENCE_WARMUP_S * 1.5)
    assert scaled == {name: 1.5 * value for name, value in plan.TOY_BUDGET.items()}
    assert plan.budget_on_this_cpu(plan.BUDGET_REFERENCE_WARMUP_S) == {k: float(v) for k, v in plan.TOY_BUDGET.items()}
    with pytest.raises(ValueError, match="positive"):
        plan.budget_on_this_cpu(0.0)
