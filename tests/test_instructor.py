"""docs/instructor.md: the instructor's guide plans a lab and a week's module, answers every numbered question of every
notebook's "## Exercises" cell (as **NN.k**, under the notebook's own heading, in order), lists every implement-and-check
exercise with its figures from mdrl_lib.exercises, and holds the two marker lines that scripts/write_reference_table.py
fills from the reference ledger; the README links it."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mdrl_lib import exercises
from tests.script_runner import ROOT, load_script

GUIDE = ROOT / "docs" / "instructor.md"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
ANSWERS_HEADING = "## Answers to the notebooks' exercises"
LAB_HEADING = "## Plan for a 2-3 hour lab"
WEEK_HEADING = "## Plan for a week's module"
EXPECTED_HEADING = "## Expected values over the reference seeds"
WRITER = load_script(ROOT / "scripts" / "write_reference_table.py", keep_threads=True)
RANGES_START, RANGES_END = WRITER.RANGES_START, WRITER.RANGES_END
ANSWER = re.compile(r"^\*\*(\d\d)\.(\d+)\*\*", re.M)


def guide() -> str:
    return GUIDE.read_text()


def section(text: str, heading: str) -> str:
    """The text under a level-2 ``heading``, up to the next level-2 heading."""
    start = text.index(heading + "\n") + len(heading)
    following = re.search(r"^## ", text[start:], re.M)
    return text[start:start + following.start()] if following else text[start:]


def notebook_questions(path: Path) -> list[int]:
    """The numbers of the items of the notebook's ``## Exercises`` markdown cell, in order."""
    cells = json.loads(path.read_text())["cells"]
    found = ["".join(c["source"]) for c in cells
             if c["cell_type"] == "markdown" and "".join(c["source"]).lstrip().startswith("## Exercises")]
    assert len(found) == 1, f"{path.name}: expected one '## Exercises' cell, found {len(found)}"
    return [int(n) for n in re.findall(r"^(\d+)\.\s", found[0], re.M)]


def answers_by_notebook(text: str) -> dict[str, list[tuple[int, str]]]:
    """Per notebook number: the (question number, answer text) pairs of the answers section, in order, each taken
    from under the ``### NN ...`` heading it sits in."""
    out: dict[str, list[tuple[int, str]]] = {}
    parts = re.split(r"^### (\d\d) ", section(text, ANSWERS_HEADING), flags=re.M)
    for number, body in zip(parts[1::2], parts[2::2]):
        marks = list(ANSWER.finditer(body))
        for i, mark in enumerate(marks):
            assert mark.group(1) == number, f"answer **{mark.group(1)}.{mark.group(2)}** sits under notebook {number}"
            end = marks[i + 1].start() if i + 1 < len(marks) else len(body)
            out.setdefault(number, []).append((int(mark.group(2)), body[mark.end():end].strip()))
    return out


def test_the_guide_exists_with_its_plans_and_sections():
    text = guide()
    for heading in (LAB_HEADING, WEEK_HEADING, ANSWERS_HEADING, "## The \"Build it yourself\" exercises",
                    "## Common failure modes and what to tell students", EXPECTED_HEADING):
        assert re.search(rf"^{re.escape(heading)}$", text, re.M), f"the guide has no heading {heading!r}"
    assert len(section(text, LAB_HEADING)) > 500 and len(section(text, WEEK_HEADING)) > 500


def test_there_are_seven_notebooks_each_with_numbered_exercises():
    assert [p.stem[:2] for p in NOTEBOOKS] == ["00", "01", "02", "03", "04", "05", "06"]
    for path in NOTEBOOKS:
        numbers = notebook_questions(path)
        assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 3, f"{path.name}: {numbers}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_exercise_question_of_the_notebook_is_answered_in_order(path):
    answers = answers_by_notebook(guide()).get(path.stem[:2], [])
    assert [n for n, _ in answers] == notebook_questions(path), (
        f"{path.name}: the guide answers {[n for n, _ in answers]}, the notebook asks {notebook_questions(path)}")
    for number, body in answers:
        assert len(body) >= 200, f"the answer to {path.stem[:2]}.{number} is too short to be an answer: {body!r}"


def test_the_guide_answers_no_question_a_notebook_does_not_ask():
    asked = {(p.stem[:2], n) for p in NOTEBOOKS for n in notebook_questions(p)}
    given = [(m.group(1), int(m.group(2))) for m in ANSWER.finditer(guide())]
    assert sorted(given) == sorted(asked) and len(given) == len(set(given))


def test_every_build_exercise_has_its_row_as_in_the_exercise_table():
    text = section(guide(), "## The \"Build it yourself\" exercises")
    assert set(exercises.EXERCISES) == set(exercises.exercise_table()["key"])
    for row in exercises.exercise_table().itertuples():
        line = (f"| `{row.key}` | {row.title} | {row.difficulty} | {row.importance} | {row.minutes} | "
                f"`{row.compared_with}` |")
        assert line in text, f"the guide's table has no row {line}"
        assert re.search(rf"^Common mistakes in `{re.escape(row.key)}`:", text, re.M), (
            f"the guide names no common mistakes for {row.key}")


def test_the_reference_markers_are_single_lines_in_order_under_their_heading():
    text = guide()
    lines = text.splitlines()
    for marker in (RANGES_START, RANGES_END):
        assert text.count(marker) == 1, f"{marker} must appear exactly once (the writer finds the first one)"
        assert marker in lines, f"{marker} must stand on a line of its own"
    assert lines.index(RANGES_START) < lines.index(RANGES_END)
    assert RANGES_START in section(text, EXPECTED_HEADING) and RANGES_END in section(text, EXPECTED_HEADING)
    assert "scripts/write_reference_table.py" in section(text, EXPECTED_HEADING)
    block = text[text.index(RANGES_START) + len(RANGES_START) + 1: text.index(RANGES_END)]  # what is there now
    filled = WRITER.with_block(text, "#### a check\n", RANGES_START, RANGES_END)  # what the writer makes of it
    assert section(filled, EXPECTED_HEADING).count("#### a check") == 1
    assert WRITER.with_block(filled, block, RANGES_START, RANGES_END) == text  # only the block between them changes


def test_the_readme_links_the_guide():
    assert "(docs/instructor.md)" in (ROOT / "README.md").read_text()
