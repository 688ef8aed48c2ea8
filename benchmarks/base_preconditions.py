#!/usr/bin/env python
"""Does the toy base meet notebook 00's preconditions on seeds nobody tuned on?

Builds the base of each seed (one process per seed, one torch thread each, ``--workers`` at a time) in
its own run directory under ``--run-root``, and prints per seed the warm-up seconds and every
precondition of :func:`mdrl_lib.claims.base_preconditions` (held-out scores below the ceiling, mixed
GRPO groups, Math's right-number share), then how many seeds meet all of them.

    python benchmarks/base_preconditions.py --seeds 101-110 --workers 2
    python benchmarks/base_preconditions.py --seeds 101-110 --workers 10 --json out.json   # a many-core machine
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def parse_seeds(text: str) -> list[int]:
    """``"101-110"`` or ``"3,5,8"`` -> a list of seeds."""
    seeds: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        seeds += list(range(int(low), int(high) + 1)) if high else [int(low)]
    return seeds


def one_seed(seed: int, run_root: str, params: dict) -> dict:
    """Build (or load) one seed's base and measure its preconditions."""
    import torch

    torch.set_num_threads(1)
    from mdrl_lib.claims import base_preconditions
    from mdrl_lib.config import RunConfig
    from mdrl_lib.domains.base import DOMAIN_NAMES
    from mdrl_lib.evaluation import mixed_group_share
    from mdrl_lib.kit import open_kit
    from mdrl_lib.specs import Base

    kit = open_kit(RunConfig.from_params(seed=seed, run_dir=str(Path(run_root) / f"seed{seed}"), **params))
    base = kit.get(Base(), progress=False)
    model, tokenizer = kit.load(Base())
    mixed = {n: mixed_group_share(model, tokenizer, kit.domain(n), kit.splits(n).train,
                                  num_generations=kit.config.rl.num_generations,
                                  max_new_tokens=kit.config.rl.max_completion_length, seed=seed)["mixed"]
             for n in DOMAIN_NAMES}
    table = base_preconditions(kit.scores_of(Base()), mixed, kit.item_results(Base()))
    return {"seed": seed, "warmup_seconds": base.metrics.get("warmup_seconds"),
            "checks": table.drop(columns="why").to_dict("records"), "all_hold": bool(table["holds"].all())}


def _short(check: str) -> str:
    domain, text = check.split(": ", 1)
    kind = "score" if "score" in text else "mixed" if "mixed" in text else "right number"
    return f"{domain} {kind}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="101-110", help="seeds, e.g. 101-110 or 3,5,8 (default: 101-110)")
    parser.add_argument("--workers", type=int, default=2, help="processes at once (default: 2)")
    parser.add_argument("--run-root", default=None, help="where the run directories go (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a run parameter for every seed, as the CLI takes it")
    args = parser.parse_args(argv)
    from mdrl_lib.cli import parse_value

    params = {name: parse_value(value) for name, value in args.parameter}
    seeds = parse_seeds(args.seeds)
    with tempfile.TemporaryDirectory(prefix="mdrl-bases-") as scratch:
        root = args.run_root or scratch
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            results = list(pool.map(one_seed, seeds, [root] * len(seeds), [params] * len(seeds)))
    for result in results:
        values = ", ".join(f"{_short(c['check'])} {c['value']:.3f}{'' if c['holds'] else ' FAILS'}"
                           for c in result["checks"])
        print(f"seed {result['seed']}: warm-up {result['warmup_seconds']} s; {values}")
    met = sum(r["all_hold"] for r in results)
    print(f"{met} of {len(results)} seeds meet every precondition")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
