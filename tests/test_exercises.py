"""The implement-and-check exercises (mdrl_lib.exercises): every check passes on the solution its notebook holds,
reports a stub as not implemented yet and a perturbed answer as failed, and builds its expected answers with the
kit function it names; the registry covers every notebook; a wrong key is a clear error."""
from __future__ import annotations

import contextlib
import importlib
import io
import json
import math
from pathlib import Path

import pytest

from mdrl_lib import exercises
from mdrl_lib.exercises import Case, Exercise, compare

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
KEYS = list(exercises.EXERCISES)
BUILD_HEADING, EXERCISES_HEADING = "## Build it yourself", "## Exercises"


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def build_section(book_cells: list[dict]) -> list[dict]:
    """The cells from the "Build it yourself" heading up to the "Exercises" heading."""
    markdown = [(i, source(c)) for i, c in enumerate(book_cells) if c["cell_type"] == "markdown"]
    starts = [i for i, text in markdown if text.startswith(BUILD_HEADING)]
    ends = [i for i, text in markdown if text.startswith(EXERCISES_HEADING)]
    assert len(starts) == 1 and len(ends) == 1 and starts[0] < ends[0]
    return book_cells[starts[0]:ends[0]]


def solution_cell(key: str) -> dict:
    item = exercises.exercise(key)
    found = [c for c in cells(ROOT / "notebooks" / f"{item.notebook}.ipynb")
             if "solution" in c["metadata"].get("tags", []) and c["metadata"].get("exercise") == key]
    assert len(found) == 1, f"{key}: {len(found)} solution cells in {item.notebook}"
    return found[0]


def solution(key: str):
    """The reader's function as the notebook's solution cell defines it, executed alone in a fresh namespace."""
    namespace: dict = {}
    exec(compile(source(solution_cell(key)), f"<{key} solution>", "exec"), namespace)  # noqa: S102 (its cell)
    return namespace[exercises.exercise(key).function]


def perturbed(value):
    """A deliberately wrong answer near ``value``: a number one more, a tensor moved by one (a mask flipped),
    the first entry of a container perturbed, a list of names one short."""
    import numpy as np
    import torch

    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float, np.number)):
        return value + 1
    if isinstance(value, torch.Tensor):
        return ~value if value.dtype == torch.bool else value + 1
    if isinstance(value, dict):
        first = next(iter(value))
        return {**value, first: perturbed(value[first])}
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, str) for v in value):
            return list(value)[:-1]
        return type(value)([perturbed(value[0]), *value[1:]]) if value else ["nothing"]
    raise TypeError(f"no perturbation for {type(value).__name__}")


# ------------------------------------------------------------------------------------------- the registry

def test_every_notebook_has_at_least_two_exercises():
    by_notebook: dict[str, list[str]] = {}
    for item in exercises.EXERCISES.values():
        by_notebook.setdefault(item.notebook, []).append(item.key)
    assert sorted(by_notebook) == [p.stem for p in NOTEBOOKS]
    assert all(len(keys) >= 2 for keys in by_notebook.values()), by_notebook
    assert len(KEYS) == 14


@pytest.mark.parametrize("key", KEYS)
def test_each_exercise_is_built_in_its_notebook_once(key):
    item = exercises.exercise(key)
    section = build_section(cells(ROOT / "notebooks" / f"{item.notebook}.ipynb"))
    code = [source(c) for c in section if c["cell_type"] == "code"]
    assert sum(f'exercises.check("{key}", {item.function})' in text for text in code) == 1
    assert solution_cell(key) in section
    assert f"`{key}`" in "".join(source(c) for c in section if c["cell_type"] == "markdown")


def test_an_unknown_key_is_an_error_naming_the_valid_keys():
    with pytest.raises(ValueError, match=r"unknown exercise '01-jacard'; valid keys: 00-cw-rubric, .*06-ties-merge"):
        exercises.check("01-jacard", lambda *a: 0)
    with pytest.raises(ValueError, match="valid keys"):
        exercises.exercise(None)


def test_the_exercise_table():
    table = exercises.exercise_table()
    assert list(table.columns) == list(exercises.TABLE_COLUMNS)
    assert {"key", "title", "difficulty", "importance", "minutes"} <= set(table.columns)
    assert list(table["key"]) == KEYS
    assert set(table["difficulty"]) <= {1, 2, 3} and set(table["importance"]) <= set(exercises.IMPORTANCE)
    assert list(exercises.exercise_table("01")["key"]) == ["01-unchanged-share", "01-top-jaccard"]
    assert list(exercises.exercise_table("05_refresh_vs_rollback")["key"]) == ["05-rollback-scores", "05-roll-back"]
    with pytest.raises(ValueError, match="no exercises for notebook '07'; valid: 00_toy_world"):
        exercises.exercise_table("07")


