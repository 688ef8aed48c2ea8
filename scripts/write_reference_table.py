#!/usr/bin/env python
"""Write the parts of the README and of the instructor's guide that come from the reference ledger
(``docs/reference/ledger-v<rules version>.json``).

The README's claims table sits between its ``<!-- reference-table -->`` and ``<!-- /reference-table -->`` lines
(:func:`mdrl_lib.reference.reference_markdown`); the guide's expected ranges between
``<!-- reference-ranges -->`` and ``<!-- /reference-ranges -->`` in ``docs/instructor.md``
(:func:`mdrl_lib.reference.instructor_markdown`). ``tests/test_reference_readme.py`` fails when either differs
from the committed reference. After a new reference run::

    python scripts/write_reference_table.py          # rewrite both
    python scripts/write_reference_table.py --check  # exit 1 naming the files that differ
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
START, END = "<!-- reference-table -->", "<!-- /reference-table -->"
RANGES_START, RANGES_END = "<!-- reference-ranges -->", "<!-- /reference-ranges -->"


def with_block(text: str, block: str, start_marker: str = START, end_marker: str = END) -> str:
    """``text`` with what lies between the two marker lines replaced by ``block``; a text without both markers,
    in that order, is a ``ValueError`` naming them."""
    start, end = text.find(start_marker), text.find(end_marker)
    if start < 0 or end < start:
        raise ValueError(f"the file needs the lines {start_marker} and {end_marker}, in that order")
    return text[: start + len(start_marker)] + "\n" + block.rstrip("\n") + "\n" + text[end:]


def generated(root: Path = ROOT) -> dict[Path, str]:
    """Each file with its generated block written in, from this rules version's committed reference."""
    from mdrl_lib.reference import instructor_markdown, load_reference, reference_markdown

    reference = load_reference()
    readme, guide = root / "README.md", root / "docs" / "instructor.md"
    return {readme: with_block(readme.read_text(), reference_markdown(reference)),
            guide: with_block(guide.read_text(), instructor_markdown(reference), RANGES_START, RANGES_END)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report the files whose generated part differs")
    args = parser.parse_args(argv)
    stale = [path for path, text in generated().items() if path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path}: its reference part differs from the reference; run scripts/write_reference_table.py")
        return 1 if stale else 0
    for path, text in generated().items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
