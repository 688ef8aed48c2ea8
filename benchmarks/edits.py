"""Speed and memory of notebook 01's edit analyses (C1, C2) on a model of real size, streaming vs naive.

Writes two fp32 safetensors checkpoints of Qwen2.5-0.5B's shape (random weights from its config, no
download; 494M parameters, about 1.98 GB each), the second a sparsely perturbed copy of the first,
into a temporary directory (deleted afterwards unless ``--keep``). Then runs, each in its own fresh
subprocess so that its peak RSS is its own:

- ``streaming``: :func:`mdrl_lib.edits.edit_analysis` (one pass over both files: every criterion of
  the sweep, fp32 and bf16, per tensor; neuron edit magnitudes for both precisions) and
  :func:`mdrl_lib.edits.jaccard_matrix` of the fp32 and bf16 top-10% neuron sets;
- ``naive``: loads both state dicts with ``safetensors.torch.load_file``, concatenates all parameters
  and computes the same figures with whole-model tensor operations.

It prints seconds, peak RSS (VmHWM of the subprocess) and whether the two agree exactly (every count
and every neuron magnitude bit for bit).

    python benchmarks/edits.py                 # about 2-3 minutes on two cores; needs ~4.5 GB in $TMPDIR
    python benchmarks/edits.py --work-dir /big/disk --keep --repeats 2

One torch thread by default (``--threads``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QWEN25_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                  num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True)
FRACTION = 0.1
FREE_BYTES_NEEDED = int(4.5e9)


# ----------------------------------------------------------------------------------------------
# The two checkpoints


def parameter_shapes(tiny: bool = False) -> dict[str, tuple[int, ...]]:
    """Every stored parameter of Qwen2.5-0.5B (tied lm_head left out, as save_pretrained does), from its
    config on the meta device: no memory, no download."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    settings = dict(QWEN25_05B)
    if tiny:
        settings.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, vocab_size=512)
    with torch.device("meta"):
        model = Qwen2ForCausalLM(Qwen2Config(**settings))
    shapes = {name: tuple(p.shape) for name, p in model.state_dict().items()}
    shapes.pop("lm_head.weight", None)
    return shapes


