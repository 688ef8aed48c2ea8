"""The digit-free world against the default one: does Math still fall when QA and CW emit no digits?

Notebook 04's fourth control. In the digit-free world (the run setting ``data_digit_free``) QA and CW write
their numbers with letters a-j for the digits 0-9 (``17 years`` -> ``bh years``, ``2 bat 17 gem`` ->
``c bat bh gem``): same prompts, same lengths, no digit in any later domain's answer, so no later domain
shares Math's digit outputs. The world needs its own base (its warm-up data differ), so it is not part of
every toy run: this script builds, for each run seed, both worlds' bases and chains (the run's order, one
RL seed), and prints for each world its base's preconditions, its stage x domain matrix and each domain's
change from its own stage to the chain's end, paired over the held-out items, then the two worlds' Math
at the chain's end against each other (the same Math items: Math is the same in both worlds).

    python benchmarks/digit_free_world.py --seeds 0 --run-root /tmp/nb04-run   # reuses notebook 04's store
    python benchmarks/digit_free_world.py --seeds 0 1 2 --json digit_free.json

Cost on one thread: a base's warm-up (about 100 s) and a chain (about 3 minutes) per world not yet stored.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mdrl_lib import interference  # noqa: E402
from mdrl_lib.claims import base_precondition_table, precondition_warning  # noqa: E402
from mdrl_lib.config import RunConfig  # noqa: E402
from mdrl_lib.kit import Kit  # noqa: E402

WORLDS = {"default world": False, "digit-free world": True}


def run_seed(seed: int, rl_seed: int, root: Path, domain: str, overrides: dict) -> dict:
    """Both worlds of one run seed: preconditions, matrices, changes from each domain's own stage to the end."""
    out: dict = {"seed": seed, "rl_seed": rl_seed, "worlds": {}}
    items_end = {}
    for name, digit_free in WORLDS.items():
        config = RunConfig.from_params(seed=seed, run_dir=str(root), data_digit_free=digit_free, **overrides)
        kit = Kit(config)
        t0 = time.perf_counter()
        chain = [kit.get(spec) for spec in kit.chain_specs(None, rl_seed)]
        seconds = time.perf_counter() - t0
        items = interference.chain_items(kit, kit.chain_specs(None, rl_seed))
        matrix = kit.score_matrix(None, rl_seed)
        checks = base_precondition_table(kit)
        forgetting = interference.forgetting(items)
        items_end[name] = items[config.order[-1]]
        print(f"\n=== seed {seed}, RL seed {rl_seed}: {name} ({seconds:.0f} s to build or load the chain; "
              f"stages stored in {sum(a.manifest['seconds'] for a in chain):.0f} s) ===")
        warning = precondition_warning(checks)
        print(warning or "base preconditions: all hold")
        print(matrix.round(3).to_string())
        print(forgetting.round(4).to_string(index=False))
        row = forgetting.set_index("domain").loc[domain]
        out["worlds"][name] = {"preconditions_hold": not warning, "warning": warning,
                               "matrix": matrix.round(4).to_dict(), "forgetting": forgetting.round(5).to_dict("records"),
                               "drop": float(row["change"]), "drop_ci": [float(row["ci_low"]), float(row["ci_high"])],
                               "drop_p": float(row["p_value"]), "build_seconds": seconds}
    versus = interference.paired_change(items_end["digit-free world"], items_end["default world"], domain)
    out["default_minus_digit_free_end"] = {"diff": versus.diff, "ci_low": versus.ci_low, "ci_high": versus.ci_high,
                                           "p_value": versus.p_value}
    print(f"\n{domain} at the chain's end, default world minus digit-free world (paired, same items): "
          f"{versus.diff:+.4f} [{versus.ci_low:+.4f}, {versus.ci_high:+.4f}], p={versus.p_value:.3g}")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="run seeds (each: two worlds, two bases)")
    parser.add_argument("--rl-seed", type=int, default=0, help="the chain's RL seed in both worlds")
    parser.add_argument("--domain", default="math", help="the damaged domain (default math)")
    parser.add_argument("--run-root", type=Path, default=Path("runs/digit-free"),
                        help="one store for both worlds and every seed (keys differ)")
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE",
                        help="run parameters, e.g. rl_steps=100 (values as Python literals)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    import ast

    overrides = {}
    for item in args.set:
        name, _, value = item.partition("=")
        try:
            overrides[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[name] = value
    results = [run_seed(s, args.rl_seed, args.run_root, args.domain, overrides) for s in args.seeds]
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
