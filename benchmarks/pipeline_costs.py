#!/usr/bin/env python
"""The toy pipeline's work, measured: CPU-seconds per notebook and per artifact kind, from the manifests.

Every stored artifact's manifest records the seconds its build took (one torch thread at toy scale).
This script plans the selected notebooks against a run directory that holds their artifacts (for
example after ``make toy``), reads each planned artifact's manifest and sums the seconds: by notebook
(an artifact two notebooks plan counts for the first of them), by kind, and per world seed, beside the
budget in ``mdrl_lib.plan.TOY_BUDGET``, and the budget scaled to this CPU by its base warm-up
(``mdrl_lib.plan.budget_on_this_cpu``: CPUs of this machine kind differ by up to 1.7x). Seconds measured with
other work beside the build are longer than on a quiet machine: measure after a run made alone.

    python benchmarks/pipeline_costs.py runs/toy            # every notebook, their defaults
    python benchmarks/pipeline_costs.py runs/toy -p rl_seeds 0,1,2 --only 04
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def costs(run_dir: Path, notebooks: list[Path], overrides: dict) -> list[dict]:
    """One row per planned artifact: key, kind, label, first notebook, world, seconds (None: not stored)."""
    from mdrl_lib import plan

    planned = []
    for path in notebooks:
        planned += plan.notebook_plan(path, {**overrides, "run_dir": str(run_dir)})
    nodes = plan.build_graph(planned)
    rows = []
    for key, node in nodes.items():
        manifest = run_dir / "store" / key / "manifest.json"
        seconds = json.loads(manifest.read_text()).get("seconds") if manifest.is_file() else None
        world = plan.world_costs([node])
        rows.append({"key": key, "kind": node.kind, "label": node.label, "notebook": node.planned.notebooks[0],
                     "world": next(iter(world)), "seconds": seconds})
    return rows


def main(argv: list[str] | None = None) -> int:
    from mdrl_lib.cli import list_notebooks, parse_value
    from mdrl_lib.plan import BUDGET_REFERENCE_WARMUP_S, TOY_BUDGET, budget_on_this_cpu

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, nargs="?", default=ROOT / "runs" / "toy",
                        help="a run directory holding the notebooks' artifacts (default: runs/toy, as make toy leaves it)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    parser.add_argument("--only", nargs="+", default=None, help="notebook prefixes, e.g. 01 04")
    args = parser.parse_args(argv)
    if not (args.run_dir / "store").is_dir():
        print(f"skipped: {args.run_dir} holds no artifacts; run `make toy` (or `python -m mdrl_lib run`) first")
        return 0
    notebooks = [p for p in list_notebooks() if not args.only or p.stem[:2] in args.only]
    rows = costs(args.run_dir.resolve(), notebooks, {k: parse_value(v) for k, v in args.parameter})
    missing = [r["label"] for r in rows if r["seconds"] is None]
    for title, field in (("by notebook", "notebook"), ("by kind", "kind"), ("by world", "world")):
        sums: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        for r in rows:
            sums[r[field]] += r["seconds"] or 0.0
            counts[r[field]] += 1
        print(f"CPU-seconds {title}:")
        for name in sorted(sums):
            print(f"  {name:<28} {sums[name]:8.1f} s  ({counts[name]} artifacts)")
    total = sum(r["seconds"] or 0.0 for r in rows)
    print(f"total: {total:.1f} CPU-s over {len(rows)} artifacts; budget: {TOY_BUDGET['work_per_world_cpu_s']} CPU-s "
          f"per world seed")
    warmups = [r["seconds"] for r in rows if r["kind"] == "base" and r["seconds"]]
    if len(warmups) == 1:
        scaled = budget_on_this_cpu(warmups[0])
        print(f"this CPU's base warm-up took {warmups[0]:.1f} s against the budget's reference "
              f"{BUDGET_REFERENCE_WARMUP_S:.0f} s: the budget on this CPU is {scaled['work_per_world_cpu_s']:.0f} CPU-s "
              f"per world seed (make toy {scaled['make_toy_s']:.0f} s, make test {scaled['make_test_s']:.0f} s); the "
              f"work is {total / warmups[0]:.2f} warm-ups, the budget {TOY_BUDGET['work_per_world_cpu_s'] / BUDGET_REFERENCE_WARMUP_S:.2f}")
    if missing:
        print(f"not stored, not counted ({len(missing)}): {', '.join(missing[:8])}" + (" ..." if len(missing) > 8 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
