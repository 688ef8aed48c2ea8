"""Cost of one Hessian-vector product relative to one gradient (notebook 03's analyses).

Measures, in one run, the median seconds of (gradient and HVP alternating round by round, so that a
busy machine slows both alike)
- ``gradient``: one :func:`mdrl_lib.perturbation.gradient` (forward + backward + flatten);
- ``hvp``: one :func:`mdrl_lib.perturbation.hvp` (forward + differentiable backward + double backward);
- ``hvp_reuse``: one product of a :class:`~mdrl_lib.perturbation.HessianOperator` that keeps the first
  backward's graph (what eigsh and captured shares pay per product after the first);
and checks the HVP against a central finite difference of gradients on the same batch. Two models, both
Qwen2 with eager attention (double backward through sdpa fails on CPU), fp32, random weights, unpadded
batches, every parameter in the space:
- ``toy``: hidden 128, 2 layers, 4 heads, intermediate 256, vocab 50; 64 sequences of 12 tokens;
- ``qwen2.5-0.5b``: the Qwen2.5-0.5B shape (494M parameters, built from its config, no download);
  2 sequences of 64 tokens. ``--quick`` skips it.

    python benchmarks/hvp.py --quick                 # toy only, seconds
    python benchmarks/hvp.py --threads 2             # both models on CPU (about 12 GB of memory)
    python benchmarks/hvp.py --device cuda           # on a GPU

Target: an HVP costs at most 3 gradients.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mdrl_lib import perturbation as pt  # noqa: E402

MODELS = {
    "toy": dict(config=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=4, vocab_size=50, max_position_embeddings=64,
                            tie_word_embeddings=True),
                batch=64, length=12, repeats=15),
    "qwen2.5-0.5b": dict(config=dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                     num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                                     max_position_embeddings=512, tie_word_embeddings=True),
                         batch=2, length=64, repeats=3),
}
TARGET_RATIO = 3.0


def build(name: str, device: str, seed: int):
    """The model (eval, eager attention, fp32) and its causal-LM loss on one fixed unpadded batch."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; choose from {list(MODELS)}")
    from transformers import Qwen2Config, Qwen2ForCausalLM

    spec = MODELS[name]
    config = Qwen2Config(**spec["config"], attn_implementation="eager")
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).to(device).eval()
    model.set_attn_implementation("eager")
    gen = torch.Generator().manual_seed(seed + 1)
    ids = torch.randint(0, spec["config"]["vocab_size"], (spec["batch"], spec["length"]), generator=gen).to(device)
    return model, (lambda m: m(input_ids=ids, labels=ids).loss), spec["batch"] * spec["length"]


