"""Training: the supervised warm-up that makes the toy base (and, in ``04``, GRPO stages).

Introduced in notebook ``00_toy_world`` (warm-up). Training never plots and never evaluates
beyond what a stage needs; analyses read the checkpoints it writes.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

IGNORE = -100
# Progress bars redraw at most this often: in a notebook every redraw is a kernel message, and a
# flood of them overflows the kernel's output queue while a test runner waits for the cell to end.
PROGRESS_INTERVAL_S = 2.0


@dataclass(frozen=True)
class WarmupLog:
    """Loss every ``every`` steps and the seconds the warm-up took."""

    losses: list[float]
    every: int
    seconds: float


def encode_pairs(tokenizer: PreTrainedTokenizerBase, pairs: Sequence[tuple[str, str]]
                 ) -> list[tuple[list[int], list[int]]]:
    """Token ids of ``<s> prompt`` and of ``answer </s>`` for each (prompt, answer) pair."""
    prompts = tokenizer([p for p, _ in pairs]).input_ids
    answers = tokenizer([a for _, a in pairs], add_special_tokens=False).input_ids
    return [(p, a + [tokenizer.eos_token_id]) for p, a in zip(prompts, answers)]


def collate(encoded: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (answer tokens only), each (B, T)."""
    length = max(len(p) + len(a) for p, a in encoded)
    ids = torch.full((len(encoded), length), pad_id)
    labels = torch.full((len(encoded), length), IGNORE)
    mask = torch.zeros((len(encoded), length), dtype=torch.long)
    for row, (p, a) in enumerate(encoded):
        n = len(p) + len(a)
        ids[row, :n] = torch.tensor(p + a)
        labels[row, len(p):n] = torch.tensor(a)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def length_groups(lengths: Sequence[int]) -> list[list[int]]:
    """Row indices of a batch cut into at most two groups by length, at the cut that pads least.

    Rows are ordered by length (ties by index) and cut where ``k * len[k-1] + (B - k) * len[B-1]``,
    the tokens of the two padded groups, is smallest (no cut when that saves nothing). Training on
    the groups in turn costs the tokens it computes: a Math example is 14 tokens and a CW verse 30,
    and one padded batch would pad every Math row to the verse's length.
    """
    if not lengths:
        return []
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    ordered = [lengths[i] for i in order]
    longest, size = ordered[-1], len(ordered)
    best_cut, best_cost = size, size * longest
    for cut in range(1, size):
        cost = cut * ordered[cut - 1] + (size - cut) * longest
        if cost < best_cost:
            best_cut, best_cost = cut, cost
    return [sorted(order[:best_cut]), sorted(order[best_cut:])] if best_cut < size else [sorted(order)]


def warmup_rate(step: int, steps: int, anneal_steps: int) -> float:
    """Learning-rate multiplier: linear ramp over 20 steps, flat, then linear decay to 0 over the
    last ``anneal_steps``."""
    ramp = min(1.0, (step + 1) / 20)
    if anneal_steps and step >= steps - anneal_steps:
        return ramp * (steps - step) / anneal_steps
    return ramp


