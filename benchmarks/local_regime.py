#!/usr/bin/env python
"""The toy LM's local regime: is there a rate at which B's stage both stays local and damages A?

Notebook 03's ladder judges C5 and C6's theorem on the toy LM in two regimes: B's stage at the run's rate
(``[default LM]``) and at a small rate (``[local LM]``, ``local_lr`` for ``local_steps`` GRPO steps). The theory
needs both premises at once: *locality* (the quadratic model of L_A within the rules file's tolerance at t = 1 and
at B's checkpoints) and *damage* (B's stage lowers A's held-out score by at least the rules' number of paired
standard errors). This script sweeps B's rate at notebook 03's default length and checkpoints, and prints for
each rate: ||delta_B|| / ||theta_A*||, the locality error (the premise's figure), A's drop in paired standard
errors, and B's own gain (paired, on B's held-out items), so that the local rate is chosen from these
measurements (the largest rate whose locality error is within the tolerance, if its damage premise also holds),
or the trade-off is shown when no rate has both.

    python benchmarks/local_regime.py --seed 0 --pair math,cw --run-dir runs/toy
    python benchmarks/local_regime.py --seed 1 --pair math,qa --rates 2e-5 1e-4

Cost on one thread: one GRPO stage per rate (half a minute at notebook 03's 60 steps), its Taylor terms along the
checkpoints and A's scoring at each.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mdrl_lib import perturbation as pt  # noqa: E402
from mdrl_lib.claims.rules import rule  # noqa: E402
from mdrl_lib.config import RunConfig  # noqa: E402
from mdrl_lib.kit import Kit  # noqa: E402
from mdrl_lib.recipes import nb03  # noqa: E402
from mdrl_lib.specs import Base, Stage  # noqa: E402
from mdrl_lib.stats import paired_difference  # noqa: E402

RATES = (1e-5, 3e-5, 1e-4, 2e-4)


def sweep(kit: Kit, params: nb03.Params, rates) -> list[dict]:
    """One row per rate: the stage's displacement, locality error, A's damage in paired SEs, B's paired gain."""
    a, b = params.pair
    s = nb03.specs(params)
    expert = pt.load_expert(kit, s.objective)
    theta_norm = float(expert.theta.norm())
    tolerance = rule("premises", "theory_locality_rtol")
    rows = []
    for rate in rates:
        stage = Stage(s.expert, b, lr=rate, steps=params.local_steps, save_every=params.checkpoint_every)
        segment = kit.open(pt.TaylorSegment(stage, s.objective, points=params.taylor_points))
        along = kit.open(pt.TaylorAlong(stage, s.objective))
        path = kit.open(pt.PathAlong(stage, s.objective))
        steps = sorted(path["items"])
        damage = pt.paired_damage(path["items"][steps[0]], path["items"][steps[-1]])
        delta = pt.weights_vector(kit, expert.space, stage) - expert.theta
        before, after = (kit.item_results(m) for m in (s.expert, stage))
        gain = paired_difference(before[before["domain"] == b]["score"].to_numpy(),
                                 after[after["domain"] == b]["score"].to_numpy())
        error = pt.locality_error(segment, along)["worst"]
        rows.append({"rate": rate, "steps": params.local_steps, "delta_relative": float(delta.norm()) / theta_norm,
                     "locality_error": error, "local": error <= tolerance,
                     "damage_standard_errors": damage["standard_errors"], "damage": damage["drop"],
                     "damaged": damage["standard_errors"] >= rule("premises", "damage_min_standard_errors"),
                     "b_gain": gain.diff, "b_gain_p": gain.p_value})
        print(f"rate {rate:g}: ||delta_B||/||theta_A*|| {rows[-1]['delta_relative']:.4f}, locality error "
              f"{error:.3f} ({'within' if rows[-1]['local'] else 'beyond'} {tolerance:g}), {a}'s drop "
              f"{damage['drop']:+.4f} = {damage['standard_errors']:.2f} paired SEs, {b}'s gain {gain.diff:+.3f}",
              flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pair", default="math,cw", help="A,B (a settled pair; notebook 03's default chooses it)")
    parser.add_argument("--rates", type=float, nargs="+", default=list(RATES))
    parser.add_argument("--run-dir", type=Path, default=None, help="default: runs/toy-seed<seed>")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    run_dir = args.run_dir or Path("runs") / f"toy-seed{args.seed}"
    params = nb03.Params(seed=args.seed, run_dir=str(run_dir), perturbation_pair=args.pair)
    kit = Kit(RunConfig.from_params(scale="toy", seed=args.seed, run_dir=str(run_dir)))
    kit.get(Base())
    rows = sweep(kit, params, args.rates)
    both = [r["rate"] for r in rows if r["local"] and r["damaged"]]
    print("rates with both premises: " + (", ".join(f"{r:g}" for r in both) if both else
                                          "none: the trade-off above is what the toy LM offers"))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
