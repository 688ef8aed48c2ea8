#!/usr/bin/env python
"""Where the toy scale's time goes: the cost of each kind of artifact the notebooks ask for.

Builds, in a fresh run directory, the base, its per-item scores, one single-domain expert (a GRPO
stage), the expert's scores, a domain objective's batch and one gradient of it, and prints the seconds
of each (one torch thread, as the kit trains). Run it alone on the machine for figures worth quoting:

    python benchmarks/toy_costs.py                       # the toy defaults
    python benchmarks/toy_costs.py -p warmup_steps 600   # any run parameter
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a run parameter, as the CLI takes it")
    parser.add_argument("--domain", default="math", help="the expert's domain (default: math)")
    args = parser.parse_args(argv)

    import torch

    from mdrl_lib.cli import parse_value
    from mdrl_lib.config import RunConfig
    from mdrl_lib.kit import open_kit
    from mdrl_lib.specs import Base, ObjectiveBatch, Scores, Stage

    torch.set_num_threads(1)
    params = {name: parse_value(value) for name, value in args.parameter}
    rows = []
    with tempfile.TemporaryDirectory(prefix="mdrl-costs-") as run_dir:
        start = time.perf_counter()
        kit = open_kit(RunConfig.from_params(run_dir=run_dir, **params))
        rows.append(("open the kit (imports, splits)", time.perf_counter() - start))
        expert = Stage(Base(), args.domain)
        objective = ObjectiveBatch(expert, args.domain, prompts=32, samples=4)
        for label, spec in (("base (warm-up)", Base()), ("scores of the base (all held-out items)", Scores(Base())),
                            (f"{args.domain} expert ({kit.config.rl.steps} GRPO steps)", expert),
                            ("scores of the expert", Scores(expert)),
                            ("objective batch (32 prompts x 4 samples)", objective)):
            start = time.perf_counter()
            kit.get(spec, progress=False)
            rows.append((label, time.perf_counter() - start))
        model, _ = kit.load(expert, placement="analysis")
        loss = kit.objective(objective)
        start = time.perf_counter()
        loss.gradient(model)
        rows.append((f"one gradient of L_{args.domain} ({len(loss)} completions)", time.perf_counter() - start))
    width = max(len(label) for label, _ in rows)
    print(f"{'artifact':<{width}}  seconds")
    for label, seconds in rows:
        print(f"{label:<{width}}  {seconds:7.1f}")
    print(f"{'total':<{width}}  {sum(s for _, s in rows):7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