def warmup(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
           pairs_by_domain: Mapping[str, Sequence[tuple[str, str]]], *, steps: int, lr: float,
           batch_size: int, seed: int, weights: Mapping[str, float] | None = None,
           anneal_steps: int = 200, log_every: int = 50, progress: bool = True) -> WarmupLog:
    """Supervised next-token training on a seeded mixture of domains (in place).

    Introduced in ``00_toy_world``. Each step draws ``batch_size`` pairs: a domain by ``weights``
    (uniform by default), then a pair; the loss is the mean over the batch's answer tokens. The batch
    is computed in two groups of similar length (:func:`length_groups`), each group's mean loss
    weighted by its share of the answer tokens: the same loss and gradient as one padded batch, for
    fewer tokens. AdamW at ``lr`` under :func:`warmup_rate`, gradients clipped to norm 1.
    """
    import time

    names = sorted(pairs_by_domain)
    encoded = {n: encode_pairs(tokenizer, pairs_by_domain[n]) for n in names}
    domain_weights = [float((weights or {}).get(n, 1.0)) for n in names]
    rng = random.Random(f"warmup:{seed}")
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_rate(s, steps, min(anneal_steps, steps)))
    model.train()
    losses, running = [], 0.0
    start = time.perf_counter()
    bar = tqdm(range(steps), desc="warm-up", disable=not progress, leave=False, mininterval=PROGRESS_INTERVAL_S)
    for step in bar:
        chosen = rng.choices(names, weights=domain_weights, k=batch_size)
        rows = [rng.choice(encoded[n]) for n in chosen]
        running += batch_backward(model, rows, tokenizer.pad_token_id)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % log_every == 0:
            losses.append(running / log_every)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
            running = 0.0
    model.eval()
    if not all(math.isfinite(x) for x in losses):
        raise RuntimeError(f"warm-up diverged (losses {losses[-3:]}); lower warmup_lr")
    return WarmupLog(losses, log_every, time.perf_counter() - start)


def batch_backward(model: PreTrainedModel, rows: Sequence[tuple[list[int], list[int]]], pad_id: int) -> float:
    """Backpropagate the mean loss over the answer tokens of ``rows`` (``encode_pairs`` output) and
    return it. Computed per :func:`length_groups` group, each group's mean weighted by its share of the
    answer tokens, which gives the loss and gradient of one padded batch."""
    answer_tokens = sum(len(a) for _, a in rows)
    total = 0.0
    for group in length_groups([len(p) + len(a) for p, a in rows]):
        share = sum(len(rows[i][1]) for i in group) / answer_tokens
        loss = model(**collate([rows[i] for i in group], pad_id)).loss * share
        loss.backward()
        total += loss.item()
    return total


# --------------------------------------------------------------------------------------------------
# GRPO stages through trl (notebooks 01_sparse_edits, 04_sequential_rl, 05_refresh_vs_rollback)
# --------------------------------------------------------------------------------------------------

MASTER_FP32 = "master_fp32.safetensors"


# GRPO's diagnostics per optimizer step (notebook 04_sequential_rl), what each is and where it comes from:
# ``zero_advantage_share``: share of the step's groups whose rewards are all equal, so every completion of the
# group gets advantage 0 (trl's ``frac_reward_zero_std``); ``mean_abs_advantage``: mean |A| over the step's
# completions (trl's advantages as it computed them, group-normalised); ``loss``: the step's GRPO loss;
# ``entropy``: mean per-token entropy of the policy on the step's completions (trl's ``entropy``).
DIAGNOSTICS: tuple[str, ...] = ("zero_advantage_share", "mean_abs_advantage", "loss", "entropy")


@dataclass(frozen=True)
class GRPOLog:
    """One GRPO stage: mean sampled reward per optimizer step, KL to the reference per step (empty
    when ``kl_beta`` is 0), the step count, the seconds the stage took and, per step, GRPO's
    :data:`DIAGNOSTICS` (name -> one value per step; empty for a log made before they were recorded) and the
    rewards of every call of its reward function, group by group (``group_rewards``: ``given``, what the trainer
    was given, and ``verifier``, what the verifier said of the same completions; :class:`GroupRecorder`)."""

    rewards: list[float]
    kl: list[float]
    steps: int
    seconds: float
    diagnostics: dict[str, list[float]] = field(default_factory=dict)
    group_rewards: dict[str, list] = field(default_factory=dict)

    def group_rewards_record(self, mode: str, num_generations: int) -> dict:
        """What a stage stores in :data:`GROUP_REWARDS_FILE` (not in its manifest: 200 steps x 64 rewards):
        ``mode`` (its reward mode), ``num_generations``, ``calls`` (per call of the reward function, the rewards
        its trainer was given, group by group) and, for a control whose verifier was asked,
        ``verifier_calls`` (what the verifier said of the same completions)."""
        out = {"mode": mode, "num_generations": int(num_generations), "calls": self.group_rewards.get("given", [])}
        if mode != "verifier" and self.group_rewards.get("verifier"):
            out["verifier_calls"] = self.group_rewards["verifier"]
        return out

    def to_metrics(self) -> dict:
        """The log as JSON-ready manifest metrics (rounded); ``diagnostics`` only when recorded."""
        out = {"rewards": [round(r, 5) for r in self.rewards], "kl": [round(k, 6) for k in self.kl],
               "steps": self.steps, "seconds": round(self.seconds, 2)}
        if self.diagnostics:
            out["diagnostics"] = {name: [None if v is None or not math.isfinite(v) else round(float(v), 6)
                                         for v in values] for name, values in self.diagnostics.items()}
        return out


