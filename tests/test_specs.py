"""Artifact specs (mdrl_lib.specs) and what the kit records of them: keys unchanged by the move out of
mdrl_lib.kit, the specs' readers (``kit.open``), the requested keys and the ``MDRL_GET_LOG`` file, sharing
a build among a launch's processes, and no import circle between kit, specs and objectives."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pandas as pd
import pytest

from mdrl_lib.config import RunConfig
from mdrl_lib.domains.base import DOMAIN_NAMES
from mdrl_lib.kit import GET_LOG_ENV, Kit
from mdrl_lib.objectives import DomainObjective
from mdrl_lib.specs import (
    ITEMS_FILE, PAIRS_FILE, Base, GradientSteps, ObjectiveBatch, Refresh, Scores, Spec, Stage, Stored,
)

ROOT = Path(__file__).resolve().parent.parent

# Computed with the specs still in mdrl_lib/kit.py and mdrl_lib/objectives.py (toy scale, default settings).
KEYS_BEFORE_THE_MOVE = {
    "base": "base-5e8dc161c226",
    "stage_math": "stage-71d6390c0ebb",
    "chain_code_math_qa": "stage-0b6660b69fee",
    "refresh_math": "refresh-cdf017c7669a",
    "refresh_steps": "refresh-9270e1be6348",
    "objective": "objective-5ba37ed3d462",
    "objective_small": "objective-4e25ab2282b5",
    "gd": "gd-3673e30003a3",
    "gd_save": "gd-af207ed011b0",
    "scores_chain": "scores-e252bb52a3bc",
    "stage_opts": "stage-8c2ca01c876f",
    "stage_reward": "stage-91efe9645d76",
    "scores_of_stored": "scores-362e575a1c8c",
}


@pytest.fixture
def kit(tmp_path):
    return Kit(RunConfig.from_params(scale="toy", run_dir=str(tmp_path / "run")))


@dataclass(frozen=True)
class Note(Spec):
    """A cheap artifact: writes its name; its build asks the kit for its parents again, as real builds do."""

    name: str
    parents: tuple = ()
    kind: ClassVar[str] = "note"

    def inputs(self):
        return self.parents

    def key_fields(self, kit):
        return {"name": self.name, "parents": [kit.key(p) for p in self.parents]}

    def build(self, kit, directory, progress):
        for parent in self.parents:
            kit.get(parent)
        (directory / "name.txt").write_text(self.name)
        return {"name": self.name}

    def label(self):
        return f"note {self.name}"


def put(kit: Kit, spec: Spec, files: dict[str, str], metrics: dict | None = None):
    """Store a hand-made artifact under ``spec``'s key (no build, no model)."""
    def write(directory):
        for name, text in files.items():
            (directory / name).write_text(text)
        return metrics or {}

    return kit.store.get_or_create(kit.key(spec), write, config={"kind": spec.kind}, seed=0)


def test_keys_are_those_computed_before_the_specs_moved(kit):
    base = Base()
    math = Stage(base, "math")
    chain = Stage(Stage(Stage(base, "code"), "math"), "qa")
    objective = ObjectiveBatch(math, "math")
    small = ObjectiveBatch(base, "cw", prompts=6, samples=2, min_score=0.0, seed=4)
    specs = {
        "base": base, "stage_math": math, "chain_code_math_qa": chain, "refresh_math": Refresh(chain, "math"),
        "refresh_steps": Refresh(chain, "math", steps=3, lr_schedule="constant"), "objective": objective,
        "objective_small": small, "gd": GradientSteps(math, objective, steps=5, lr=0.01),
        "gd_save": GradientSteps(base, small, steps=2, lr=0.05, save_every=1), "scores_chain": Scores(chain),
        "stage_opts": Stage(base, "math", steps=7, rl_seed=3, lr=1e-3, save_every=2),
        "stage_reward": Stage(base, "cw", reward="shuffled", grpo_options=(("epsilon", 0.3),)),
        "scores_of_stored": Scores(Stored("stage-abc")),
    }
    assert {name: kit.key(spec) for name, spec in specs.items()} == KEYS_BEFORE_THE_MOVE
    assert kit.chain_specs("code,math,qa")[-1] == chain


def test_requested_keys_list_every_spec_and_its_inputs_once_in_order_whatever_the_store_holds(kit):
    a, b = Note("a"), Note("b")
    c = Note("c", (a, b))
    d = Note("d", (a,))
    assert kit.requested_keys() == []
    kit.get(c, progress=False)
    assert kit.requested_keys() == [kit.key(c), kit.key(a), kit.key(b)]
    kit.get(a, progress=False)
    kit.get(d, progress=False)
    kit.get(c, progress=False)
    expected = [kit.key(s) for s in (c, a, b, d)]
    assert kit.requested_keys() == expected
    again = Kit(kit.config)  # everything stored now: the same requests, the same list
    for spec in (c, a, d):
        again.get(spec, progress=False)
    assert again.requested_keys() == expected
    fresh = Kit(kit.config)
    fresh.get(kit.get(d))  # an artifact stands for itself: its key, no inputs
    assert fresh.requested_keys() == [kit.key(d)]


