#!/usr/bin/env python
"""Write each notebook's ``parameters`` cell from its recipe (``mdrl_lib.recipes.nbNN.Params``).

The recipe is the one declaration of a notebook's parameters; ``tests/test_recipes.py`` fails when a
cell and its recipe disagree. After changing a recipe's parameters, run::

    python scripts/write_parameter_cells.py          # rewrite the cells that differ
    python scripts/write_parameter_cells.py --check  # exit 1 naming the notebooks that differ
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    from mdrl_lib.recipes import RECIPE_MODULES, recipe

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report the notebooks whose cell differs")
    args = parser.parse_args(argv)
    stale = []
    for notebook in RECIPE_MODULES:
        path = ROOT / "notebooks" / f"{notebook}.ipynb"
        book = json.loads(path.read_text())
        cell = next(c for c in book["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
        text = recipe(notebook).Params.papermill_cell()
        if "".join(cell["source"]) == text:
            continue
        stale.append(notebook)
        if not args.check:
            lines = text.split("\n")
            cell["source"] = [line + "\n" for line in lines[:-1]] + [lines[-1]]
            path.write_text(json.dumps(book, indent=1, ensure_ascii=False) + "\n")
    print(("differ: " if args.check else "rewrote: ") + (", ".join(stale) or "none"))
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
