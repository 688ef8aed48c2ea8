"""scripts/make_lab.py: one student copy per notebook, every solution cell stubbed with its exercise's hint and no
solution code left, the copies' "Build it yourself" cells running to "not implemented yet", and one-line errors."""
from __future__ import annotations

import ast
import contextlib
import io
import json
from pathlib import Path

import pytest

from mdrl_lib import exercises
from tests.script_runner import ROOT, load_script

make_lab = load_script(ROOT / "scripts" / "make_lab.py", keep_threads=True)
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def source(cell: dict) -> str:
    return "".join(cell["source"])


def solutions(book: dict) -> list[dict]:
    return [c for c in book["cells"] if make_lab.is_solution(c)]


def function_node(text: str, name: str) -> ast.FunctionDef:
    return next(n for n in ast.parse(text).body if isinstance(n, ast.FunctionDef) and n.name == name)


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lab")
    before = {p.name: p.read_bytes() for p in NOTEBOOKS}
    written = make_lab.make_lab(ROOT / "notebooks", out)
    assert {p.name: p.read_bytes() for p in NOTEBOOKS} == before  # the notebooks themselves are left alone
    assert [(target.name, keys) for target, keys in written] == [
        (p.name, list(exercises.exercise_table(p.stem[:2])["key"])) for p in NOTEBOOKS]
    return out


def test_one_student_copy_per_notebook_with_every_solution_stubbed(lab):
    assert sorted(p.name for p in lab.iterdir()) == [p.name for p in NOTEBOOKS]
    for path in NOTEBOOKS:
        original = json.loads(path.read_text(encoding="utf-8"))
        copy = json.loads((lab / path.name).read_text(encoding="utf-8"))
        assert len(copy["cells"]) == len(original["cells"]) and copy["metadata"] == original["metadata"]
        assert len(solutions(copy)) == len(solutions(original)) >= 2
        for before, after in zip(original["cells"], copy["cells"]):
            if not make_lab.is_solution(before):
                assert after == before  # every other cell as it was
                continue
            item = exercises.exercise(before["metadata"]["exercise"])
            stub = function_node(source(after), item.function)
            solved = function_node(source(before), item.function)
            assert ast.unparse(stub.args) == ast.unparse(solved.args)
            assert ast.get_docstring(stub) == ast.get_docstring(solved) and ast.get_docstring(stub)
            raised = stub.body[-1]
            assert len(stub.body) == 2 and isinstance(raised, ast.Raise)
            assert raised.exc.func.id == "NotImplementedError" and ast.literal_eval(raised.exc.args[0]) == item.hint
            # no line of the solution's body survives in the copy
            docstring_end = solved.body[0].end_lineno
            body_lines = {line.strip() for line in source(before).split("\n")[docstring_end:] if line.strip()}
            assert body_lines and not body_lines & {line.strip() for line in source(after).split("\n")}
            assert after["outputs"] == [] and after["execution_count"] is None


def test_the_student_copies_build_sections_run_to_not_implemented_yet(lab):
    for path in NOTEBOOKS:
        cells = json.loads((lab / path.name).read_text(encoding="utf-8"))["cells"]
        start = next(i for i, c in enumerate(cells) if source(c).startswith("## Build it yourself"))
        end = next(i for i, c in enumerate(cells) if source(c).startswith("## Exercises"))
        namespace: dict = {}
        statuses, printed = [], io.StringIO()
        for cell in cells[start:end]:
            if cell["cell_type"] != "code":
                continue
            with contextlib.redirect_stdout(printed):
                exec(compile(source(cell), f"<lab {path.stem} {cell['id']}>", "exec"), namespace)  # noqa: S102
            if "exercises.check(" in source(cell):
                statuses.append((namespace["result"].key, namespace["result"].status))
        keys = list(exercises.exercise_table(path.stem[:2])["key"])
        assert statuses == [(key, "not implemented yet") for key in keys]
        assert printed.getvalue().count(": not implemented yet: write my_") == len(keys)


