"""Benchmark: the toy base's warm-up time, held-out scores and GRPO signal, for several seeds.

Usage: python benchmarks/warmup.py [--seeds 0 1 2] [--run-root DIR]
Prints, per seed, the warm-up seconds, each domain's held-out base score and standard error, and the
share of RL train prompts whose sampled groups are mixed (rewards not all equal). Target: the warm-up
alone at most 90 s on one core. Whether every base meets notebook 00's preconditions on many seeds is
measured by benchmarks/base_preconditions.py.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import pandas as pd

from mdrl_lib.config import RunConfig
from mdrl_lib.domains.base import DOMAIN_NAMES
from mdrl_lib.evaluation import mixed_group_share
from mdrl_lib.kit import open_kit


def measure(seed: int, run_root: str) -> list[dict]:
    kit = open_kit(RunConfig.from_params(seed=seed, run_dir=f"{run_root}/seed{seed}"))
    start = time.perf_counter()
    base = kit.base(progress=False)
    built_in = time.perf_counter() - start
    scores = kit.score(base).set_index("domain")
    model, tokenizer = kit.load(base)
    rows = []
    for name in DOMAIN_NAMES:
        signal = mixed_group_share(model, tokenizer, kit.domain(name), kit.splits(name).train,
                                   num_generations=kit.config.rl.num_generations,
                                   max_new_tokens=kit.config.rl.max_completion_length, seed=seed)
        rows.append({"seed": seed, "domain": name, "warmup_s": base.metrics["warmup_seconds"],
                     "base_build_s": round(built_in, 1), "score": scores.loc[name, "score"],
                     "se": scores.loc[name, "se"], "mixed": signal["mixed"], "any_right": signal["any_right"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--run-root", default=None, help="where to build the bases (default: a fresh temp dir)")
    args = parser.parse_args()
    root = args.run_root or tempfile.mkdtemp(prefix="mdrl-bench-")
    table = pd.DataFrame([row for seed in args.seeds for row in measure(seed, root)])
    pd.set_option("display.width", 160)
    print(table.round(3).to_string(index=False))
    per_seed = table.groupby("seed").agg(warmup_s=("warmup_s", "first"), max_score=("score", "max"),
                                         min_mixed=("mixed", "min"))
    print(per_seed.round(3).to_string())
    ok = (per_seed["warmup_s"] <= 180).all() and (per_seed["max_score"] < 0.95).all() and (per_seed["min_mixed"] > 0).all()
    print("targets met" if ok else "TARGETS MISSED")


if __name__ == "__main__":
    main()
