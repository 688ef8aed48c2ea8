#!/usr/bin/env python
"""Compare the claim records of two run directories: verdicts and every figure, field by field.

    python scripts/compare_claims.py runs/before/claims runs/after/claims          # every record
    python scripts/compare_claims.py runs/before/claims runs/after/claims C3 C4    # records starting so

Prints SAME or DIFF (with the first differing fields) per record of the first directory, MISSING for a
record the second lacks; exits 1 unless every record is the same. The time a record was written, the
artifact keys it lists and the kit's version are left out (they differ between any two runs); NaN equals
NaN. Used to check that a refactor changed structure, not results.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

IGNORED = ("recorded", "artifacts", "kit_version")


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """A nested JSON value as ``{"a.b[0]": leaf}``."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else key))
        return out
    if isinstance(value, list):
        out = {}
        for index, item in enumerate(value):
            out.update(flatten(item, f"{prefix}[{index}]"))
        return out
    return {prefix: value}


def same(a: Any, b: Any) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def differences(first: dict, second: dict) -> list[str]:
    """The fields (flattened) whose values differ between two records, :data:`IGNORED` aside."""
    a = flatten({k: v for k, v in first.items() if k not in IGNORED})
    b = flatten({k: v for k, v in second.items() if k not in IGNORED})
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if not same(a.get(k), b.get(k))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("prefixes", nargs="*", help="compare only records whose file name starts so")
    args = parser.parse_args(argv)
    records = sorted(p for p in args.before.glob("*.json")
                     if not args.prefixes or any(p.name.startswith(x) for x in args.prefixes))
    if not records:
        print(f"no claim records in {args.before}" + (f" starting with {args.prefixes}" if args.prefixes else ""))
        return 1
    failed = False
    for path in records:
        other = args.after / path.name
        if not other.is_file():
            print(f"MISSING {path.name}")
            failed = True
            continue
        diff = differences(json.loads(path.read_text()), json.loads(other.read_text()))
        failed |= bool(diff)
        print(("DIFF " if diff else "SAME ") + path.name + (": " + "; ".join(diff[:6]) if diff else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