def stage_seed(seed: int, *parts: str) -> int:
    """A stage's seed from the run seed and names (domain order, "refresh", ...): a sha256 digest,
    stable across processes (never Python's salted ``hash``). Introduced in ``04_sequential_rl``."""
    import hashlib

    digest = hashlib.sha256(":".join([str(seed), *parts]).encode()).hexdigest()
    return int(digest[:8], 16) % (2**31 - 1)


def _examples_dataset(examples):
    """A ``datasets.Dataset`` with columns prompt, answer, spec from :class:`Example` objects or
    mappings (trl passes the extra columns to the reward function as keyword lists)."""
    from datasets import Dataset

    rows = [e if isinstance(e, Mapping) else {"prompt": e.prompt, "answer": e.answer, "spec": e.spec}
            for e in examples]
    if not rows:
        raise ValueError("grpo: no training examples")
    return Dataset.from_dict({c: [r[c] for r in rows] for c in ("prompt", "answer", "spec")})


# GRPOConfig fields that change how a stage is computed, not what it computes: where completions are
# generated (vLLM or generate), how a step's batch is split over micro-batches and processes, memory
# savers. They are recorded in a stage's manifest but not in its cache key, so a stage trained on
# several GPUs is the one a notebook asks for. Every other override changes the algorithm and is keyed.
EXECUTION_ONLY_GRPO_FIELDS: frozenset[str] = frozenset({
    "use_vllm", "vllm_mode", "vllm_gpu_memory_utilization", "vllm_tensor_parallel_size", "vllm_max_model_length",
    "vllm_enable_sleep_mode", "vllm_server_host", "vllm_server_port", "vllm_server_base_url",
    "vllm_server_timeout", "vllm_model_impl", "vllm_structured_outputs_regex", "ds3_gather_for_generation",
    "activation_checkpointing", "gradient_checkpointing", "gradient_checkpointing_kwargs",
    "gradient_accumulation_steps", "per_device_train_batch_size", "steps_per_generation", "generation_batch_size",
    "dataloader_num_workers", "dataloader_pin_memory", "torch_compile", "ddp_timeout", "cast_lm_head_to_fp32",
})
# ``replayed`` (notebook 04's control) gives each group a permutation of the real stage's group rewards at the same
# call, whatever the completions; ``permuted`` (within each prompt's group of the control's own verifier rewards: the
# previous control, which let the control's own completions set its zero-advantage share), ``shuffled`` (across the
# whole step's batch) and ``random`` are older controls, kept so stores built with them still open.
REWARD_MODES: tuple[str, ...] = ("verifier", "replayed", "permuted", "shuffled", "random")
# A stage's rewards per call of its reward function, group by group (notebook 04's replayed control reads them).
GROUP_REWARDS_FILE = "group_rewards.json"


