#!/usr/bin/env python
"""Write student copies of the notebooks: every solution cell's function body becomes a stub that raises
NotImplementedError with its exercise's hint.

    python scripts/make_lab.py                                   # notebooks/ -> lab/ (what `make lab` runs)
    python scripts/make_lab.py --notebooks notebooks --out /tmp/lab

A solution cell (each notebook's "Build it yourself" section) is a code cell tagged ``solution`` whose metadata
names its exercise (``"exercise": "01-top-jaccard"``, a key of :mod:`mdrl_lib.exercises`); it holds imports and
the one function that exercise names. Its copy keeps the imports, the def line and the docstring, so the student
sees the signature, and raises the hint instead of the body: the check cell after it prints "not implemented
yet" and the notebook runs on. Existing copies in the output folder are overwritten. Errors are one line.
"""
from __future__ import annotations

import argparse
import ast
import copy
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SOLUTION_TAG = "solution"


class LabError(Exception):
    """A problem that stops the student copies, said in one line."""


def is_solution(cell: dict) -> bool:
    return cell.get("cell_type") == "code" and SOLUTION_TAG in cell.get("metadata", {}).get("tags", [])


def _literal_lines(text: str, indent: str, width: int = 110) -> list[str]:
    """``text`` as adjacent double-quoted string literals, one a line, each line at most about ``width``
    characters; every piece but the last ends with the space that followed it."""
    def literal(piece: str) -> str:
        return json.dumps(piece, ensure_ascii=False)

    room = width - len(indent) - 1  # the closing parenthesis after the last piece
    pieces, current = [], ""
    for word in text.split(" "):
        if current and len(literal(current + word)) > room:
            pieces.append(current)
            current = ""
        current += word + " "
    pieces.append(current[:-1])
    return [indent + literal(piece) for piece in pieces]


def stub_source(source: str, function: str, hint: str, where: str = "the cell") -> str:
    """The solution cell ``source`` with the body of its function ``function`` replaced by ``raise
    NotImplementedError(hint)``: the imports before it, its def line (decorators, signature) and its docstring are
    kept, everything else goes. ``where`` names the cell in errors."""
    try:
        tree = ast.parse(source)
    except SyntaxError as error:
        raise LabError(f"{where}: the solution cell does not parse ({error.msg}, line {error.lineno})") from None
    definitions = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if [n.name for n in definitions] != [function]:
        raise LabError(f"{where}: a solution cell must define exactly one function, {function}; it defines "
                       f"{[n.name for n in definitions] or 'none'}")
    node = definitions[0]
    others = [n for n in tree.body if n is not node]
    if any(not isinstance(n, (ast.Import, ast.ImportFrom)) for n in others) or tree.body[-1] is not node:
        raise LabError(f"{where}: a solution cell may hold only imports and then the function {function}")
    body = node.body
    has_docstring = isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
        and isinstance(body[0].value.value, str)
    lines = source.split("\n")
    keep = body[0].end_lineno if has_docstring else body[0].lineno - 1
    if keep < node.lineno:  # a body on the def line itself
        raise LabError(f"{where}: write the body of {function} on its own lines, below the def line")
    indent = " " * body[0].col_offset
    stub = [f"{indent}raise NotImplementedError(", *_literal_lines(hint, indent + "    ")]
    stub[-1] += ")"
    return "\n".join(lines[:keep] + stub)


def _source_lines(text: str) -> list[str]:
    parts = text.split("\n")
    return [p + "\n" for p in parts[:-1]] + [parts[-1]]


def student_copy(book: dict, name: str) -> tuple[dict, list[str]]:
    """A copy of the notebook ``book`` (its JSON) with every solution cell stubbed, and the exercise keys stubbed
    in order. ``name`` names the notebook in errors."""
    from mdrl_lib import exercises

    out = copy.deepcopy(book)
    keys = []
    for index, cell in enumerate(out.get("cells", [])):
        if not is_solution(cell):
            continue
        where = f"{name}, cell {cell.get('id', index)}"
        key = cell.get("metadata", {}).get("exercise")
        if key is None:
            raise LabError(f"{where}: a solution cell's metadata must name its exercise (\"exercise\": \"NN-name\")")
        try:
            item = exercises.exercise(key)
        except ValueError as error:
            raise LabError(f"{where}: {error}") from None
        source = "".join(cell.get("source", []))
        cell["source"] = _source_lines(stub_source(source, item.function, item.hint, where))
        cell["outputs"], cell["execution_count"] = [], None
        keys.append(key)
    return out, keys


def make_lab(notebooks: Path, out: Path) -> list[tuple[Path, list[str]]]:
    """Write a student copy of every ``NN_*.ipynb`` of ``notebooks`` to ``out`` (created if missing); returns each
    copy's path and the exercises stubbed in it. Raises :class:`LabError` with a one-line message."""
    notebooks, out = Path(notebooks), Path(out)
    if not notebooks.is_dir():
        raise LabError(f"no notebooks folder at {notebooks}")
    paths = sorted(notebooks.glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        raise LabError(f"no notebooks (NN_name.ipynb) in {notebooks}")
    if out.exists() and not out.is_dir():
        raise LabError(f"{out} is a file, not a folder for the student copies")
    if out.resolve() == notebooks.resolve():
        raise LabError(f"the student copies would overwrite the notebooks in {notebooks}; choose another --out")
    copies = []
    for path in paths:
        try:
            book = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise LabError(f"{path}: cannot read it as a notebook ({error})") from None
        copies.append((path, *student_copy(book, path.name)))
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path, book, keys in copies:
        target = out / path.name
        target.write_text(json.dumps(book, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append((target, keys))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notebooks", type=Path, default=ROOT / "notebooks",
                        help="the notebooks (default: notebooks/)")
    parser.add_argument("--out", type=Path, default=ROOT / "lab", help="where the student copies go (default: lab/)")
    args = parser.parse_args(argv)
    try:
        written = make_lab(args.notebooks, args.out)
    except LabError as error:
        print(f"make_lab: {error}", file=sys.stderr)
        return 1
    for target, keys in written:
        print(f"{target}: {len(keys)} exercise(s) stubbed" + (f" ({', '.join(keys)})" if keys else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
