#!/usr/bin/env python
"""GPU smoke test at the paper's model size, offline: three GRPO steps and one edits pass.

Builds a Qwen3-4B-sized causal LM (the architecture of Qwen3-4B-Thinking-2507, written out below)
with random weights, so nothing is downloaded; runs ``--steps`` GRPO steps on a toy domain through
:func:`mdrl_lib.training.grpo` (trl's GRPOTrainer, as in notebooks 01 and 04); saves the weights
before and after as safetensors and runs :func:`mdrl_lib.edits.sparsity` and
:func:`mdrl_lib.edits.neuron_edit_magnitude` on them (notebook 01). Prints generation speed, peak
GPU memory and the time of each phase; exits 3 if the whole run took longer than ``--budget-s``.

    python scripts/gpu_smoke.py                 # one GPU; fails (exit 3) past 8 minutes
    python scripts/gpu_smoke.py --tiny          # tiny config, any machine (CPU here), seconds

Tokenizer: the kit's toy character tokenizer (50 tokens, nothing to download). The model keeps
Qwen3's full 151,936-token vocabulary, so the embedding, the tied LM head and the logits have their
real size; the toy tokens are its first 50 ids, and generation masks every other id (a logits
processor that sets their scores to -inf) so that each sampled token decodes to a toy character.
Training still computes log-probabilities over the whole vocabulary, as it would for the real model.
Reward: the toy domain's verifier plus 0.01 x the share of digits in the completion. A random model
almost never earns the verifier's reward, and GRPO's advantage (hence its gradient) is zero when every
completion of a prompt scores the same; the small digit term keeps the gradient real, so the edits
pass measures a real update.

Memory (fp32 weights, the default, trained with bf16 autocast as the kit's bf16 precision does):
4.0B parameters x (4 weights + 4 gradients + 8 AdamW) = about 64 GB, plus activations and bf16 weight
copies; ``--weights bf16`` halves that. The kit trains without activation checkpointing; at 16 completions
of at most about 140 tokens the activations should take a few GB (estimated, not yet measured on a GPU).
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a lent GPU has no internet: never try the hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mdrl_lib.config import PRESETS, ConfigError, RunConfig  # noqa: E402
from mdrl_lib.domains.base import DOMAIN_NAMES  # noqa: E402

# Qwen3-4B (Qwen/Qwen3-4B-Thinking-2507 config.json): the paper's model, about 4.02B parameters.
# rope_theta and max_position_embeddings are the 2507 release's (the original Qwen3-4B has 1e6 and
# 40,960); neither changes the parameter count, memory or speed at these lengths.
QWEN3_4B = dict(
    vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
    num_attention_heads=32, num_key_value_heads=8, head_dim=128, hidden_act="silu",
    max_position_embeddings=262144, rms_norm_eps=1e-6, rope_theta=5_000_000.0, tie_word_embeddings=True,
    attention_bias=False, use_sliding_window=False,
)
# The same architecture, tiny: for CPU and for tests. Its vocabulary (8,192) is still far larger than
# the toy tokenizer's, so the toy-vocabulary mapping and the masked ids are exercised as at full size.
TINY = dict(QWEN3_4B, vocab_size=8192, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16)
DIGIT_BONUS = 0.01
BYTES_PER_PARAMETER = {"fp32": 16, "bf16": 8}  # weights + gradients + AdamW's two moments


class UsageError(Exception):
    """A bad flag or a machine that cannot run the requested size; one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/gpu_smoke.py",
        description="Offline GPU smoke test: a Qwen3-4B-sized model with random weights, GRPO steps on a toy "
                    "domain, one edits pass; prints tokens per second and peak GPU memory.")
    parser.add_argument("--tiny", action="store_true", help="tiny config (runs on CPU in seconds)")
    parser.add_argument("--domain", default="math", choices=DOMAIN_NAMES, help="toy domain (default: math)")
    parser.add_argument("--steps", type=int, default=3, help="GRPO steps (default: 3)")
    parser.add_argument("--score-items", type=int, default=64,
                        help="held-out prompts scored after GRPO, on the device it trained on (default: 64)")
    parser.add_argument("--prompts-per-step", type=int, default=None, help="prompts per step (default: 4; tiny 2)")
    parser.add_argument("--num-generations", type=int, default=None, help="completions per prompt (default: 4; tiny 2)")
    parser.add_argument("--max-completion-length", type=int, default=None,
                        help="completion tokens at most (default: 128; tiny 16)")
    parser.add_argument("--lr", type=float, default=None,
                        help=f"learning rate (default: the full-scale preset's {PRESETS['full']['rl_lr']})")
    parser.add_argument("--weights", choices=("fp32", "bf16"), default="fp32",
                        help="dtype of the trained weights: fp32 master with bf16 autocast (default, 16 bytes "
                             "per parameter), or plain bf16 (8 bytes per parameter)")
    parser.add_argument("--checkpoint-dtype", choices=("bf16", "fp32"), default="bf16",
                        help="dtype of the before/after checkpoints (default bf16, as the paper stores them: "
                             "8 GB each at full size)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where the checkpoints go (default: a temporary directory, removed at the end)")
    parser.add_argument("--budget-s", type=float, default=480.0, help="fail (exit 3) if slower (default: 480)")
    parser.add_argument("--report", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    return parser


def model_config(tiny: bool, tokenizer):
    """The Qwen3Config of the run, with the toy tokenizer's special ids."""
    from transformers import Qwen3Config

    values = TINY if tiny else QWEN3_4B
    return Qwen3Config(**values, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id)


def parameter_estimate(values: dict) -> int:
    """Parameters of a Qwen3 config (tied embeddings counted once), without building it."""
    hidden, heads, kv, head_dim = (values["hidden_size"], values["num_attention_heads"],
                                   values["num_key_value_heads"], values["head_dim"])
    attention = hidden * head_dim * (2 * heads + 2 * kv) + 2 * head_dim  # q, k, v, o and q/k norms
    layer = attention + 3 * hidden * values["intermediate_size"] + 2 * hidden
    return values["vocab_size"] * hidden + values["num_hidden_layers"] * layer + hidden


def build_model(config, device, weights: str, seed: int):
    """A randomly initialised Qwen3 causal LM on ``device`` (fp32 or bf16 weights)."""
    import torch
    from transformers import Qwen3ForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen3ForCausalLM(config)
    if weights == "bf16":
        model.to(torch.bfloat16)
    generation = model.generation_config
    generation.pad_token_id, generation.bos_token_id = config.pad_token_id, config.bos_token_id
    generation.eos_token_id = config.eos_token_id
    return model


class ToyVocabGeneration:
    """Wraps ``model.generate`` (trl calls it once per GRPO step): samples only the first ``toy_vocab``
    ids, and times and counts what it produces.

    Completion tokens are counted as trl counts them: up to and including the first eos of each row.
    """

    def __init__(self, model, eos_id: int, toy_vocab: int) -> None:
        from transformers import LogitsProcessor

        class ToyVocabOnly(LogitsProcessor):
            def __call__(self, input_ids, scores):
                scores = scores.clone()
                scores[:, toy_vocab:] = float("-inf")
                return scores

        self.seconds: list[float] = []
        self.tokens: list[int] = []
        self.slots: list[int] = []  # rows x new positions: the work generate did, finished rows included
        self.out_of_vocab = 0
        self._toy_vocab_only = ToyVocabOnly()
        self._generate, self._eos, self._toy_vocab = model.generate, eos_id, toy_vocab
        model.generate = self

    def __call__(self, *args, **kwargs):
        import torch
        from transformers import LogitsProcessorList

        given = kwargs.get("logits_processor") or []
        kwargs["logits_processor"] = LogitsProcessorList([self._toy_vocab_only, *given])
        prompt_length = kwargs["input_ids"].shape[1] if "input_ids" in kwargs else args[0].shape[1]
        _synchronize()
        start = time.perf_counter()
        output = self._generate(*args, **kwargs)
        _synchronize()
        self.seconds.append(time.perf_counter() - start)
        completion = output[:, prompt_length:]
        is_eos = completion == self._eos
        first_eos = torch.where(is_eos.any(dim=1), is_eos.int().argmax(dim=1) + 1, completion.shape[1])
        self.tokens.append(int(first_eos.sum()))
        self.slots.append(completion.numel())
        positions = torch.arange(completion.shape[1], device=completion.device)
        kept = completion[positions < first_eos.unsqueeze(1)]
        self.out_of_vocab += int((kept >= self._toy_vocab).sum())
        return output


class DigitShapedDomain:
    """A toy domain whose reward is its verifier plus ``DIGIT_BONUS`` x the share of digit characters."""

    def __init__(self, domain) -> None:
        self.domain, self.name, self.title = domain, domain.name, domain.title

    def reward_function(self):
        verify = self.domain.reward_function()

        def reward(prompts=None, completions=None, **columns):
            scores = verify(prompts=prompts, completions=completions, **columns)
            texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
            return [s + DIGIT_BONUS * sum(ch.isdigit() for ch in t) / max(1, len(t)) for s, t in zip(scores, texts)]

        reward.__name__ = f"{self.name}_smoke_reward"
        return reward


def save_weights(model, path: Path, dtype) -> None:
    """Write every parameter (tied ones once) as one safetensors file in ``dtype``, as ``edits`` reads it."""
    from safetensors.torch import save_file

    tensors = {name: p.detach().to(dtype).cpu().contiguous() for name, p in model.named_parameters()}
    save_file(tensors, str(path), metadata={"format": "pt"})


def _synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _gib(n_bytes: float) -> float:
    return round(n_bytes / 2**30, 2)


def check_machine(args, values: dict, work_dir: Path) -> str:
    """The device to use; raises UsageError when the full size cannot fit this machine."""
    import torch

    if not torch.cuda.is_available():
        if not args.tiny:
            raise UsageError("the full-size smoke test needs a CUDA GPU and none is visible; use --tiny on a CPU")
        return "cpu"
    if not args.tiny:
        need = parameter_estimate(values) * BYTES_PER_PARAMETER[args.weights]
        total = torch.cuda.get_device_properties(0).total_memory
        if need > 0.85 * total:
            raise UsageError(f"training {parameter_estimate(values) / 1e9:.2f}B parameters with {args.weights} weights "
                             f"needs about {_gib(need)} GiB before activations; this GPU has {_gib(total)} GiB "
                             f"(try --weights bf16)")
        checkpoint_bytes = 2 * parameter_estimate(values) * (2 if args.checkpoint_dtype == "bf16" else 4)
        free = shutil.disk_usage(work_dir).free
        if checkpoint_bytes > 0.9 * free:
            raise UsageError(f"the two checkpoints need {_gib(checkpoint_bytes)} GiB and {work_dir} has "
                             f"{_gib(free)} GiB free (use --work-dir elsewhere or --checkpoint-dtype bf16)")
    return "cuda"


def stage_config(args):
    """The RLConfig of the smoke stage; errors name the flag. The rate schedule is constant (3 steps)."""
    def pick(value, tiny_default, full_default):
        return (tiny_default if args.tiny else full_default) if value is None else value

    flags = {"rl_steps": "--steps", "rl_lr": "--lr", "rl_prompts_per_step": "--prompts-per-step",
             "rl_num_generations": "--num-generations", "rl_max_completion_length": "--max-completion-length"}
    try:
        rl = RunConfig.from_params(
            rl_steps=args.steps, rl_lr=PRESETS["full"]["rl_lr"] if args.lr is None else args.lr,
            rl_lr_schedule="constant", rl_prompts_per_step=pick(args.prompts_per_step, 2, 4),
            rl_num_generations=pick(args.num_generations, 2, 4),
            rl_max_completion_length=pick(args.max_completion_length, 16, 128),
            rl_precision="bf16" if args.weights == "fp32" else "fp32",  # bf16: autocast over fp32 weights
        ).rl
    except ConfigError as error:
        message = str(error)
        for name, flag in flags.items():
            if message.startswith(f"{name}:"):
                message = flag + message[len(name):]
        raise ConfigError(message) from None
    if rl.steps < 1:
        raise ConfigError(f"--steps: expected an integer >= 1, got {rl.steps}")
    return rl


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    tiny = args.tiny
    try:
        rl = stage_config(args)
        own_dir = args.work_dir is None
        work_dir = Path(tempfile.mkdtemp(prefix="mdrl-gpu-smoke-")) if own_dir else args.work_dir
        work_dir.mkdir(parents=True, exist_ok=True)
        try:
            device = check_machine(args, TINY if tiny else QWEN3_4B, work_dir)
            results = run(args, rl, device, work_dir)
        finally:
            if own_dir:
                shutil.rmtree(work_dir, ignore_errors=True)
    except (ConfigError, UsageError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    results["seconds_total"] = round(time.perf_counter() - started, 1)
    results["within_budget"] = results["seconds_total"] <= args.budget_s
    print(f"total: {results['seconds_total']} s (budget {args.budget_s:.0f} s: "
          f"{'within' if results['within_budget'] else 'EXCEEDED'})")
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if results["within_budget"] else 3


def run(args, rl, device: str, work_dir: Path) -> dict:
    """Build, train, save and analyse; returns the measured figures (also printed)."""
    import torch

    from mdrl_lib.domains.base import get_domain
    from mdrl_lib.edits import neuron_edit_magnitude, sparsity
    from mdrl_lib.kit import quiet_libraries
    from mdrl_lib.models import build_toy_tokenizer
    from mdrl_lib.training import grpo

    quiet_libraries()
    phase = time.perf_counter()
    timings: dict[str, float] = {}

    def mark(name: str) -> None:
        nonlocal phase
        _synchronize()
        timings[name] = round(time.perf_counter() - phase, 1)
        phase = time.perf_counter()
        print(f"  {name}: {timings[name]} s", flush=True)

    tokenizer = build_toy_tokenizer()
    config = model_config(args.tiny, tokenizer)
    model = build_model(config, device, args.weights, args.seed)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"model: Qwen3 {'tiny' if args.tiny else '4B'} with random weights, {parameters / 1e9:.3f}B parameters "
          f"({args.weights} weights) on {device}; toy tokenizer of {len(tokenizer)} tokens mapped to ids "
          f"0-{len(tokenizer) - 1} of {config.vocab_size}", flush=True)
    mark("build model")

    checkpoint_dtype = torch.bfloat16 if args.checkpoint_dtype == "bf16" else torch.float32
    before, after = work_dir / "before.safetensors", work_dir / "after.safetensors"
    save_weights(model, before, checkpoint_dtype)
    mark("save before")

    domain = get_domain(args.domain, "toy")
    examples = domain.build_splits(args.seed, *domain.default_sizes).train
    meter = ToyVocabGeneration(model, tokenizer.eos_token_id, len(tokenizer))
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model, log = grpo(model, tokenizer, DigitShapedDomain(domain), examples, rl, args.seed, steps=rl.steps,
                      progress=False)
    mark(f"GRPO ({rl.steps} steps)")
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    grpo_calls = len(meter.seconds)

    # Score held-out prompts where the model trained, through the kit's scoring path (batch sized to the device).
    from mdrl_lib.evaluation import auto_batch_size, score_items

    held_out = domain.build_splits(args.seed, *domain.default_sizes).eval[:args.score_items]
    scored_on = str(next(model.parameters()).device)
    score_batch = auto_batch_size(model, 16 + rl.max_completion_length)
    items = score_items(model, tokenizer, {domain.name: (domain, held_out)}, max_new_tokens=rl.max_completion_length)
    mark(f"score {len(held_out)} held-out prompts")
    meter.tokens, meter.seconds, meter.slots = meter.tokens[:grpo_calls], meter.seconds[:grpo_calls], meter.slots[:grpo_calls]

    save_weights(model, after, checkpoint_dtype)
    mark("save after")
    model = meter._generate = None  # free the GPU before the (CPU) analysis
    if device == "cuda":
        torch.cuda.empty_cache()
    report = sparsity(before, after)
    magnitudes = neuron_edit_magnitude(before, after)
    mark("edits pass")

    generated, gen_seconds = sum(meter.tokens), sum(meter.seconds)
    steady_tokens, steady_seconds = sum(meter.tokens[1:]), sum(meter.seconds[1:])
    channels = torch.cat([m.flatten() for m in magnitudes.values()])
    results = {
        "model": "qwen3-tiny" if args.tiny else "qwen3-4b", "parameters": parameters, "device": device,
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None, "weights": args.weights,
        "steps": rl.steps, "completions_per_step": rl.prompts_per_step * rl.num_generations,
        "max_completion_length": rl.max_completion_length, "rewards": [round(r, 5) for r in log.rewards],
        "generated_completion_tokens": generated, "generation_seconds": round(gen_seconds, 3),
        "completion_tokens_per_s": round(generated / gen_seconds, 1) if gen_seconds else None,
        "completion_tokens_per_s_after_first_step": (round(steady_tokens / steady_seconds, 1)
                                                     if steady_seconds else None),
        "generation_slots_per_s": round(sum(meter.slots) / gen_seconds, 1) if gen_seconds else None,
        "grpo_seconds": round(log.seconds, 2), "out_of_vocab_tokens": meter.out_of_vocab,
        "peak_gpu_memory_gib": _gib(peak) if peak is not None else None,
        "checkpoint_dtype": args.checkpoint_dtype, "share_unchanged": round(report.share_equal, 6),
        "share_below_rel_tol": round(report.share_below_rel, 6), "mlp_layers": len(magnitudes),
        "neuron_edit_magnitude_max": float(channels.max()), "neurons_edited": int((channels > 0).sum()),
        "neurons": channels.numel(), "timings_s": timings, "scored_on": scored_on,
        "score_batch_size": score_batch, "scored_items": len(items), "held_out_score": round(float(items["score"].mean()), 4),
    }
    print(f"generation: {generated} completion tokens (up to and including eos) in {gen_seconds:.2f} s inside "
          f"model.generate = {results['completion_tokens_per_s']} tokens/s "
          f"({results['completion_tokens_per_s_after_first_step']} after the first step; "
          f"{results['generation_slots_per_s']} row-positions/s incl. finished rows)")
    print(f"GRPO: {rl.steps} steps of {results['completions_per_step']} completions in {log.seconds:.1f} s; "
          f"rewards {results['rewards']}; tokens outside the toy vocabulary: {meter.out_of_vocab}")
    print(f"scoring: {len(items)} held-out prompts on {scored_on} (batch {score_batch}), mean score "
          f"{results['held_out_score']}")
    if peak is not None:
        print(f"peak GPU memory (torch.cuda.max_memory_allocated, during GRPO): {_gib(peak)} GiB")
    print(f"edits ({args.checkpoint_dtype} checkpoints): {report.share_equal:.4%} of {report.entries:,} entries "
          f"unchanged, {report.share_below_rel:.4%} below the relative tolerance; {results['neurons_edited']:,} of "
          f"{results['neurons']:,} MLP neurons edited in {len(magnitudes)} layers")
    return results


if __name__ == "__main__":
    sys.exit(main())