def _grpo_args(rl_config, seed: int, steps: int, output_dir: str, overrides: Mapping | None = None):
    """The ``GRPOConfig`` of one stage: the config's rate and schedule (decaying to 0 within the
    stage for ``linear``), completions per step = prompts x generations, CPU-safe and quiet;
    ``overrides`` (trl field names) on top."""
    import dataclasses as dc

    from trl import GRPOConfig

    on_gpu = torch.cuda.is_available()
    names = {f.name for f in dc.fields(GRPOConfig)}
    kwargs = dict(
        output_dir=output_dir, max_steps=steps, learning_rate=rl_config.lr,
        lr_scheduler_type=rl_config.lr_schedule, warmup_steps=0, weight_decay=0.0,
        per_device_train_batch_size=rl_config.prompts_per_step * rl_config.num_generations,
        gradient_accumulation_steps=1, num_generations=rl_config.num_generations, num_iterations=1,
        max_completion_length=rl_config.max_completion_length, temperature=rl_config.temperature,
        beta=rl_config.kl_beta, seed=seed, data_seed=seed, use_cpu=not on_gpu,
        bf16=on_gpu and rl_config.precision == "bf16", fp16=False,
        logging_steps=1, logging_strategy="steps", save_strategy="no", report_to=[], disable_tqdm=True,
        log_completions=False, dataloader_num_workers=0, shuffle_dataset=True,
    )
    if "activation_checkpointing" in names:
        kwargs["activation_checkpointing"] = False
    else:
        kwargs["gradient_checkpointing"] = False
    unknown = sorted(set(overrides or {}) - names)
    if unknown:
        raise ValueError(f"trainer overrides {unknown} are not fields of trl's GRPOConfig")
    return GRPOConfig(**{**kwargs, **(overrides or {})})


def permute_within_groups(rewards: Sequence[float], group_size: int, rng: random.Random,
                          prompts: Sequence | None = None) -> list[float]:
    """``rewards`` permuted within each group of ``group_size`` consecutive completions (trl puts the
    ``num_generations`` completions of one prompt next to each other, and computes advantages over exactly
    those blocks). Each group keeps its multiset of rewards, so its mean, its spread, whether all its
    rewards are equal (zero advantage) and its |advantage| values are the real ones; only which completion
    gets which reward changes. ``prompts`` (one per completion), when given, must be equal within each
    block. Introduced in ``04_sequential_rl`` (its earlier within-group control, kept for reference; the notebook
    now replays the real stage's group rewards, :func:`replayed_reward`)."""
    rewards = list(rewards)
    if group_size < 1 or len(rewards) % group_size:
        raise ValueError(f"permute_within_groups: {len(rewards)} rewards do not split into groups of {group_size}")
    if prompts is not None and len(prompts) != len(rewards):
        raise ValueError(f"permute_within_groups: {len(prompts)} prompts for {len(rewards)} rewards")
    out: list[float] = []
    for start in range(0, len(rewards), group_size):
        if prompts is not None and any(prompts[i] != prompts[start] for i in range(start, start + group_size)):
            raise ValueError(f"permute_within_groups: completions {start}-{start + group_size - 1} do not share one "
                             f"prompt; a group is the {group_size} completions of one prompt")
        block = rewards[start:start + group_size]
        rng.shuffle(block)
        out += block
    return out


def as_groups(rewards: Sequence[float], group_size: int) -> list[list[float]]:
    """``rewards`` (one per completion, trl's order: the ``group_size`` completions of one prompt next to each other)
    cut into its groups: a list of ``len(rewards) / group_size`` lists. Introduced in ``04_sequential_rl``."""
    rewards = [float(r) for r in rewards]
    if group_size < 1 or len(rewards) % group_size:
        raise ValueError(f"as_groups: {len(rewards)} rewards do not split into groups of {group_size}")
    return [rewards[i:i + group_size] for i in range(0, len(rewards), group_size)]


def replay_groups(real_groups: Sequence[Sequence[float]], rng: random.Random) -> list[float]:
    """One call of the replayed control: group ``g`` gets a random permutation (drawn from ``rng``) of
    ``real_groups[g]``, the real stage's rewards of its group ``g`` at the same call; returned flat (one reward per
    completion, groups in order). Each group's multiset of rewards is the real one, so whether the group has zero
    advantage and its |advantage| values are exactly the real run's. Introduced in ``04_sequential_rl``."""
    out: list[float] = []
    for group in real_groups:
        block = [float(r) for r in group]
        rng.shuffle(block)
        out += block
    return out