def test_each_top_level_get_appends_one_json_line_to_the_get_log(kit, tmp_path, monkeypatch):
    log = tmp_path / "gets.jsonl"
    monkeypatch.setenv(GET_LOG_ENV, str(log))
    a = Note("a")
    c = Note("c", (a, Note("b")))
    kit.get(c, progress=False)  # builds a, b and c; c's build asks for a and b again: not logged
    kit.get(a, progress=False)
    kit.get(c, progress=False)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines == [{"key": kit.key(c), "kind": "note", "label": "note c"},
                     {"key": kit.key(a), "kind": "note", "label": "note a"},
                     {"key": kit.key(c), "kind": "note", "label": "note c"}]
    monkeypatch.delenv(GET_LOG_ENV)
    kit.get(a, progress=False)
    assert len(log.read_text().splitlines()) == 3


def test_open_reads_a_scores_artifact_as_its_per_item_table(kit):
    rows = [{"domain": d, "item": i, "prompt": f"p{i}", "completion": "c", "score": float(i % 2), "details": {}}
            for d in DOMAIN_NAMES for i in range(3)]
    metrics = {"scores": {d: 1 / 3 for d in DOMAIN_NAMES}, "se": {d: 0.27 for d in DOMAIN_NAMES},
               "n": {d: 3 for d in DOMAIN_NAMES}}
    put(kit, Base(), {"source.json": "{}"})
    put(kit, Scores(Base()), {ITEMS_FILE: "".join(json.dumps(r) + "\n" for r in rows)}, metrics)
    table = kit.open(Scores(Base()))
    assert isinstance(table, pd.DataFrame)
    assert table.to_dict("records") == rows
    pd.testing.assert_frame_equal(kit.item_results(Base()), table)
    summary = kit.scores_of(Base())
    assert list(summary["domain"]) == list(DOMAIN_NAMES) and set(summary["n"]) == {3}
    assert summary["score"].tolist() == pytest.approx([1 / 3] * 4)
    assert kit.requested_keys() == [kit.key(Scores(Base())), kit.key(Base())]
    artifact = kit.open(Base())  # the default reader: the artifact itself
    assert artifact.key == kit.key(Base()) and artifact.path.is_dir()


def test_open_reads_an_objective_batch_as_its_objective(kit):
    spec = ObjectiveBatch(Base(), "math", prompts=2, samples=1)
    pairs = [{"prompt": "m:1+2=", "completion": "3", "score": 1.0},
             {"prompt": "m:3+4=", "completion": "7", "score": 1.0}]
    put(kit, spec, {PAIRS_FILE: "".join(json.dumps(p) + "\n" for p in pairs)})
    objective = kit.open(spec)
    assert isinstance(objective, DomainObjective) and objective.pairs == [("m:1+2=", "3"), ("m:3+4=", "7")]
    assert kit.objective(spec).pairs == objective.pairs
    assert kit.objective(kit.get(spec)).pairs == objective.pairs  # an artifact of a batch too


class FakeProcesses:
    def __init__(self, main: bool):
        self.is_main_process, self.num_processes, self.waits = main, 2, 0

    def wait_for_everyone(self):
        self.waits += 1


def test_a_launch_builds_other_specs_on_the_main_process_while_the_others_wait(kit):
    note = Note("n")
    other = FakeProcesses(main=False)
    with pytest.raises(FileNotFoundError, match="every process of a launch must see one run directory"):
        kit.get(note, processes=other)  # not built there: the main process builds
    assert other.waits == 1 and kit.store.get(kit.key(note)) is None
    main = FakeProcesses(main=True)
    built = kit.get(note, processes=main)
    assert main.waits == 1 and (built.path / "name.txt").read_text() == "n"
    assert kit.get(note, processes=other) == built and other.waits == 2


def _module_imports(path: Path) -> set[str]:
    """mdrl_lib modules imported at module level (outside functions and ``if TYPE_CHECKING``)."""
    out = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mdrl_lib"):
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("mdrl_lib"))
    return out


def test_specs_kit_and_objectives_import_without_a_circle_in_any_order():
    package = ROOT / "mdrl_lib"
    imports = {name: _module_imports(package / f"{name}.py") for name in ("kit", "specs", "objectives")}
    assert not imports["specs"] & {"mdrl_lib.kit", "mdrl_lib.objectives"}
    assert "mdrl_lib.kit" not in imports["objectives"]
    assert "mdrl_lib.objectives" not in imports["kit"]
    script = ("import sys, mdrl_lib.specs; assert 'torch' not in sys.modules and 'mdrl_lib.kit' not in sys.modules; "
              "import mdrl_lib.objectives, mdrl_lib.kit; "
              "from mdrl_lib.kit import Base, Stage, Scores, open_kit; from mdrl_lib.specs import ObjectiveBatch; "
              "import mdrl_lib.specs as s; assert ObjectiveBatch is s.ObjectiveBatch and Stage is s.Stage")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