def test_an_exercise_checks_its_fields():
    fields = dict(key="01-x", notebook="01_sparse_edits", title="t", objective="o", difficulty=2, importance="core",
                  minutes=5, hint="h", function="my_x", compared_with="mdrl_lib.edits.jaccard", cases=lambda: [])
    assert Exercise(**fields).key == "01-x"
    for bad, match in ((dict(key="02-x"), "does not match notebook"), (dict(difficulty=4), "difficulty"),
                       (dict(importance="vital"), "importance"), (dict(function="my x"), "Python name"),
                       (dict(key="01_x"), "must look like")):
        with pytest.raises(ValueError, match=match):
            Exercise(**{**fields, **bad})


# ------------------------------------------------------------------------------------------- the checks

@pytest.mark.parametrize("key", KEYS)
def test_the_notebook_solution_passes(key):
    result = exercises.check(key, solution(key), quiet=True)
    assert result.status == "passed", result.text()
    assert result.cases_passed == result.cases_total >= 4


@pytest.mark.parametrize("key", KEYS)
def test_the_student_stub_is_not_implemented_yet(key):
    from tests.script_runner import load_script

    make_lab = load_script(ROOT / "scripts" / "make_lab.py", keep_threads=True)
    item = exercises.exercise(key)
    namespace: dict = {}
    exec(make_lab.stub_source(source(solution_cell(key)), item.function, item.hint), namespace)  # noqa: S102
    result = exercises.check(key, namespace[item.function], quiet=True)
    assert result.status == "not implemented yet"
    assert result.message == item.hint and result.cases_passed == 0


@pytest.mark.parametrize("key", KEYS)
def test_a_perturbed_answer_fails_and_says_where(key):
    right = solution(key)
    result = exercises.check(key, lambda *args, **kwargs: perturbed(right(*args, **kwargs)), quiet=True)
    assert result.status == "failed"
    assert result.case_number == 1 and result.case and result.hint == exercises.exercise(key).hint
    assert result.expected and result.got and result.expected != result.got
    assert result.difference or result.where or isinstance(exercises.exercise(key).cases()[0].expected, str)


def test_a_function_that_raises_or_is_missing_fails_without_raising():
    def crash(*args):
        raise ZeroDivisionError("division by zero")

    result = exercises.check("04-mcnemar", crash, quiet=True)
    assert result.status == "failed" and result.got == "it raised ZeroDivisionError: division by zero"
    result = exercises.check("04-mcnemar", None, quiet=True)
    assert result.status == "failed" and "pass the function itself" in result.difference


def test_a_hook_left_on_the_model_fails():
    import torch

    def leaves_its_hook(model, inputs, channels):
        indices = torch.tensor(sorted(i for _, i in channels), dtype=torch.long)

        def hook(module, args):
            x = args[0].clone()
            x[..., indices] = 0
            return (x,)

        model.model.layers[0].mlp.down_proj.register_forward_pre_hook(hook)
        with torch.no_grad():
            return model(inputs)

    result = exercises.check("02-ablation-hook", leaves_its_hook, quiet=True)
    assert result.status == "failed" and "remove every hook" in result.difference


def test_check_prints_the_verdict(capsys):
    result = exercises.check("04-seed-interval", solution("04-seed-interval"))
    out = capsys.readouterr().out
    assert out.startswith("04-seed-interval · A t interval over seeds: passed: 4 of 4 cases agree with the kit's "
                          "mdrl_lib.stats.seed_mean_interval.")
    assert result.passed and repr(result) == "CheckResult(key='04-seed-interval', status='passed', cases=4/4)"

    def z_interval(values, level=0.95):  # the normal quantile instead of Student's t: too narrow
        mean, sd = sum(values) / len(values), (sum((v - sum(values) / len(values)) ** 2 for v in values)
                                                / (len(values) - 1)) ** 0.5
        return mean, mean - 1.96 * sd / math.sqrt(len(values)), mean + 1.96 * sd / math.sqrt(len(values))

    exercises.check("04-seed-interval", z_interval)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("04-seed-interval · A t interval over seeds: failed on case 1 of 4 (Math's drop")
    assert lines[1:4] == ["  where:    [1] in the answer", "  expected: -0.211651", "  got:      -0.174454"]
    assert lines[4].startswith("  differs:  off by +0.0372 (17.6% of the expected value)")
    assert lines[5].startswith("  hint:     sd is the sample standard deviation")