def replayed_reward(reward, recorded: Sequence[Sequence[Sequence[float]]], seed: int, num_generations: int):
    """The replayed control's reward function (notebook ``04_sequential_rl``): at its ``t``-th call it returns
    :func:`replay_groups` of ``recorded[t]`` (the real stage's group rewards at its ``t``-th call, as stored in
    :data:`GROUP_REWARDS_FILE`), permuted by ``random.Random(f"replayed:{seed}:{t}")``. What it returns does not
    depend on the completions: the control learns nothing, while each step has exactly the real run's
    zero-advantage groups and advantage sizes. ``reward`` (the verifier) is still called on the control's
    completions and its output discarded, so a recording wrapper can keep what they would have earned.
    Raises ``ValueError`` when a call holds another number of completions than the recorded call, when the recorded
    groups are not of ``num_generations``, or when the control calls more often than the real stage did."""
    recorded = [[list(g) for g in call] for call in recorded]
    calls = [0]

    def control(prompts=None, completions=None, **columns) -> list[float]:
        t = calls[0]
        calls[0] += 1
        if t >= len(recorded):
            raise ValueError(f"replayed reward: call {t + 1}, but the replayed stage recorded {len(recorded)} calls; "
                             f"give the control the same steps and batch as the stage it replays")
        groups = recorded[t]
        if any(len(g) != num_generations for g in groups):
            raise ValueError(f"replayed reward: the replayed stage's groups at call {t + 1} have sizes "
                             f"{sorted({len(g) for g in groups})}, the control's num_generations is {num_generations}")
        if len(completions) != sum(len(g) for g in groups):
            raise ValueError(f"replayed reward: call {t + 1} has {len(completions)} completions, the replayed stage's "
                             f"had {sum(len(g) for g in groups)}; give the control the same batch (one process)")
        reward(prompts=prompts, completions=completions, **columns)  # for the record only: the output is not used
        return replay_groups(groups, random.Random(f"replayed:{seed}:{t}"))

    control.__name__ = f"{getattr(reward, '__name__', 'reward')}_replayed"
    return control


class GroupRecorder:
    """Keeps, for every call of a wrapped reward function, the rewards it returned cut into groups of
    ``group_size`` (:func:`as_groups`): ``calls[name]`` is a list (one per call) of lists (one per group) of
    rewards. Introduced in ``04_sequential_rl``: a stage stores what its trainer was given (``given``) and, for a
    control, what the verifier said of the same completions (``verifier``)."""

    def __init__(self, group_size: int) -> None:
        self.group_size = int(group_size)
        self.calls: dict[str, list[list[list[float]]]] = {}

    def wrap(self, reward, name: str):
        """``reward`` with every call's output recorded under ``name`` (the output is passed on unchanged)."""
        self.calls[name] = []

        def recorded(*args, **kwargs):
            out = list(reward(*args, **kwargs))
            self.calls[name].append(as_groups(out, self.group_size))
            return out

        recorded.__name__ = getattr(reward, "__name__", "reward")
        return recorded


