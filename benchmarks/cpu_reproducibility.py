#!/usr/bin/env python
"""Do the toy's numbers depend on the CPU's instruction set, and can a setting make them identical?

Runs are byte-identical on one CPU but not across CPUs of this machine kind: torch picks its vectorised kernels by
the instruction set it finds (``torch.backends.cpu.get_cpu_capability()``), MKL picks its BLAS code path, and
oneDNN its own. This script emulates other CPUs on this one by forcing those choices, each in a fresh process
(they are read at start-up): every combination of ``ATEN_CPU_CAPABILITY`` (``default``, ``avx2``, ``avx512``),
``MKL_CBWR`` (unset, or ``COMPATIBLE``: MKL's conditional numerical reproducibility, one code path on every x86
CPU) and oneDNN (on, or off: ``torch.backends.mkldnn.enabled = False``), and the process as found. Each setting builds a toy base with a short warm-up (seed 0, one
thread) and reports the sha256 of its weights, its last logged loss and the seconds it took, so that the table
shows which settings agree bit for bit, how far the others drift, and what each costs.

    python benchmarks/cpu_reproducibility.py                  # 200 warm-up steps per setting
    python benchmarks/cpu_reproducibility.py --steps 600 --json cpu.json

A setting that makes every instruction set agree, at little cost, is a candidate default for the kit.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CAPABILITIES = ("default", "avx2", "avx512")  # ATEN_CPU_CAPABILITY: the emulated instruction sets
SETTINGS: dict[str, dict[str, str]] = {"as found": {}}
for _capability in CAPABILITIES:
    for _cbwr in ("", "COMPATIBLE"):
        for _onednn in ("1", "0"):
            _name = f"ATEN {_capability}" + (f", MKL_CBWR={_cbwr}" if _cbwr else "") + (", oneDNN off" if _onednn == "0" else "")
            SETTINGS[_name] = {"ATEN_CPU_CAPABILITY": _capability, **({"MKL_CBWR": _cbwr} if _cbwr else {}),
                               **({"MDRL_ONEDNN": "0"} if _onednn == "0" else {})}


def identical_across_capabilities(rows: list[dict]) -> list[str]:
    """The settings (MKL and oneDNN choices) under which every emulated instruction set gave the same weights: a
    row's setting without its ``ATEN ...`` part names the choice; it counts when all of :data:`CAPABILITIES` ran
    under it and their digests agree."""
    by_choice: dict[str, dict[str, str]] = {}
    for row in rows:
        if not row["setting"].startswith("ATEN "):
            continue
        capability, _, choice = row["setting"][5:].partition(", ")
        by_choice.setdefault(choice or "as shipped", {})[capability] = row["sha256"]
    return [choice for choice, digests in by_choice.items()
            if set(digests) == set(CAPABILITIES) and len(set(digests.values())) == 1]


def one_run(steps: int, seed: int) -> dict:
    """In this process: build the toy base with ``steps`` warm-up steps and describe it."""
    import torch

    torch.set_num_threads(1)
    if os.environ.get("MDRL_ONEDNN") == "0":
        torch.backends.mkldnn.enabled = False
    sys.path.insert(0, str(ROOT))
    from mdrl_lib.config import RunConfig
    from mdrl_lib.kit import Base, Kit

    with tempfile.TemporaryDirectory() as run_dir:
        kit = Kit(RunConfig.from_params(scale="toy", seed=seed, run_dir=run_dir, warmup_steps=steps))
        start = time.perf_counter()
        artifact = kit.get(Base(), progress=False)
        seconds = time.perf_counter() - start
        digest = hashlib.sha256()
        for name, tensor in sorted(kit.weights(Base())):
            digest.update(name.encode())
            digest.update(tensor.detach().float().contiguous().numpy().tobytes())
        losses = artifact.metrics.get("losses") or artifact.metrics.get("warmup_losses") or []
    return {"capability": torch.backends.cpu.get_cpu_capability(), "mkldnn": torch.backends.mkldnn.enabled,
            "sha256": digest.hexdigest()[:16], "last_loss": losses[-1] if losses else None,
            "seconds": round(seconds, 1), "torch": torch.__version__}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="warm-up steps per setting")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a child process: one setting
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one_run(args.steps, args.seed)))
        return 0
    rows = []
    for name in args.settings:
        env = {**os.environ, "OMP_NUM_THREADS": "1", **SETTINGS[name]}
        done = subprocess.run([sys.executable, __file__, "--one", "--steps", str(args.steps), "--seed", str(args.seed)],
                              env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"{name}: failed ({done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'no output'})")
            continue
        row = {"setting": name, **json.loads(done.stdout.strip().splitlines()[-1])}
        rows.append(row)
        print(f"{name:<48} capability {row['capability']:<8} weights {row['sha256']}  last loss "
              f"{row['last_loss']}  {row['seconds']} s", flush=True)
    groups: dict[str, list[str]] = {}
    for row in rows:
        groups.setdefault(row["sha256"], []).append(row["setting"])
    print(f"{len(groups)} distinct results over {len(rows)} settings:")
    for digest, names in groups.items():
        print(f"  {digest}: {', '.join(names)}")
    same = identical_across_capabilities(rows)
    print("identical across " + ", ".join(CAPABILITIES) + ": " + (", ".join(same) if same else "under no setting tried"))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
