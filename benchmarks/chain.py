"""Benchmark and criterion check for the default toy chain (notebooks 04 and 05).

For each seed: builds (or reads from the store) the warmed-up base, the chain Code -> Math -> QA -> CW
and a Re-Math refresh, then prints the seconds per stage, the stage x domain score matrix, Math's drop
from right after its stage to the chain end in units of the evaluation's standard error, and the share
of that drop the refresh recovers (with how far the other domains moved during the refresh).

    python benchmarks/chain.py --seeds 0 1 2 --run-root runs/bench
    python benchmarks/chain.py --seeds 0 --set rl_steps=200 --set rl_lr=3e-4   # an RL-settings attempt
    # seeds in parallel, one process each, then the criterion across seeds:
    for s in 0 1 2; do python benchmarks/chain.py --seeds $s --experts --json s$s.json & done; wait
    python benchmarks/chain.py --summarize s0.json s1.json s2.json

Timings are honest only for a fresh run root (a cached chain prints the stored build times).
One torch thread: on this machine's two cores the tiny model is far slower with two.
"""
from __future__ import annotations

import argparse
import ast
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mdrl_lib.config import RunConfig  # noqa: E402
from mdrl_lib.kit import Kit  # noqa: E402


def parse_set(items: list[str]) -> dict:
    """``name=value`` overrides of notebook parameters (values parsed as Python literals)."""
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            out[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[name] = value
    return out


def run_seed(seed: int, root: Path, overrides: dict, progress: bool, experts: bool = False) -> dict:
    """Build and measure one seed; returns the figures printed and collected in the summary."""
    config = RunConfig.from_params(seed=seed, run_dir=str(root / f"seed{seed}"), **overrides)
    kit = Kit(config)
    order = config.order
    t0 = time.perf_counter()
    base = kit.base(progress=progress)
    t_base = time.perf_counter() - t0
    t0 = time.perf_counter()
    stages = kit.chain(order, progress=progress)
    matrix = kit.score_matrix(order, progress=progress)
    t_chain = time.perf_counter() - t0
    t0 = time.perf_counter()
    refresh = kit.refreshed("math", order=order, progress=progress)
    t_refresh = time.perf_counter() - t0
    t0 = time.perf_counter()
    kit.chain(order, progress=False)
    kit.score_matrix(order, progress=False)
    t_cached = time.perf_counter() - t0
    gains = {}
    if experts:
        base_scores = kit.scores_of(base).set_index("domain")["score"]
        for name in order:
            kit.expert(name, progress=progress)
            expert_scores = kit.scores_of(kit.chain_specs((name,))[0]).set_index("domain")["score"]
            gains[name] = expert_scores[name] - base_scores[name]

    se = matrix.attrs["se"]
    math_stage = order.index("math")
    after_math = matrix.iloc[1 + math_stage]["math"]
    after_math_se = se.iloc[1 + math_stage]["math"]
    end, end_se = matrix.iloc[-1]["math"], se.iloc[-1]["math"]
    drop = after_math - end
    refreshed = kit.scores_of(refresh).set_index("domain")["score"]
    recovery = (refreshed["math"] - end) / drop if drop > 0 else float("nan")
    others = {d: refreshed[d] - matrix.iloc[-1][d] for d in matrix.columns if d != "math"}

    print(f"\n=== seed {seed} ({config.rl.steps} steps/stage, lr {config.rl.lr}, "
          f"{config.rl.prompts_per_step}x{config.rl.num_generations}, refresh {config.rl.refresh_steps}) ===")
    print(f"base (warm-up {config.warmup.steps} steps): {base.manifest['seconds']:.1f} s stored, "
          f"{t_base:.1f} s this call")
    for name, stage in zip(order, stages):
        print(f"  stage {name:5s}: {stage.manifest['seconds']:6.1f} s (GRPO {stage.metrics['log']['seconds']:.1f} s"
              f", mean reward first/last 10 steps {_mean(stage.metrics['log']['rewards'][:10]):.3f}"
              f"/{_mean(stage.metrics['log']['rewards'][-10:]):.3f})")
    print(f"  refresh    : {refresh.manifest['seconds']:6.1f} s")
    print(f"chain + score matrix this call: {t_chain:.1f} s; refresh: {t_refresh:.1f} s; "
          f"cached chain + matrix: {t_cached:.2f} s")
    print(matrix.round(3).to_string())
    print(f"Math after its stage {after_math:.3f} (se {after_math_se:.3f}), chain end {end:.3f} (se {end_se:.3f}): "
          f"drop {drop:+.3f} = {drop / after_math_se:.1f} se "
          f"({drop / math.hypot(after_math_se, end_se):.1f} se of the difference)")
    print(f"Re-Math refresh: Math {end:.3f} -> {refreshed['math']:.3f}, recovers {recovery:.0%} of the drop; "
          f"others moved " + ", ".join(f"{d} {v:+.3f}" for d, v in others.items()))
    if gains:
        print("expert gain over the base on its own domain: "
              + ", ".join(f"{d} {v:+.3f}" for d, v in gains.items()))
    return {"seed": seed, "drop": drop, "expert_gains": gains, "drop_se": drop / after_math_se, "recovery": recovery,
            "others": others, "chain_seconds": t_chain, "stage_seconds": [s.manifest["seconds"] for s in stages],
            "base_seconds": base.manifest["seconds"], "refresh_seconds": refresh.manifest["seconds"],
            "cached_seconds": t_cached, "matrix": matrix.round(4).to_dict(), "refresh": refreshed}


def _mean(values) -> float:
    return sum(values) / len(values) if values else float("nan")


def seed_spread(results: list[dict], domains: list[str]) -> tuple[dict, dict]:
    """Two estimates of each domain's seed spread: the sd across seeds of its chain-end score, and
    the sd across seeds pooled over every row of the score matrix (base and each stage).

    With three seeds a single sd has two degrees of freedom and often lands far below the true
    spread; pooling the five rows gives ten, so the pooled figure is the one the verdict uses.
    """
    import statistics

    end = {d: statistics.stdev([r["refresh"][d] - r["others"][d] for r in results]) for d in domains}
    rows = list(results[0]["matrix"][domains[0]])
    pooled = {d: math.sqrt(_mean([statistics.variance([r["matrix"][d][row] for r in results]) for row in rows]))
              for d in domains}
    return end, pooled


def summarize(results: list[dict]) -> None:
    """Print the chain criterion per seed and across seeds: Math's drop in standard errors, the
    refresh's recovery, whether the other domains moved less than their seed spread (see
    :func:`seed_spread`) and, when measured, each expert's gain."""
    import statistics

    print("\n=== summary ===")
    others = sorted(results[0]["others"])
    spread = None
    if len(results) > 1:
        end_spread, spread = seed_spread(results, others)
        print("seed spread, sd over seeds pooled over the matrix rows: "
              + ", ".join(f"{d} {spread[d]:.3f}" for d in others)
              + "; of the chain-end scores alone: " + ", ".join(f"{d} {end_spread[d]:.3f}" for d in others))
    for r in results:
        within = all(abs(r["others"][d]) <= spread[d] for d in others) if spread else None
        within_end = all(abs(r["others"][d]) <= end_spread[d] for d in others) if spread else None
        ok = r["drop_se"] > 2 and r["recovery"] >= 0.5 and within is not False
        print(f"seed {r['seed']}: drop {r['drop']:+.3f} = {r['drop_se']:.1f} se, recovery {r['recovery']:.0%}, "
              f"others moved " + ", ".join(f"{d} {r['others'][d]:+.3f}" for d in others)
              + (f" ({'within' if within else 'NOT within'} their pooled seed spread; "
                 f"{'within' if within_end else 'not within'} the chain-end one)" if within is not None else "")
              + f", chain+matrix {r['chain_seconds']:.0f} s, cached {r['cached_seconds']:.2f} s"
              f" -> {'meets' if ok else 'misses'} the criterion")
    if all(r.get("expert_gains") for r in results):
        for name in results[0]["expert_gains"]:
            values = [r["expert_gains"][name] for r in results]
            sd = statistics.stdev(values) if len(values) > 1 else float("nan")
            print(f"{name} expert gain over the base: mean {statistics.mean(values):+.3f}, sd {sd:.3f} "
                  f"({', '.join(f'{v:+.3f}' for v in values)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--run-root", default="runs/bench-chain")
    parser.add_argument("--set", action="append", default=[], help="a notebook parameter, name=value")
    parser.add_argument("--json", default="", help="also write the per-seed figures to this file")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--experts", action="store_true",
                        help="also train each domain's expert and print its gain over the base")
    parser.add_argument("--summarize", nargs="+", metavar="JSON", default=[],
                        help="train nothing: print the summary of per-seed --json files (seeds run in parallel)")
    args = parser.parse_args()
    if args.summarize:
        missing = [f for f in args.summarize if not Path(f).is_file()]
        if missing:
            parser.error(f"no such file: {', '.join(missing)}")
        summarize([r for f in args.summarize for r in json.loads(Path(f).read_text())])
        return
    overrides = parse_set(args.set)
    results = [run_seed(s, Path(args.run_root), overrides, not args.no_progress, args.experts)
               for s in args.seeds]
    summarize(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    main()