def seconds(fn, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def interleaved(fns: dict, device: str, repeats: int) -> dict[str, list[float]]:
    """Seconds of each function over ``repeats`` rounds, the functions alternating within each round,
    so that a busy machine slows all of them alike."""
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(seconds(fn, device))
    return times


def reset_peak_memory(device: str) -> None:
    """Start a new peak: CUDA's allocator statistics, or on Linux the process's high-water RSS."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # then the peak is the process's peak so far


def peak_memory_gb(device: str) -> float:
    """Peak memory since :func:`reset_peak_memory`: allocated GPU memory, or the process's RSS."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def measure(name: str, device: str, repeats: int, seed: int, fd_eps: list[float]) -> dict:
    t0 = time.perf_counter()
    model, loss_fn, tokens = build(name, device, seed)
    build_s = time.perf_counter() - t0
    space = pt.ParameterSpace.from_model(model)
    gen = torch.Generator().manual_seed(seed + 2)
    v = torch.randn(space.dim, generator=gen).to(device)
    v /= v.norm()
    row = {"model": name, "params": space.dim, "tokens": tokens, "build_s": build_s}

    grad = lambda: pt.gradient(loss_fn, model, space)  # noqa: E731
    fresh = lambda: pt.hvp(loss_fn, model, space, v)  # noqa: E731
    # the warm-up runs, one at a time, give each operation's own peak memory
    reset_peak_memory(device)
    grad()
    row["gradient_peak_gb"] = peak_memory_gb(device)
    reset_peak_memory(device)
    fresh()
    row["hvp_peak_gb"] = peak_memory_gb(device)
    times = interleaved({"gradient": grad, "hvp": fresh}, device, repeats)
    row["gradient_s"], row["hvp_s"] = statistics.median(times["gradient"]), statistics.median(times["hvp"])
    row["ratio"] = row["hvp_s"] / row["gradient_s"]
    row["ratio_pairs"] = statistics.median(h / g for g, h in zip(times["gradient"], times["hvp"]))
    row["gradient_all"], row["hvp_all"] = times["gradient"], times["hvp"]

    reset_peak_memory(device)
    start = time.perf_counter()
    operator = pt.hessian_operator(loss_fn, model, space, reuse_graph=True)
    row["operator_build_s"] = time.perf_counter() - start
    reused = operator(v)
    row["hvp_reuse_peak_gb"] = peak_memory_gb(device)
    times = interleaved({"gradient": grad, "reuse": lambda: operator(v)}, device, repeats)
    row["hvp_reuse_s"] = statistics.median(times["reuse"])
    row["reuse_ratio"] = row["hvp_reuse_s"] / statistics.median(times["gradient"])
    row["hvp_reuse_all"] = times["reuse"]
    operator.release()
    del operator

    if fd_eps:
        exact = pt.hvp(loss_fn, model, space, v)
        row["reuse_vs_fresh"] = float((reused - exact).norm() / exact.norm())
        del reused
        for eps in fd_eps:
            fd = pt.finite_difference_hvp(loss_fn, model, space, v, eps=eps)
            row[f"fd_rel_err@{eps:g}"] = float((fd - exact).norm() / exact.norm())
            del fd
        row["hvp_norm"] = float(exact.norm())
        del exact
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="toy model only")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), help="which models (default: both, toy with --quick)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:n]")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on CPU (default 1)")
    parser.add_argument("--repeats", type=int, help="timed rounds per model (default: 15 toy, 3 big; median reported)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fd-eps", type=float, nargs="*", default=[1e-2, 1e-3],
                        help="steps of the finite-difference check of the HVP (none: skip it)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda asked for, but torch sees no GPU")
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be >= 1")
    torch.set_num_threads(args.threads)
    models = args.models or (["toy"] if args.quick else list(MODELS))

    rows = []
    for name in models:
        print(f"measuring {name} on {args.device} ({torch.get_num_threads()} threads) ...", flush=True)
        repeats = args.repeats or MODELS[name]["repeats"]
        rows.append(measure(name, args.device, repeats, args.seed, fd_eps=args.fd_eps))
        print(json.dumps({k: v for k, v in rows[-1].items() if not k.endswith("_all")}), flush=True)

    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {args.threads} thread(s)"
    print(f"\nHVP vs gradient: medians of interleaved rounds after a warm-up; {device_name}; torch {torch.__version__}")
    header = f"{'model':<14}{'params':>12}{'tokens':>8}{'rounds':>7}{'grad s':>10}{'hvp s':>10}{'hvp/grad':>10}" \
             f"{'reuse s':>10}{'reuse/grad':>11}{'grad GB':>9}{'hvp GB':>8}{'fd err':>10}"
    print(header)
    print("-" * len(header))
    for r in rows:
        fd = min((v for k, v in r.items() if k.startswith("fd_rel_err")), default=float("nan"))
        print(f"{r['model']:<14}{r['params']:>12,}{r['tokens']:>8}{len(r['hvp_all']):>7}{r['gradient_s']:>10.3f}{r['hvp_s']:>10.3f}"
              f"{r['ratio']:>10.2f}{r['hvp_reuse_s']:>10.3f}{r['reuse_ratio']:>11.2f}{r['gradient_peak_gb']:>9.2f}"
              f"{r['hvp_peak_gb']:>8.2f}{fd:>10.1e}")
    verdict = all(r["ratio"] <= TARGET_RATIO for r in rows)
    print(f"target hvp/grad <= {TARGET_RATIO:g}: {'met' if verdict else 'NOT met'}; GB: peak "
          + ("allocated GPU memory" if args.device.startswith("cuda") else "resident memory of the process, model included")
          + "; fd err: smallest relative error of a central finite difference of gradients")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