def _header(shapes: dict[str, tuple[int, ...]]) -> bytes:
    entries, offset = {"__metadata__": {"format": "pt"}}, 0
    for name in sorted(shapes):
        size = 4 * math.prod(shapes[name])
        entries[name] = {"dtype": "F32", "shape": list(shapes[name]), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(entries, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def write_checkpoints(before: Path, after: Path, density: float, seed: int, tiny: bool = False) -> int:
    """Write both files tensor by tensor (never a whole state dict in memory). Before: normal(0, 0.02)
    weights and biases, norms at 1. After: a ``density`` share of entries moved by |w| * 10**U(-8, -1)
    with a random sign, so relative changes spread over seven decades. Returns the parameter count."""
    import torch

    shapes = parameter_shapes(tiny)
    generator = torch.Generator().manual_seed(seed)
    header = _header(shapes)
    with open(before, "wb") as fa, open(after, "wb") as fb:
        fa.write(header)
        fb.write(header)
        for name in sorted(shapes):
            shape = shapes[name]
            if "norm" in name:
                x = torch.ones(shape)
            else:
                x = torch.randn(shape, generator=generator).mul_(0.02)
            change = torch.rand(shape, generator=generator).mul_(-7).sub_(1)  # exponent in (-8, -1]
            torch.pow(10.0, change, out=change).mul_(x.abs())
            change.mul_(torch.randint(0, 2, shape, generator=generator).mul_(2).sub_(1))
            change.mul_(torch.rand(shape, generator=generator) < density)
            fa.write(x.numpy().tobytes())
            fb.write(x.add_(change).numpy().tobytes())
            del x, change
    return sum(math.prod(s) for s in shapes.values())


# ----------------------------------------------------------------------------------------------
# The two implementations (each returns counts per tensor and magnitudes, in one format)


def run_streaming(before: Path, after: Path) -> dict:
    from mdrl_lib.edits import edit_analysis, jaccard_matrix

    result = edit_analysis(before, after, by=("tensor",))
    counts = {(r.tensor, r.precision, r.criterion, r.threshold): (r.entries, r.unchanged)
              for r in result.table.itertuples()}
    jaccard = jaccard_matrix(result.magnitudes, FRACTION)
    return {"counts": counts, "magnitudes": result.magnitudes, "jaccard": jaccard.loc["fp32", "bf16"]}


def run_naive(before: Path, after: Path) -> dict:
    """What one writes first: load each state dict, concatenate every parameter into one vector, then
    whole-vector masks, one criterion at a time. (Keeping both state dicts or every mask alive as
    well would not fit this machine's memory.)"""
    import torch
    from safetensors.torch import load_file

    from mdrl_lib.edits import _MLP, ABS_SWEEP, PRECISIONS, REL_SWEEP, jaccard, top_neurons

    def concatenated(path: Path) -> tuple[torch.Tensor, dict[str, torch.Size]]:
        state = load_file(str(path))
        names = sorted(state)
        return torch.cat([state[n].flatten().float() for n in names]), {n: state[n].shape for n in names}

    x, shapes = concatenated(before)
    y, _ = concatenated(after)
    bounds, start = {}, 0
    for name, shape in shapes.items():
        bounds[name] = (start, start + shape.numel())
        start += shape.numel()

    counts, magnitudes = {}, {}
    for precision in PRECISIONS:
        if precision == "bf16":  # the last one: round the vectors themselves
            x.copy_(x.bfloat16())
            y.copy_(y.bfloat16())
        delta = (y - x).abs()
        ratio = delta / x.abs()
        zero_zero = (delta == 0) & (x == 0)
        criteria = [("equal", 0.0, lambda: delta == 0)]
        criteria += [("abs", t, lambda t=t: delta < torch.tensor(t, dtype=torch.float32)) for t in ABS_SWEEP]
        criteria += [("rel", t, lambda t=t: (ratio < torch.tensor(t, dtype=torch.float32)) | zero_zero)
                     for t in REL_SWEEP]
        for criterion, threshold, make_mask in criteria:
            mask = make_mask()
            for name, (s, e) in bounds.items():
                counts[(name, precision, criterion, threshold)] = (e - s, int(mask[s:e].sum()))
            del mask
        del ratio, zero_zero
        squares: dict[str, dict[str, torch.Tensor]] = {}
        for name, (s, e) in bounds.items():
            match = _MLP.match(name)
            if match:
                part = delta[s:e].view(shapes[name]).pow(2)
                squares.setdefault(match["layer"], {})[match["proj"]] = part.sum(
                    dim=0 if match["proj"] == "down_proj" else 1)
        order = sorted(squares, key=lambda layer: int(layer.rsplit(".", 1)[1]))
        magnitudes[precision] = {layer: (squares[layer]["gate_proj"] + squares[layer]["up_proj"]
                                         + squares[layer]["down_proj"]).sqrt() for layer in order}
        del delta
    top = {p: top_neurons(magnitudes[p], FRACTION) for p in PRECISIONS}
    return {"counts": counts, "magnitudes": magnitudes, "jaccard": jaccard(top["fp32"], top["bf16"])}


IMPLEMENTATIONS = {"streaming": run_streaming, "naive": run_naive}


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(implementation: str, before: Path, after: Path, out: Path, threads: int) -> None:
    """Run one implementation in this (fresh) process and save its figures and results."""
    import torch

    torch.set_num_threads(threads)
    import mdrl_lib.edits  # noqa: F401  (imports outside the timed part)
    import safetensors.torch  # noqa: F401

    rss_before = _peak_rss_bytes()
    start, cpu_start = time.perf_counter(), time.process_time()
    result = IMPLEMENTATIONS[implementation](before, after)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    result.update(seconds=seconds, cpu_seconds=cpu_seconds, peak_rss=_peak_rss_bytes(), rss_after_imports=rss_before)
    torch.save(result, out)


# ----------------------------------------------------------------------------------------------
# The driver


def _spawn(args: list[str], threads: int, check: bool = True) -> int:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, str(Path(__file__).resolve()), *args], check=check, env=env).returncode


def _warm_page_cache(*paths: Path) -> None:
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while f.read(1 << 24):
                pass


