"""Two runs of ``python -m mdrl_lib replicate`` on two seeds give identical ledgers, and a killed run resumes.

Run A goes through once. Run B is killed (SIGTERM to its whole process group: the command, its seeds' runs and
their build workers) after ``--kill-after`` seconds, then rerun with the same command; the artifacts stored before
the kill must be neither rebuilt nor rewritten (their manifests keep their modification times), and B's ledger
must equal A's byte for byte. Run both from one commit: the ledger names the kit's commit, so a commit made
between A and B changes that line. The check fails when B finished every seed before the kill (nothing to
resume): lower ``--kill-after`` then. SIGTERM rather than SIGINT, because a command started in the background of
a non-interactive shell ignores SIGINT.

    python benchmarks/replicate_determinism.py --seeds 1000-1001 --only 00 01 --kill-after 150

``--only 00 01`` keeps it to notebooks 00 and 01 (C1 and C2), about 300 CPU-seconds per seed and run on a 2-core
machine; without it every notebook runs (the whole reference's cost for two seeds, twice). Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mdrl_lib.replicate import parse_seeds


def command(root: Path, seeds: str, workers: int, only: list[str]) -> list[str]:
    count = len(parse_seeds(seeds))
    return [sys.executable, "-m", "mdrl_lib", "replicate", "--seeds", seeds, "--workers", str(workers),
            "--root", str(root), "--out", str(root / "ledger.json"), "--min-seeds", str(count),
            *(["--only", *only] if only else [])]


def manifests(root: Path) -> dict[str, float]:
    """Every stored artifact's manifest under ``root`` with its modification time."""
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.glob("seed-*/store/*/manifest.json")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1000-1001")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", nargs="*", default=["00", "01"])
    parser.add_argument("--kill-after", type=float, default=150.0, help="seconds before run B is interrupted")
    parser.add_argument("--keep", type=Path, default=None, help="keep the two roots under this folder")
    args = parser.parse_args(argv)
    folder = args.keep or Path(tempfile.mkdtemp(prefix="replicate-determinism-"))
    a, b = folder / "a", folder / "b"
    start = time.perf_counter()
    subprocess.run(command(a, args.seeds, args.workers, args.only), check=True, stdout=subprocess.DEVNULL)
    seconds_a = time.perf_counter() - start
    start = time.perf_counter()
    killed = subprocess.Popen(command(b, args.seeds, args.workers, args.only), stdout=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        killed.wait(timeout=args.kill_after)
    except subprocess.TimeoutExpired:
        os.killpg(killed.pid, signal.SIGTERM)
        killed.wait()
    seeds = parse_seeds(args.seeds)
    done_at_kill = sum((b / f"seed-{seed}" / "done.json").is_file() for seed in seeds)
    finished_before_kill = done_at_kill == len(seeds)
    before = manifests(b)
    subprocess.run(command(b, args.seeds, args.workers, args.only), check=True, stdout=subprocess.DEVNULL)
    seconds_b = time.perf_counter() - start
    after = manifests(b)
    rewritten = sorted(k for k, t in before.items() if after.get(k) != t)
    identical = (a / "ledger.json").read_bytes() == (b / "ledger.json").read_bytes()
    print(json.dumps({"seeds": args.seeds, "only": args.only, "identical_ledgers": identical,
                      "killed_after_s": args.kill_after, "seeds_done_at_kill": done_at_kill,
                      "finished_before_kill": finished_before_kill,
                      "stored_before_kill": len(before), "rewritten_after_resume": len(rewritten),
                      "stored_in_the_end": len(after), "run_a_s": round(seconds_a), "run_b_with_kill_s": round(seconds_b),
                      "folder": str(folder)}))
    return 0 if identical and not rewritten and not finished_before_kill else 1


if __name__ == "__main__":
    raise SystemExit(main())
