"""show_source: the excerpt it shows, its errors, and every call the notebooks make."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from mdrl_lib.source import source_excerpt

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def sample(x):
    y = x + 1
    z = y * 2
    return z


def test_the_excerpt_runs_from_start_to_stop_dedented():
    assert source_excerpt(sample, start="y = x", stop="z = y") == "y = x + 1\nz = y * 2"
    assert source_excerpt(sample, start="z = y") == "z = y * 2\nreturn z"
    assert source_excerpt(sample).splitlines()[0] == "def sample(x):"
    assert source_excerpt(sample, stop="y =").splitlines() == ["def sample(x):", "    y = x + 1"]


def test_a_missing_marker_is_an_error():
    with pytest.raises(ValueError, match="no line holds start marker 'w = '"):
        source_excerpt(sample, start="w = ")
    with pytest.raises(ValueError, match="stop marker 'def sample'"):
        source_excerpt(sample, start="z = y", stop="def sample")


def show_source_calls():
    """(notebook, module expression, function expression, kwargs) of every show_source call in the notebooks."""
    for path in NOTEBOOKS:
        cells = json.loads(path.read_text())["cells"]
        for cell in cells:
            if cell["cell_type"] != "code":
                continue
            for node in ast.walk(ast.parse("".join(cell["source"]))):
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "show_source":
                    yield path.stem, ast.unparse(node.args[0]), {k.arg: ast.literal_eval(k.value) for k in node.keywords}


CALLS = list(show_source_calls())


@pytest.mark.parametrize("notebook, function, markers", CALLS, ids=[f"{n}:{f}" for n, f, _ in CALLS])
def test_every_call_in_the_notebooks_finds_its_lines(notebook, function, markers):
    import importlib

    namespace = {}
    for module in ("edits", "routes", "perturbation", "recovery", "interference", "objectives", "evaluation",
                   "training", "quadratic", "stats", "merging", "comparison", "controlled", "ladder"):
        namespace[module] = importlib.import_module(f"mdrl_lib.{module}")
    namespace["pt"] = namespace["perturbation"]
    from mdrl_lib.edits import top_neurons

    from mdrl_lib.quadratic import make_quadratic_world

    namespace.update(top_neurons=top_neurons, make_quadratic_world=make_quadratic_world)
    target = eval(function, namespace)  # noqa: S307 (the notebooks' own expressions)
    assert source_excerpt(target, **markers).strip()
