#!/usr/bin/env python
"""A world where Math's RL stage would sharpen a skill: does the toy base leave RL something to sharpen?

In the default toy world the warm-up writes 40% of Math's answers boxed, ``(42)``, while the verifier wants the
bare number (``mdrl_lib.domains.math.BOXED_SHARE``): Math's RL gain is then mostly that answer convention, and the
chain's damage falls on arithmetic the warm-up taught, not on anything RL taught. The candidate *skill world* drops
the convention (``BOXED_SHARE = 0``, patched in this process only; the base's key records it), so that whatever
GRPO can raise is the content of the answers.

The criterion, fixed before any candidate ran: at the base, on Math's held-out items,
- **gap**: pass@8 (8 samples at the RL temperature, 1.0) minus pass@1 (greedy) at least 0.15 (GRPO needs correct
  answers it samples but does not yet prefer), and
- **content gap**: the same with "the right number, box ignored" in place of the score, at least 0.15 (the gap must
  be arithmetic, not the convention),
and notebook 00's preconditions must hold (``claims.base_precondition_table``). A world is adopted only if it
meets the criterion on the exploratory seeds and keeps the preconditions on 10 seeds never used; otherwise it is
dropped, with these numbers as the reason.

    python benchmarks/skill_world.py --seeds 1 2 --run-root /tmp/skill        # exploratory seeds
    python benchmarks/skill_world.py --seeds 1 2 --worlds skill --json skill.json

Cost on one thread: a base's warm-up (one to two minutes) per world and seed not yet stored, and about ten seconds
of sampling per base.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mdrl_lib.domains.math as toy_math  # noqa: E402
from mdrl_lib.claims import base_precondition_table  # noqa: E402
from mdrl_lib.config import RunConfig  # noqa: E402
from mdrl_lib.evaluation import generate  # noqa: E402
from mdrl_lib.kit import Base, Kit  # noqa: E402

WORLDS = {"default": toy_math.BOXED_SHARE, "skill": 0.0}  # Math's boxed share of warm-up answers
SAMPLES, GAP = 8, 0.15


def pass_at_k(kit: Kit, samples: int = SAMPLES, seed: int = 0) -> dict:
    """Greedy pass@1 and sampled pass@``samples`` (temperature: the run's RL temperature) of the base on Math's
    held-out items, each for the score and for the right number (box ignored), and the greedy error breakdown."""
    model, tokenizer = kit.load(Base())
    domain, examples = kit.domain("math"), kit.splits("math").eval
    prompts, specs = [e.prompt for e in examples], [e.spec for e in examples]
    tokens = kit.config.rl.max_completion_length
    greedy = generate(model, tokenizer, prompts, max_new_tokens=tokens)
    sampled = generate(model, tokenizer, prompts, max_new_tokens=tokens, num_samples=samples,
                       temperature=kit.config.rl.temperature, seed=seed)
    repeated = [s for s in specs for _ in range(samples)]
    score_1 = np.array(domain.score(greedy, specs))
    score_k = np.array(domain.score(sampled, repeated)).reshape(-1, samples).max(1)
    right_1 = np.array([d["right_number"] for d in domain.details(greedy, specs)], dtype=float)
    right_k = np.array([d["right_number"] for d in domain.details(sampled, repeated)],
                       dtype=float).reshape(-1, samples).max(1)
    categories = [domain.error_category(d) for d, s in zip(domain.details(greedy, specs), score_1) if s < 1]
    return {"pass_1": float(score_1.mean()), f"pass_{samples}": float(score_k.mean()),
            "gap": float(score_k.mean() - score_1.mean()), "right_1": float(right_1.mean()),
            f"right_{samples}": float(right_k.mean()), "content_gap": float(right_k.mean() - right_1.mean()),
            "greedy_errors": {c: categories.count(c) / len(examples) for c in sorted(set(categories))}}


def meets(figures: dict) -> bool:
    """The criterion: both the gap and the content gap at least :data:`GAP`."""
    return bool(figures["gap"] >= GAP and figures["content_gap"] >= GAP)


def run(seed: int, world: str, root: Path) -> dict:
    """One world's base for ``seed`` (built under ``root``), its pass@k figures and notebook 00's preconditions."""
    saved = toy_math.BOXED_SHARE
    toy_math.BOXED_SHARE = WORLDS[world]  # read when the warm-up data and the base's key are made
    try:
        kit = Kit(RunConfig.from_params(scale="toy", seed=seed, run_dir=str(root / f"{world}-seed{seed}")))
        start = time.perf_counter()
        kit.get(Base())
        built = time.perf_counter() - start
        figures = pass_at_k(kit)
        checks = base_precondition_table(kit)
    finally:
        toy_math.BOXED_SHARE = saved
    figures.update(seed=seed, world=world, boxed_share=WORLDS[world], base_seconds=round(built, 1),
                   preconditions_hold=bool(checks["holds"].all()),
                   failed=[c for c, h in zip(checks["check"], checks["holds"]) if not h])
    figures["meets"] = meets(figures)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--worlds", nargs="+", default=list(WORLDS), choices=list(WORLDS))
    parser.add_argument("--run-root", type=Path, default=Path("/tmp/mdrl-skill-world"))
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this file")
    args = parser.parse_args(argv)
    rows = []
    for seed in args.seeds:
        for world in args.worlds:
            row = run(seed, world, args.run_root)
            rows.append(row)
            print(f"seed {seed}, {world} world (boxed share {row['boxed_share']:g}): pass@1 {row['pass_1']:.3f}, "
                  f"pass@{SAMPLES} {row[f'pass_{SAMPLES}']:.3f} (gap {row['gap']:+.3f}); right number "
                  f"{row['right_1']:.3f} -> {row[f'right_{SAMPLES}']:.3f} (content gap {row['content_gap']:+.3f}); "
                  f"greedy errors {row['greedy_errors']}; preconditions "
                  f"{'hold' if row['preconditions_hold'] else 'FAIL: ' + '; '.join(row['failed'])}; "
                  f"criterion {'met' if row['meets'] else 'not met'} (base {row['base_seconds']} s)", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