def overridden_reward(reward, mode: str, seed: int, num_generations: int | None = None, replay=None):
    """The control rewards of a stage (introduced in ``04_sequential_rl``): ``verifier`` is ``reward``
    itself; ``replayed`` is :func:`replayed_reward` of the recorded group rewards ``replay`` (one list of groups
    per call of the real stage); ``permuted`` permutes the verifier's rewards within each group of ``num_generations``
    completions of one prompt (:func:`permute_within_groups`): every group keeps its rewards' multiset, so
    the share of zero-advantage groups and the size of the advantages are the real ones, but which
    completion is rewarded is unrelated to correctness; ``shuffled`` permutes them among all completions of
    each call (one optimizer step's batch on one process: groups then get rewards of other prompts, and
    almost every group a nonzero advantage); ``random`` draws each reward 0 or 1 with probability 1/2.
    Seeded per call."""
    if mode == "verifier":
        return reward
    if mode not in REWARD_MODES:
        raise ValueError(f"unknown reward mode {mode!r}; valid: {', '.join(REWARD_MODES)}")
    if mode in ("permuted", "replayed") and not num_generations:
        raise ValueError(f"reward mode {mode!r} needs num_generations (the size of a prompt's group)")
    if mode == "replayed":
        if replay is None:
            raise ValueError("reward mode 'replayed' needs replay, the real stage's recorded group rewards per call")
        return replayed_reward(reward, replay, seed, num_generations)
    if replay is not None:
        raise ValueError(f"replay is for reward mode 'replayed' only, not {mode!r}")
    calls = [0]

    def control(prompts=None, completions=None, **columns) -> list[float]:
        rng = random.Random(f"{mode}:{seed}:{calls[0]}")
        calls[0] += 1
        if mode == "random":
            return [float(rng.random() < 0.5) for _ in completions]
        rewards = list(reward(prompts=prompts, completions=completions, **columns))
        if mode == "permuted":
            return permute_within_groups(rewards, num_generations, rng, prompts)
        rng.shuffle(rewards)
        return rewards

    control.__name__ = f"{getattr(reward, '__name__', 'reward')}_{mode}"
    return control


def unique_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors with tied weights once (under the name ``save_pretrained`` keeps), detached
    and contiguous, ready for ``safetensors.torch.save_file``."""
    state, seen = {}, set()
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            state[name] = tensor.detach().contiguous()
    return state


def _save_along_callback(every: int, directory):
    """A TrainerCallback that writes the fp32 weights every ``every`` optimizer steps to
    ``directory/step-<n>.safetensors`` (introduced in ``03_perturbation_theory``: the path of a stage)."""
    from pathlib import Path

    from safetensors.torch import save_file
    from transformers import TrainerCallback

    directory = Path(directory)

    class SaveAlong(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if every and state.global_step % every == 0 and state.is_world_process_zero:
                directory.mkdir(parents=True, exist_ok=True)
                save_file(unique_state(model), str(directory / f"step-{state.global_step:06d}.safetensors"),
                          metadata={"format": "pt"})

    return SaveAlong()


def _stage_callback(total: int, desc: str, progress: bool):
    """A TrainerCallback that shows one tqdm bar per stage with the running reward and collects the reward,
    the KL and GRPO's :data:`DIAGNOSTICS` of every logged step. ``trainer`` (set after the trainer is made)
    gives the step's advantages, which trl keeps for its completion logs but does not log as a number."""
    from transformers import TrainerCallback

    class StageProgress(TrainerCallback):
        def __init__(self) -> None:
            self.rewards: list[float] = []
            self.kl: list[float] = []
            self.diagnostics: dict[str, list[float]] = {name: [] for name in DIAGNOSTICS}
            self.trainer = None
            self.bar = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.bar = tqdm(total=total, desc=desc, disable=not progress, leave=False,
                            mininterval=PROGRESS_INTERVAL_S)

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            if "reward" in logs and logs["reward"] is not None:
                self.rewards.append(float(logs["reward"]))
                self.bar.update(1)
                running = sum(self.rewards[-10:]) / len(self.rewards[-10:])
                self.bar.set_postfix(reward=f"{running:.3f}", refresh=False)
                self._diagnose(logs)
            if "kl" in logs and logs["kl"] is not None:
                self.kl.append(float(logs["kl"]))

        def _diagnose(self, logs) -> None:
            def value(name):
                v = logs.get(name)
                return None if v is None else float(v)

            advantages = list(getattr(self.trainer, "_logs", {}).get("advantages", []))
            mean_abs = sum(abs(float(a)) for a in advantages) / len(advantages) if advantages else None
            for name, v in (("zero_advantage_share", value("frac_reward_zero_std")),
                            ("mean_abs_advantage", mean_abs), ("loss", value("loss")), ("entropy", value("entropy"))):
                self.diagnostics[name].append(v)

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()

    return StageProgress()


