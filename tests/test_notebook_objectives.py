"""Every notebook opens with what a student can do after it, what it assumes and how long it takes, and
notebooks 01-06 ask the reader to predict a key result before the cell that shows it."""
import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))
WITH_PREDICTIONS = [p for p in NOTEBOOKS if p.stem[:2] != "00"]
DURATION = r"(?:about|under)\s+(?:a minute|[^;:]{0,40}?\d+(?:\.\d+)?\s*(?:s|min|minutes?)\b)"


def markdown(path: Path) -> list[str]:
    cells = json.loads(path.read_text())["cells"]
    return ["".join(c["source"]) if c["cell_type"] == "markdown" else None for c in cells]


def opening(path: Path) -> str:
    """The first markdown cell holding ``## Learning objectives``; it must be the first or the second cell."""
    cells = markdown(path)
    found = [i for i, text in enumerate(cells[:2]) if text and re.search(r"^## Learning objectives\s*$", text, re.M)]
    assert found, f"{path.name}: no '## Learning objectives' heading in its first two cells"
    return cells[found[0]]


def objectives(text: str) -> list[str]:
    """The list items right under the heading (numbered or bulleted), up to the next bold label or heading."""
    section = text.split("## Learning objectives", 1)[1]
    section = re.split(r"^\*\*|^#", section, maxsplit=1, flags=re.M)[0]
    return re.findall(r"^(?:\d+\.|[-*])\s+(.+)$", section, re.M)


def time_parts(text: str) -> dict[str, str]:
    """The ``**Time**`` section's three estimates, each the text from its label to the next label."""
    section = text.split("**Time**", 1)[1]
    labels = {"reading": r"reading", "prebuilt": r"prebuilt store", "scratch": r"from scratch"}
    starts = {name: re.search(pattern, section, re.I) for name, pattern in labels.items()}
    missing = [name for name, found in starts.items() if found is None]
    assert not missing, f"the Time section does not give: {missing}"
    order = sorted(starts, key=lambda n: starts[n].start())
    ends = {n: (starts[order[i + 1]].start() if i + 1 < len(order) else len(section)) for i, n in enumerate(order)}
    return {n: section[starts[n].start():ends[n]] for n in labels}


def test_there_are_seven_notebooks():
    assert [p.stem[:2] for p in NOTEBOOKS] == ["00", "01", "02", "03", "04", "05", "06"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_the_notebook_opens_with_objectives_prerequisites_and_times(path):
    text = opening(path)
    assert 3 <= len(objectives(text)) <= 5, f"{path.name}: want 3-5 learning objectives, got {objectives(text)}"
    assert re.search(r"^\*\*Prerequisites\*\*\s*:?\s*\S", text, re.M), f"{path.name}: no **Prerequisites** line"
    assert re.search(r"^\*\*Time\*\*", text, re.M), f"{path.name}: no **Time** line"
    parts = time_parts(text)
    for name, part in parts.items():
        assert re.search(DURATION, part), f"{path.name}: the {name} time gives no duration: {part!r}"
    assert "CPU-min" in parts["scratch"], f"{path.name}: the from-scratch time does not give the CPU-minutes of work"
    assert re.search(r"\d+-core", text), f"{path.name}: the Time section does not name the machine it was measured on"


@pytest.mark.parametrize("path", WITH_PREDICTIONS, ids=[p.name for p in WITH_PREDICTIONS])
def test_a_prediction_comes_before_its_result_and_the_answer_after(path):
    """A "Predict first" cell sits right before a code cell; the "What happened" cell that answers it comes
    right after the result, with nothing but code cells between the two."""
    cells = markdown(path)
    predictions = [i for i, text in enumerate(cells) if text and text.startswith("**Predict first.**")]
    assert predictions, f"{path.name}: no 'Predict first' cell"
    for i in predictions:
        assert i + 1 < len(cells) and cells[i + 1] is None, f"{path.name}: cell {i} predicts, but no code cell follows"
        j = next((k for k in range(i + 1, len(cells)) if cells[k] is not None), None)
        assert j is not None and cells[j].startswith("**What happened.**"), (
            f"{path.name}: the prediction in cell {i} is not answered by a 'What happened' cell after its result")
        assert j - i >= 2


def test_the_checks_catch_a_notebook_without_them(tmp_path):
    bare = {"cells": [{"cell_type": "markdown", "source": ["# 07 · Something\n"]},
                      {"cell_type": "markdown", "source": ["## Learning objectives\n", "\n", "1. one\n", "2. two\n",
                                                           "\n", "**Time**: reading about 5 min\n"]},
                      {"cell_type": "markdown", "source": ["**Predict first.** Guess.\n"]},
                      {"cell_type": "markdown", "source": ["**What happened.** This.\n"]}]}
    path = tmp_path / "07_bare.ipynb"
    path.write_text(json.dumps(bare))
    with pytest.raises(AssertionError):
        test_the_notebook_opens_with_objectives_prerequisites_and_times(path)
    assert len(objectives(opening(path))) == 2
    with pytest.raises(AssertionError, match="the Time section does not give"):
        time_parts(opening(path))
    with pytest.raises(AssertionError, match="no code cell follows"):
        test_a_prediction_comes_before_its_result_and_the_answer_after(path)