def agree(a: dict, b: dict) -> tuple[bool, str]:
    """Exact agreement: every (entries, unchanged) count, every magnitude bit, the Jaccard index."""
    if a["counts"].keys() != b["counts"].keys():
        return False, "different count keys"
    wrong = [k for k in a["counts"] if a["counts"][k] != b["counts"][k]]
    if wrong:
        return False, f"{len(wrong)} counts differ, e.g. {wrong[0]}: {a['counts'][wrong[0]]} vs {b['counts'][wrong[0]]}"
    import torch

    for precision, layers in a["magnitudes"].items():
        other = b["magnitudes"][precision]
        if list(layers) != list(other):
            return False, f"{precision}: different layers"
        for layer, values in layers.items():
            if not torch.equal(values, other[layer]):
                diff = (values - other[layer]).abs().max().item()
                return False, f"{precision} {layer}: magnitudes differ by up to {diff:.3g}"
    if a["jaccard"] != b["jaccard"]:
        return False, f"Jaccard {a['jaccard']} vs {b['jaccard']}"
    return True, "yes"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", type=Path, help="where to write the checkpoints (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoints afterwards")
    parser.add_argument("--density", type=float, default=0.3, help="share of entries the perturbation moves")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each implementation (alternating)")
    parser.add_argument("--implementations", nargs="+", default=list(IMPLEMENTATIONS), choices=list(IMPLEMENTATIONS))
    parser.add_argument("--tiny", action="store_true", help="a tiny Qwen2 of the same layout (for tests)")
    parser.add_argument("--child", nargs=4, metavar=("IMPL", "BEFORE", "AFTER", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--make", nargs=2, metavar=("BEFORE", "AFTER"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        implementation, before, after, out = args.child
        child(implementation, Path(before), Path(after), Path(out), args.threads)
        return 0
    if args.make:
        import torch

        torch.set_num_threads(args.threads)
        count = write_checkpoints(Path(args.make[0]), Path(args.make[1]), args.density, args.seed, args.tiny)
        print(f"{count:,} parameters", flush=True)
        return 0

    base = args.work_dir or Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(base).free
    needed = FREE_BYTES_NEEDED if not args.tiny else 0
    if free < needed:
        print(f"only {free / 1e9:.1f} GB free in {base}; the two checkpoints need about {needed / 1e9:.1f} GB "
              f"(choose another place with --work-dir)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="edits-bench-", dir=base))
    try:
        before, after = work / "before.safetensors", work / "after.safetensors"
        t0 = time.perf_counter()
        print(f"writing two fp32 checkpoints of Qwen2.5-0.5B's shape{' (tiny)' if args.tiny else ''} to {work} ...",
              flush=True)
        make = ["--make", str(before), str(after), "--density", str(args.density), "--seed", str(args.seed),
                "--threads", str(args.threads)] + (["--tiny"] if args.tiny else [])
        _spawn(make, args.threads)
        print(f"  {before.stat().st_size / 1e9:.2f} GB + {after.stat().st_size / 1e9:.2f} GB in "
              f"{time.perf_counter() - t0:.0f} s; before each run both are read once, so that each starts from a "
              f"page cache as warm as memory allows", flush=True)

        import torch

        from mdrl_lib.edits import ABS_SWEEP, REL_SWEEP

        runs, failed = [], []
        for repeat in range(args.repeats):
            for implementation in args.implementations:
                out = work / f"{implementation}-{repeat}.pt"
                _warm_page_cache(before, after)
                code = _spawn(["--child", implementation, str(before), str(after), str(out), "--threads",
                               str(args.threads)], args.threads, check=False)
                if code != 0:
                    why = "killed (SIGKILL: out of memory?)" if code == -9 else f"exit status {code}"
                    print(f"  {implementation}: {why}; not measured", flush=True)
                    failed.append(implementation)
                    continue
                result = torch.load(out, weights_only=False)
                runs.append((implementation, result))
                print(f"  {implementation}: {result['seconds']:.1f} s ({result['cpu_seconds']:.1f} s of CPU), "
                      f"peak RSS {result['peak_rss'] / 1e9:.2f} GB", flush=True)
        if not runs:
            return 1
        reference = runs[0][1]
        print(f"\nedit analyses of two {before.stat().st_size / 1e9:.2f} GB fp32 checkpoints "
              f"(sparsity: equal + {len(ABS_SWEEP)} absolute + {len(REL_SWEEP)} relative tolerances, fp32 and bf16, "
              f"per tensor; neuron magnitudes for both precisions; top-{FRACTION:.0%} Jaccard); "
              f"{args.threads} thread(s); peak RSS = VmHWM of each fresh subprocess (GB = 1e9 bytes)")
        print(f"{'implementation':<15}{'seconds':>9}{'CPU seconds':>13}{'peak RSS GB':>13}{'after imports GB':>18}"
              f"  agrees exactly with {runs[0][0]}")
        for implementation, result in runs:
            same, why = agree(reference, result)
            print(f"{implementation:<15}{result['seconds']:>9.1f}{result['cpu_seconds']:>13.1f}"
                  f"{result['peak_rss'] / 1e9:>13.2f}{result['rss_after_imports'] / 1e9:>18.2f}  {why}")
        overall = {}
        for (_, precision, criterion, threshold), (entries, unchanged) in reference["counts"].items():
            total = overall.setdefault((precision, criterion, threshold), [0, 0])
            total[0] += entries
            total[1] += unchanged
        print("shares unchanged at the paper's tolerances: " + ", ".join(
            f"{p} {c} {t:g}: {u / e:.3f}" for (p, c, t), (e, u) in overall.items()
            if (c, t) in (("abs", 1e-7), ("rel", 1e-3), ("equal", 0.0))))
        print(f"top-{FRACTION:.0%} neurons, fp32 vs bf16 magnitudes: Jaccard {reference['jaccard']:.3f}")
        if failed:
            print(f"not measured: {', '.join(failed)}")
        return 0 if not failed and all(agree(reference, r)[0] for _, r in runs) else 1
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