def grpo(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, domain, examples, rl_config, seed: int,
         *, steps: int | None = None, progress: bool = True, desc: str | None = None, reward_mode: str = "verifier",
         save_every: int = 0, save_dir=None, trainer_overrides: Mapping | None = None, replay=None,
         ) -> tuple[PreTrainedModel, GRPOLog]:
    """One GRPO stage on ``domain`` through trl's ``GRPOTrainer``; returns (trained model, log).

    Introduced in ``01_sparse_edits`` (experts); chained in ``04_sequential_rl``, short refreshes in
    ``05_refresh_vs_rollback``. ``examples``: the domain's train :class:`Example` list (prompt, answer,
    spec); ``rl_config``: an :class:`mdrl_lib.config.RLConfig`; ``steps`` overrides ``rl_config.steps``.
    Each step samples ``prompts_per_step`` prompts x ``num_generations`` completions (at most
    ``max_completion_length`` tokens, at ``temperature``), rewards them with
    ``domain.reward_function()`` and takes one AdamW step at ``lr`` decayed by ``lr_schedule`` within
    the stage (``linear`` goes to 0 at the last step), with KL weight ``kl_beta``. Full parameters, or
    LoRA of rank ``lora_rank`` on every linear layer: the adapters are injected into ``model`` and merged
    back (``merge_and_unload``), so the returned model has the base's parameter names. Either way
    ``model`` is changed in place: pass a copy to keep the original. The trainer
    writes nothing (its output directory is a removed temporary one) and prints nothing; a tqdm bar
    per stage shows the running reward. The same seed and inputs give byte-identical weights.
    ``reward_mode`` replaces the verifier's reward by a control (:func:`overridden_reward`; ``replay``: the
    replayed stage's group rewards per call, for ``replayed``); the log holds GRPO's per-step :data:`DIAGNOSTICS`
    (zero-advantage share, mean |advantage|, loss, entropy) and every reward call's rewards, group by group;
    ``save_every`` > 0 writes the weights every that many steps into ``save_dir``;
    ``trainer_overrides`` are extra ``GRPOConfig`` fields (vLLM, DeepSpeed, micro-batching).
    """
    import shutil
    import time
    import warnings

    from transformers import PrinterCallback, ProgressCallback
    from trl import GRPOTrainer

    from mdrl_lib.scratch import GRPO_PREFIX, scratch_dir

    steps = int(rl_config.steps if steps is None else steps)
    if steps < 1:
        raise ValueError(f"grpo: steps must be >= 1, got {steps}")
    dataset = _examples_dataset(examples)
    peft_config = None
    if rl_config.lora_rank > 0:
        from peft import LoraConfig

        peft_config = LoraConfig(r=rl_config.lora_rank, lora_alpha=2 * rl_config.lora_rank, lora_dropout=0.0,
                                 target_modules="all-linear", bias="none", task_type="CAUSAL_LM")
    use_cache = getattr(model.config, "use_cache", None)
    random.seed(seed)
    torch.manual_seed(seed)
    callback = _stage_callback(steps, desc or f"GRPO {getattr(domain, 'name', domain)}", progress)
    callbacks = [callback]
    if save_every:
        if save_dir is None:
            raise ValueError("grpo: save_every needs a save_dir")
        callbacks.append(_save_along_callback(save_every, save_dir))
    recorder = GroupRecorder(rl_config.num_generations)
    verifier = domain.reward_function()
    if reward_mode != "verifier":
        verifier = recorder.wrap(verifier, "verifier")  # what the verifier says of a control's own completions
    reward = recorder.wrap(overridden_reward(verifier, reward_mode, seed, num_generations=rl_config.num_generations,
                                             replay=replay), "given")
    output_dir = str(scratch_dir(GRPO_PREFIX))
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            args = _grpo_args(rl_config, seed, steps, output_dir, trainer_overrides)
            trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args,
                                  train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config,
                                  callbacks=callbacks)
            callback.trainer = trainer  # the step's advantages, for mean |A|
            trainer.remove_callback(PrinterCallback)
            trainer.remove_callback(ProgressCallback)
            trainer.train()
            trained = trainer.model
            if peft_config is not None:
                trained = trained.merge_and_unload()
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)
    trained.eval()
    if use_cache is not None:
        trained.config.use_cache = use_cache  # transformers' Trainer turns it off for training
    log = GRPOLog(callback.rewards, callback.kl if rl_config.kl_beta > 0 else [], steps, time.perf_counter() - start,
                  diagnostics=callback.diagnostics, group_rewards=recorder.calls)
    return trained, log


