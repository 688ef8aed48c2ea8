#!/usr/bin/env python
"""Check that each notebook's plan covers what the notebook builds: for each notebook in order,
``plan --build --only NN`` and then ``run --only NN --workers 0`` must add nothing to the store.

    python scripts/plan_covers_notebooks.py --run-dir runs/plan-check          # every notebook
    python scripts/plan_covers_notebooks.py --run-dir runs/plan-check --only 01 -p rl_seeds 0,1,2

Prints, per notebook, how many artifacts the plan built and which ones the notebook added itself
(their labels); exits 1 if any notebook added one. Costs one toy pipeline (minutes) on a fresh run
directory.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def stored(run_dir: Path) -> dict[str, str]:
    """key -> label of every artifact in the run directory's store."""
    out = {}
    for manifest in (run_dir / "store").glob("*/manifest.json"):
        data = json.loads(manifest.read_text())
        out[data["key"]] = data.get("config", {}).get("label", data["key"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--only", nargs="+", default=["00", "01", "02", "03", "04", "05", "06"])
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    args = parser.parse_args(argv)
    flags = [part for name, value in args.parameter for part in ("-p", name, value)]
    cli = [sys.executable, "-m", "mdrl_lib"]
    failed = False
    for notebook in args.only:
        before = stored(args.run_dir)
        subprocess.run([*cli, "plan", "--build", "--quiet", "--only", notebook, "--run-dir", str(args.run_dir), *flags],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        planned = stored(args.run_dir)
        subprocess.run([*cli, "run", "--only", notebook, "--workers", "0", "--run-dir", str(args.run_dir), *flags],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        after = stored(args.run_dir)
        added = {k: v for k, v in after.items() if k not in planned}
        failed |= bool(added)
        print(f"{notebook}: the plan built {len(planned) - len(before)}, the notebook added {len(added)}"
              + (": " + "; ".join(sorted(added.values())) if added else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
