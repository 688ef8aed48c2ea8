"""Notebooks are committed without outputs, with kernelspec python3 and a parameters cell."""
import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def problems(notebook: dict) -> list[str]:
    """What is wrong with a notebook as committed (empty when it is clean)."""
    found = []
    if notebook.get("metadata", {}).get("kernelspec", {}).get("name") != "python3":
        found.append("kernelspec is not python3")
    code = [c for c in notebook.get("cells", []) if c.get("cell_type") == "code"]
    if any(c.get("outputs") for c in code):
        found.append("code cells have outputs")
    if any(c.get("execution_count") is not None for c in code):
        found.append("code cells have execution counts")
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        found.append(f"{len(tagged)} cells tagged 'parameters' (want 1)")
    return found


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks/NN_*.ipynb found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_committed_clean(path):
    assert problems(json.loads(path.read_text())) == []


def test_the_check_catches_a_dirty_notebook():
    dirty = {"metadata": {"kernelspec": {"name": "conda-env"}},
             "cells": [{"cell_type": "code", "outputs": [{"text": "1"}], "execution_count": 3, "metadata": {}}]}
    assert len(problems(dirty)) == 4


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_papermill_reads_every_parameter(path):
    """papermill skips a parameter line holding a second ``=`` (in its help, say): the CLI's ``params``
    and the plan would then not see it. Every assignment of the parameters cell must be read."""
    import ast

    import papermill

    cell = next(c for c in json.loads(path.read_text())["cells"]
                if "parameters" in c.get("metadata", {}).get("tags", []))
    assigned = [node.target.id for node in ast.parse("".join(cell["source"])).body if isinstance(node, ast.AnnAssign)]
    assert list(papermill.inspect_notebook(str(path))) == assigned


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_every_notebook_takes_the_parameters_that_make_its_base(path):
    """``run -p warmup_steps 600`` reaches every notebook: one that did not declare it would read another
    base than notebook 00 built and showed."""
    import papermill

    assert {"scale", "seed", "model", "run_dir", "warmup_steps"} <= set(papermill.inspect_notebook(str(path)))
    source = "".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
    assert f"from mdrl_lib.recipes import nb{path.stem[:2]} as recipe" in source
    assert "params = recipe.Params.from_namespace(globals())" in source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_widgets_draw_on_a_button(path):
    """An ipywidgets ``interactive`` that draws at once can leave papermill's client waiting forever on a
    busy machine (a race in nbclient); the notebooks' widgets draw when their button is pressed."""
    import re

    source = "".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
    for call in re.finditer(r"interactive\(\s*\w+\s*,([^\n]*)", source):
        assert '"manual": True' in call.group(1), f"{path.name}: {call.group(0)[:80]}"
    assert "interact(" not in source.replace("interactive(", "")