def save_stage(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, directory, precision: str = "fp32") -> None:
    """Write an RL checkpoint. ``fp32``: the weights as they are. ``bf16``: the fp32 master goes to
    ``master_fp32.safetensors`` and the checkpoint proper (``model.safetensors``, dtype bf16) holds the
    bf16-rounded weights; ``model`` itself is rounded in place (values bf16-representable, dtype fp32),
    so later stages and scores see what is stored. Introduced in ``01_sparse_edits`` (C1 both ways)."""
    from pathlib import Path

    from safetensors.torch import save_file

    from mdrl_lib.models import save_model

    directory = Path(directory)
    if precision == "bf16":
        master = unique_state(model)
        save_file(master, str(directory / MASTER_FP32), metadata={"format": "pt"})
        del master
        with torch.no_grad():
            for param in model.parameters():
                param.copy_(param.to(torch.bfloat16).to(param.dtype))
        dtype = next(model.parameters()).dtype
        model.to(torch.bfloat16)
        try:
            save_model(model, tokenizer, directory)
        finally:
            model.to(dtype)
    elif precision == "fp32":
        save_model(model, tokenizer, directory)
    else:
        raise ValueError(f"unknown precision {precision!r}; valid: fp32, bf16")


# --------------------------------------------------------------------------------------------------
# Plain gradient descent on a domain objective (notebook 03_perturbation_theory: the refresh of the
# contraction theorem)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GDLog:
    """The objective before each step and after the last (``steps + 1`` values) and the seconds taken."""

    losses: list[float]
    seconds: float


def gradient_steps(model: torch.nn.Module, loss_fn, *, steps: int, lr: float, save_every: int = 0, save_dir=None,
                   progress: bool = True) -> GDLog:
    """``steps`` plain gradient-descent steps theta <- theta - lr * grad loss_fn(model), in place, at a
    constant rate (no momentum, no clipping: the update the contraction bound is stated for).

    Introduced in ``03_perturbation_theory``. ``save_every`` > 0 writes the weights every that many steps
    to ``save_dir/step-<n>.safetensors``.
    """
    import time
    from pathlib import Path

    from safetensors.torch import save_file

    if steps < 1:
        raise ValueError(f"gradient_steps: steps must be >= 1, got {steps}")
    if save_every and save_dir is None:
        raise ValueError("gradient_steps: save_every needs a save_dir")
    params = [p for p in model.parameters() if p.requires_grad]
    losses: list[float] = []
    start = time.perf_counter()
    for step in tqdm(range(steps), desc="gradient descent", disable=not progress, leave=False,
                     mininterval=PROGRESS_INTERVAL_S):
        loss = loss_fn(model)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        losses.append(float(loss.detach()))
        if not math.isfinite(losses[-1]):
            raise RuntimeError(f"gradient descent diverged at step {step} (loss {losses[-1]}); lower the rate")
        with torch.no_grad():
            for param, grad in zip(params, grads):
                if grad is not None:
                    param.sub_(lr * grad)
        if save_every and (step + 1) % save_every == 0:
            Path(save_dir).mkdir(parents=True, exist_ok=True)
            save_file(unique_state(model), str(Path(save_dir) / f"step-{step + 1:06d}.safetensors"),
                      metadata={"format": "pt"})
    with torch.no_grad():
        losses.append(float(loss_fn(model)))
    return GDLog(losses, time.perf_counter() - start)