@pytest.mark.parametrize("key", KEYS)
def test_the_expected_answers_come_from_the_kit_function_named(key, monkeypatch):
    """Each check computes its answers with the kit function it names: replace that function by a wrapper that
    counts its calls, build the cases, and every case must have called it."""
    item = exercises.exercise(key)
    parts = item.compared_with.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for name in parts[split:-1]:
            owner = getattr(owner, name)
        break
    original = getattr(owner, parts[-1])
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, parts[-1], counted)
    cases = item.cases()
    assert len(calls) >= len(cases) >= 4


def test_the_build_sections_run_alone_and_pass():
    """Each notebook's "Build it yourself" cells, executed in order in a fresh namespace (no earlier cell run),
    define the solutions and every check passes."""
    for path in NOTEBOOKS:
        namespace: dict = {}
        statuses = []
        for cell in build_section(cells(path)):
            if cell["cell_type"] != "code":
                continue
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(source(cell), f"<{path.stem} {cell['id']}>", "exec"), namespace)  # noqa: S102
            if "exercises.check(" in source(cell):
                statuses.append(namespace["result"].status)
        assert statuses == ["passed"] * len(exercises.exercise_table(path.stem[:2])), path.name


# ------------------------------------------------------------------------------------------- the comparison

def test_compare_says_where_and_by_how_much():
    import numpy as np
    import torch

    assert compare(0.5, 0.5 + 1e-9) is None and compare(float("nan"), float("nan")) is None
    miss = compare(0.6, 0.5)
    assert (miss.expected, miss.got, miss.difference) == ("0.5", "0.6", "off by +0.1 (20% of the expected value)")
    assert compare("0.5", 0.5).difference == "expected a number, got a str"
    miss = compare({"a": torch.zeros(2, 3)}, {"a": torch.zeros(2, 3).index_fill_(1, torch.tensor([2]), 0.5)})
    assert miss.where == "['a'][0, 2]" and miss.difference.startswith("2 of 6 entries differ; the largest gap is 0.5")
    assert compare(torch.zeros(3), torch.zeros(2, 3)).difference == "shape (3,) instead of (2, 3)"
    assert compare(np.ones(3, dtype=bool), np.array([True, False, True])).difference == "1 of 3 entries differ " \
                                                                                         "(first at index (1,))"
    assert compare({"a": 1}, {"a": 1, "b": 2}).difference == "missing key(s) ['b']"
    assert compare((1, {"m": 0.3}), (1, {"m": 0.2})).where == "[1]['m']"
    assert compare(["x", "z"], ["x", "y"]).difference == "missing ['y']; not expected ['z']"
    assert compare(["y", "x"], ["x", "y"]).difference == "the same names in another order"
    assert compare([1, 2], (1, 2)) is None and compare(torch.tensor(0.25), 0.25) is None
    assert compare({1, 2}, {1, 3}).difference.startswith("1 missing")
    assert compare(True, True) is None and compare(1, True) is not None


def test_a_case_after_check_runs_on_the_arguments_the_function_received():
    seen = []
    case = Case("c", ([1, 2],), 3, after=lambda args: seen.append(args) or "changed its input")
    item = Exercise(key="04-x", notebook="04_sequential_rl", title="t", objective="o", difficulty=1,
                    importance="extra", minutes=1, hint="h", function="f", compared_with="sum", cases=lambda: [case])
    exercises.EXERCISES["04-x"] = item
    try:
        result = exercises.check("04-x", lambda values: values.append(0) or 3, quiet=True)
    finally:
        del exercises.EXERCISES["04-x"]
    assert result.status == "failed" and result.difference == "changed its input"
    assert seen == [([1, 2, 0],)] and case.args == ([1, 2],)


def test_an_answer_too_odd_to_compare_fails_without_raising():
    class Odd(dict):  # a mapping that cannot be read
        def __getitem__(self, key):
            raise RuntimeError("no reading me")

    right = solution("05-rollback-scores")
    result = exercises.check("05-rollback-scores", lambda *args: Odd(right(*args)), quiet=True)
    assert result.status == "failed" and result.difference == "cannot compare it: RuntimeError: no reading me"
    result = exercises.check("06-pareto-front", lambda rows: object(), quiet=True)
    assert result.status == "failed" and result.got.startswith("<object object")