def test_stub_source_keeps_imports_signature_and_docstring():
    text = ('import math\nfrom torch import nn\n\n\n@staticmethod\ndef my_f(a,\n         b=2):\n    """Add."""\n'
            '    total = a + b\n    return math.floor(total)')
    stub = make_lab.stub_source(text, "my_f", 'A "hint" that is long ' + "and long " * 20)
    assert stub.startswith('import math\nfrom torch import nn\n\n\n@staticmethod\ndef my_f(a,\n         b=2):\n'
                           '    """Add."""\n    raise NotImplementedError(\n        "A \\"hint\\" that is long and')
    assert "total" not in stub and max(len(line) for line in stub.split("\n")) <= 110
    namespace: dict = {}
    exec(stub.replace("@staticmethod\n", ""), namespace)  # noqa: S102
    with pytest.raises(NotImplementedError, match='A "hint" that is long and long'):
        namespace["my_f"](1)
    assert make_lab.stub_source("def my_f(x):\n    return x", "my_f", "h") == \
        'def my_f(x):\n    raise NotImplementedError(\n        "h")'


@pytest.mark.parametrize("text, message", [
    ("x = 1\n\ndef my_f():\n    return 1", "may hold only imports and then the function my_f"),
    ("def my_g():\n    return 1", r"must define exactly one function, my_f; it defines \['my_g'\]"),
    ("def my_f(:\n", "does not parse"),
    ("def my_f(): return 1", "on its own lines"),
])
def test_a_solution_cell_out_of_form_is_a_one_line_error(text, message):
    with pytest.raises(make_lab.LabError, match=message) as error:
        make_lab.stub_source(text, "my_f", "h", where="x.ipynb, cell c")
    assert "\n" not in str(error.value) and str(error.value).startswith("x.ipynb, cell c: ")


def _notebook(folder: Path, name: str, cells: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))


def test_errors_are_one_line_messages(tmp_path, capsys):
    assert make_lab.main(["--notebooks", str(tmp_path / "none"), "--out", str(tmp_path / "lab")]) == 1
    assert capsys.readouterr().err == f"make_lab: no notebooks folder at {tmp_path / 'none'}\n"
    (tmp_path / "empty").mkdir()
    assert make_lab.main(["--notebooks", str(tmp_path / "empty"), "--out", str(tmp_path / "lab")]) == 1
    assert capsys.readouterr().err.startswith("make_lab: no notebooks (NN_name.ipynb) in ")
    solution = {"cell_type": "code", "id": "s1", "metadata": {"tags": ["solution"], "exercise": "09-nothing"},
                "outputs": [], "execution_count": None, "source": ["def my_f():\n", "    return 1"]}
    _notebook(tmp_path / "books", "00_a.ipynb", [solution])
    assert make_lab.main(["--notebooks", str(tmp_path / "books"), "--out", str(tmp_path / "lab")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("make_lab: 00_a.ipynb, cell s1: unknown exercise '09-nothing'; valid keys: 00-cw-rubric")
    assert err.count("\n") == 1 and not (tmp_path / "lab").exists()  # nothing written when a notebook fails
    _notebook(tmp_path / "books", "00_a.ipynb", [{**solution, "metadata": {"tags": ["solution"]}}])
    assert make_lab.main(["--notebooks", str(tmp_path / "books"), "--out", str(tmp_path / "lab")]) == 1
    assert "a solution cell's metadata must name its exercise" in capsys.readouterr().err
    (tmp_path / "books" / "00_a.ipynb").write_text("{not json")
    assert make_lab.main(["--notebooks", str(tmp_path / "books"), "--out", str(tmp_path / "lab")]) == 1
    assert "cannot read it as a notebook" in capsys.readouterr().err
    _notebook(tmp_path / "books", "00_a.ipynb", [])
    (tmp_path / "file").write_text("")
    assert make_lab.main(["--notebooks", str(tmp_path / "books"), "--out", str(tmp_path / "file")]) == 1
    assert "is a file, not a folder" in capsys.readouterr().err
    assert make_lab.main(["--notebooks", str(tmp_path / "books"), "--out", str(tmp_path / "books")]) == 1
    assert "would overwrite the notebooks" in capsys.readouterr().err
    assert make_lab.main(["--notebooks", str(tmp_path / "books"), "--out", str(tmp_path / "lab")]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'lab' / '00_a.ipynb'}: 0 exercise(s) stubbed\n"
