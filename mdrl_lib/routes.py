"""Shared computation routes and gradient geometry: which MLP channels and attention heads each domain
uses, whether the domains need the same ones, and how their gradients and updates meet there.

Introduced in notebook ``02_shared_routes`` (claims C3 and C4). Works on any causal LM with the
Qwen2/Llama layout: ``<prefix>.layers.<i>.mlp.{gate_proj,up_proj,down_proj}`` and
``<prefix>.layers.<i>.self_attn.o_proj``. A layer is named by its module name (``"model.layers.0"``
for a ``Qwen2ForCausalLM``), and an MLP channel (a "neuron") by ``(layer, index)``: the same keys as
:func:`mdrl_lib.edits.top_neurons`, so route sets and edit sets can be compared directly.

- Routes: :func:`route_activity` runs the model with forward hooks and averages, per channel, the
  absolute MLP intermediate activation ``act(gate_proj(x)) * up_proj(x)`` (the input of
  ``down_proj``), and per head the norm of the head's output slice entering ``o_proj``;
  :func:`active_routes` keeps the top fraction, :func:`overlap_matrix` compares domains and
  :func:`pairwise_overlaps` holds each pair's shared count against chance.
- A causal test: :func:`ablate_channels` zeroes (or mean-patches) chosen channels while the caller
  scores the model; :func:`random_channels` draws a control set with the same per-layer counts;
  :func:`ablation_effects` scores every domain under each set.
- Gradients: :func:`module_gradients` splits one domain's gradient by attention block, MLP block and
  the rest; :func:`gradient_cosines` gives the global cosine and how each module adds to it.
- Updates: :func:`route_coordinate_mask` and :func:`delta_cosine_on_coordinates` compare two
  experts' weight deltas on the coordinates of chosen channels and elsewhere.
- Notebook 02's analyses, cached in the store like checkpoints (specs): :class:`ChannelActivity` (a
  domain's activity), :class:`AblationScores` (per-item scores with a set ablated, or its random
  control), :class:`ObjectiveGradient` (a domain objective's gradient), :class:`GradientsOnRoutes` and
  :class:`UpdatesOnRoutes` (gradients' and experts' updates' cosines on shared channels);
  :class:`GradientGeometry` holds the cosines of the cached gradients.
"""
from __future__ import annotations

import contextlib
import json
import math
import re
from dataclasses import dataclass
from itertools import combinations
from typing import Callable, ClassVar, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from mdrl_lib.domains.base import DOMAIN_NAMES
from mdrl_lib.edits import jaccard, top_neurons
from mdrl_lib.specs import Spec, check_domain

POSITIONS: tuple[str, ...] = ("prompt", "answer", "all")
ABLATION_MODES: tuple[str, ...] = ("zero", "mean")
OTHER = "other"
EMBEDDINGS = "embeddings"  # the token embeddings (tied with the output head in the toy model) as a module of their own
_EMBEDDING = re.compile(r"(?:^|\.)(?:embed_tokens|lm_head)\.")
_LAYER = re.compile(r"(?:^|\.)layers\.\d+$")
_MLP_WEIGHT = re.compile(r"^(?P<layer>.*\.layers\.\d+)\.mlp\.(?P<proj>gate_proj|up_proj|down_proj)\.weight$")
_BLOCK = re.compile(r"^(?P<layer>.*\.layers\.\d+)\.(?P<block>self_attn|mlp)\.")

Channel = tuple[str, int]


# --------------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------------

def decoder_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The model's decoder layers by module name (``"model.layers.0"``, ...), in order: every module
    named ``...layers.<i>`` that has an ``mlp`` with a ``down_proj``."""
    layers = {name: module for name, module in model.named_modules()
              if _LAYER.search(name) and hasattr(getattr(module, "mlp", None), "down_proj")}
    if not layers:
        raise ValueError(f"{type(model).__name__} has no decoder layers with the Qwen2/Llama layout "
                         "(expected modules like 'model.layers.0' with mlp.down_proj)")
    return layers


def channel_counts(model: nn.Module) -> dict[str, int]:
    """Intermediate size (number of MLP channels) of every decoder layer."""
    return {name: layer.mlp.down_proj.in_features for name, layer in decoder_layers(model).items()}


def _check_channels(channels: Sequence[Channel] | set[Channel], sizes: Mapping[str, int]) -> dict[str, list[int]]:
    """Channels grouped by layer (indices sorted), after checking every layer and index exists."""
    by_layer: dict[str, list[int]] = {}
    for key in channels:
        if not (isinstance(key, tuple) and len(key) == 2):
            raise TypeError(f"a channel is a (layer, index) pair, got {key!r}")
        layer, index = key
        if layer not in sizes:
            raise ValueError(f"unknown layer {layer!r}; the layers are {sorted(sizes)}")
        if not 0 <= int(index) < sizes[layer]:
            raise ValueError(f"channel {index} out of range for {layer!r} ({sizes[layer]} channels)")
        by_layer.setdefault(layer, []).append(int(index))
    return {layer: sorted(set(indices)) for layer, indices in by_layer.items()}


# --------------------------------------------------------------------------------------------------
# Active routes
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RouteActivity:
    """Mean activity of one set of prompts, per decoder layer.

    ``channels[layer]``: shape (intermediate_size,), mean |act(gate) * up| per MLP channel;
    ``channel_means[layer]``: shape (intermediate_size,), the signed mean (what mean-ablation patches in);
    ``heads[layer]``: shape (num_heads,), mean L2 norm of each head's output slice entering ``o_proj``;
    ``tokens``: how many token positions were averaged.
    """

    channels: dict[str, torch.Tensor]
    channel_means: dict[str, torch.Tensor]
    heads: dict[str, torch.Tensor]
    tokens: int


def _teacher_forced_batch(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                          completions: Sequence[str] | None, positions: str, exclude_special: bool,
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded ``input_ids`` and ``attention_mask`` of prompt + completion, shape (B, T), and the
    float weights (B, T) of the positions to average."""
    prompt_ids = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    if completions is None:
        completion_ids = [[] for _ in prompt_ids]
    else:
        completion_ids = tokenizer(list(completions), add_special_tokens=False)["input_ids"]
    special = torch.tensor(sorted(tokenizer.all_special_ids) if exclude_special else [], dtype=torch.long)
    length = max(len(p) + len(c) for p, c in zip(prompt_ids, completion_ids))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(prompt_ids), length), pad, dtype=torch.long)
    mask = torch.zeros((len(prompt_ids), length), dtype=torch.long)
    weights = torch.zeros((len(prompt_ids), length))
    for row, (p, c) in enumerate(zip(prompt_ids, completion_ids)):
        tokens = torch.tensor(list(p) + list(c), dtype=torch.long)
        start = length - len(tokens)
        ids[row, start:] = tokens
        mask[row, start:] = 1
        in_prompt = torch.arange(len(tokens)) < len(p)
        chosen = torch.ones_like(in_prompt) if positions == "all" else in_prompt == (positions == "prompt")
        weights[row, start:] = (chosen & ~torch.isin(tokens, special)).float()
    return ids, mask, weights


@torch.no_grad()
def route_activity(model: nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                   completions: Sequence[str] | None = None, *, positions: str = "prompt",
                   batch_size: int = 64, exclude_special: bool = True) -> RouteActivity:
    """Mean MLP channel and attention head activity over chosen token positions of ``prompts``.

    ``positions``: ``"prompt"`` averages over the prompt's tokens, ``"answer"`` over the completion's
    tokens (teacher-forced: the model reads prompt + completion, completions tokenized without special
    tokens and appended as given, so add an eos yourself if you want it), ``"all"`` over both. Pad
    positions never count; with ``exclude_special`` neither do special tokens (bos, eos): the bos at
    position 0 computes the same thing in every domain and would lift every domain's activity on the
    same channels. Batches are left-padded with position ids from the attention mask, as in
    ``generate``, so the result does not depend on batching or padding. No gradients; the model is in
    eval mode while it runs.
    """
    if positions not in POSITIONS:
        raise ValueError(f"positions must be one of {POSITIONS}, got {positions!r}")
    if positions in ("answer", "all") and completions is None:
        raise ValueError(f"positions={positions!r} needs completions")
    if completions is not None and len(completions) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    if not prompts:
        raise ValueError("no prompts")
    layers = decoder_layers(model)
    abs_sum = {name: torch.zeros(layer.mlp.down_proj.in_features, dtype=torch.float64)
               for name, layer in layers.items()}
    signed_sum = {name: torch.zeros_like(total) for name, total in abs_sum.items()}
    head_sum = {name: torch.zeros(_num_heads(layer), dtype=torch.float64) for name, layer in layers.items()}
    current: dict[str, torch.Tensor] = {}

    def on_mlp(name: str):
        def hook(module, args):
            a = args[0].float()
            w = current["weights"].to(a.device)[..., None]
            abs_sum[name] += (a.abs() * w).sum((0, 1)).double().cpu()
            signed_sum[name] += (a * w).sum((0, 1)).double().cpu()
        return hook

    def on_heads(name: str, heads: int):
        def hook(module, args):
            x = args[0].float()
            norms = x.reshape(*x.shape[:-1], heads, x.shape[-1] // heads).norm(dim=-1)
            head_sum[name] += (norms * current["weights"].to(x.device)[..., None]).sum((0, 1)).double().cpu()
        return hook

    handles = []
    for name, layer in layers.items():
        handles.append(layer.mlp.down_proj.register_forward_pre_hook(on_mlp(name)))
        handles.append(layer.self_attn.o_proj.register_forward_pre_hook(on_heads(name, head_sum[name].numel())))
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    # The decoder alone (no lm_head) reaches every hooked module and skips the (batch, length, vocab) logits.
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
    tokens = 0
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = None if completions is None else completions[start:start + batch_size]
            ids, mask, weights = _teacher_forced_batch(tokenizer, prompts[start:start + batch_size], chunk,
                                                       positions, exclude_special)
            current["weights"] = weights
            tokens += int(weights.sum())
            position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
            decoder(input_ids=ids.to(device), attention_mask=mask.to(device),
                  position_ids=position_ids.to(device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if tokens == 0:
        raise ValueError(f"no {positions} tokens to average (are the completions empty?)")
    return RouteActivity(channels={n: (s / tokens).float() for n, s in abs_sum.items()},
                         channel_means={n: (s / tokens).float() for n, s in signed_sum.items()},
                         heads={n: (s / tokens).float() for n, s in head_sum.items()}, tokens=tokens)


def _num_heads(layer: nn.Module) -> int:
    attention = layer.self_attn
    head_dim = getattr(attention, "head_dim", None)
    if not head_dim:
        raise ValueError(f"{type(attention).__name__} has no head_dim; cannot split o_proj's input into heads")
    return attention.o_proj.in_features // head_dim


def channel_activity(model: nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                     completions: Sequence[str] | None = None, positions: str = "prompt",
                     **kwargs) -> dict[str, torch.Tensor]:
    """Per layer, shape (intermediate_size,): mean absolute MLP intermediate activation
    ``act(gate_proj(x)) * up_proj(x)`` over the chosen positions; see :func:`route_activity`."""
    return route_activity(model, tokenizer, prompts, completions, positions=positions, **kwargs).channels


def head_activity(model: nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                  completions: Sequence[str] | None = None, positions: str = "prompt",
                  **kwargs) -> dict[str, torch.Tensor]:
    """Per layer, shape (num_heads,): mean L2 norm of each attention head's output slice entering
    ``o_proj``, over the chosen positions; see :func:`route_activity`."""
    return route_activity(model, tokenizer, prompts, completions, positions=positions, **kwargs).heads


def active_routes(activity: Mapping[str, torch.Tensor], q: float = 0.1) -> set[Channel]:
    """The (layer, index) units in the top ``q`` fraction of ``activity`` across all layers together
    (ties broken by layer order, then index); the same rule as :func:`mdrl_lib.edits.top_neurons`."""
    return top_neurons(dict(activity), fraction=q)


def overlap_matrix(sets_by_domain: Mapping[str, set]) -> pd.DataFrame:
    """Pairwise Jaccard index of the domains' sets (a symmetric domain x domain table, 1 on the diagonal)."""
    names = list(sets_by_domain)
    table = pd.DataFrame(1.0, index=names, columns=names)
    for a, b in combinations(names, 2):
        table.loc[a, b] = table.loc[b, a] = jaccard(set(sets_by_domain[a]), set(sets_by_domain[b]))
    table.index.name = table.columns.name = "domain"
    return table


def pairwise_overlaps(sets_by_domain: Mapping[str, set], units: int) -> pd.DataFrame:
    """One row per domain pair: ``a``, ``b``, their set sizes, ``shared`` = |A ∩ B|, ``jaccard``, the
    intersection expected by chance ``chance_shared`` = |A| |B| / units, and ``p_value`` = P(X >= shared)
    for X hypergeometric (two sets drawn at random from ``units`` units, e.g. all MLP channels): how
    surprising the shared count would be if the domains chose their routes independently.
    Introduced in ``02_shared_routes``."""
    from scipy.stats import hypergeom

    if units < 1:
        raise ValueError(f"units must be at least 1, got {units}")
    rows = []
    for a, b in combinations(list(sets_by_domain), 2):
        set_a, set_b = set(sets_by_domain[a]), set(sets_by_domain[b])
        if max(len(set_a), len(set_b)) > units:
            raise ValueError(f"a set of {max(len(set_a), len(set_b))} units cannot come from {units} units")
        shared = len(set_a & set_b)
        rows.append({"a": a, "b": b, "size_a": len(set_a), "size_b": len(set_b), "shared": shared,
                     "jaccard": jaccard(set_a, set_b), "chance_shared": len(set_a) * len(set_b) / units,
                     "p_value": float(hypergeom.sf(shared - 1, units, len(set_a), len(set_b)))})
    return pd.DataFrame(rows, columns=["a", "b", "size_a", "size_b", "shared", "jaccard", "chance_shared",
                                       "p_value"])


def chance_jaccard(q: float) -> float:
    """Jaccard index expected by chance for two independent random sets that each hold a fraction
    ``q`` of the same units: E|A∩B| / E|A∪B| = q / (2 - q) (about 0.053 at q = 0.1)."""
    if not 0 < q <= 1:
        raise ValueError(f"q must be in (0, 1], got {q}")
    return q / (2 - q)


# --------------------------------------------------------------------------------------------------
# Ablation: a causal test of sharing
# --------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def ablate_channels(model: nn.Module, channels: set[Channel] | Sequence[Channel], mode: str = "zero",
                    means: Mapping[str, torch.Tensor] | None = None) -> Iterator[nn.Module]:
    """Within the ``with`` block, replace the chosen MLP channels' intermediate activations (the input of
    ``down_proj``, shape (..., intermediate_size)) by 0 (``mode="zero"``) or by ``means[layer][index]``
    (``mode="mean"``, e.g. :attr:`RouteActivity.channel_means`), at every token and every forward call,
    generation included. The hooks run before any other pre-hook on ``down_proj`` and are removed on
    exit, also after an error. Yields the model."""
    if mode not in ABLATION_MODES:
        raise ValueError(f"mode must be one of {ABLATION_MODES}, got {mode!r}")
    layers = decoder_layers(model)
    by_layer = _check_channels(channels, {n: l.mlp.down_proj.in_features for n, l in layers.items()})
    if mode == "mean":
        if means is None:
            raise ValueError("mode='mean' needs means: per layer a tensor (intermediate_size,)")
        for layer in by_layer:
            size = layers[layer].mlp.down_proj.in_features
            if layer not in means or tuple(means[layer].shape) != (size,):
                raise ValueError(f"means must hold a tensor of shape ({size},) for layer {layer!r}")

    def patch(indices: torch.Tensor, values: torch.Tensor | None):
        def hook(module, args):
            x = args[0].clone()
            idx = indices.to(x.device)
            if values is None:
                x[..., idx] = 0
            else:
                x[..., idx] = values.to(device=x.device, dtype=x.dtype)
            return (x, *args[1:])
        return hook

    handles = []
    try:
        for layer, indices in by_layer.items():
            idx = torch.tensor(indices, dtype=torch.long)
            values = None if mode == "zero" else means[layer].detach()[idx]
            handles.append(layers[layer].mlp.down_proj.register_forward_pre_hook(patch(idx, values), prepend=True))
        yield model
    finally:
        for handle in handles:
            handle.remove()


def random_channels(model_or_sizes: nn.Module | Mapping[str, int],
                    count: int | Mapping[str, int] | set[Channel], *, seed: int,
                    exclude: set[Channel] | Sequence[Channel] = ()) -> set[Channel]:
    """A seeded random control set of MLP channels, none of them in ``exclude``.

    ``count``: a set of channels (draw the same number in each of its layers: the matched control),
    a mapping layer -> number, or an int (that many drawn uniformly from all layers together).
    ``model_or_sizes``: a model or a mapping layer -> intermediate size.
    """
    sizes = channel_counts(model_or_sizes) if isinstance(model_or_sizes, nn.Module) else dict(model_or_sizes)
    excluded = _check_channels(exclude, sizes)
    generator = torch.Generator().manual_seed(int(seed))

    def free(layer: str) -> list[int]:
        taken = set(excluded.get(layer, ()))
        return [i for i in range(sizes[layer]) if i not in taken]

    if isinstance(count, int):
        pool = [(layer, i) for layer in sizes for i in free(layer)]
        if not 0 <= count <= len(pool):
            raise ValueError(f"cannot draw {count} channels from {len(pool)} available")
        order = torch.randperm(len(pool), generator=generator)[:count]
        return {pool[i] for i in order.tolist()}
    if isinstance(count, Mapping):
        per_layer = dict(count)
    else:
        per_layer = {layer: len(indices) for layer, indices in _check_channels(count, sizes).items()}
    chosen: set[Channel] = set()
    for layer in sizes:  # a fixed layer order keeps the draw independent of the mapping's order
        n = per_layer.pop(layer, 0)
        available = free(layer)
        if not 0 <= n <= len(available):
            raise ValueError(f"cannot draw {n} channels in {layer!r}: {len(available)} available")
        order = torch.randperm(len(available), generator=generator)[:n]
        chosen |= {(layer, available[i]) for i in order.tolist()}
    if per_layer:
        raise ValueError(f"unknown layers {sorted(per_layer)}; the layers are {sorted(sizes)}")
    return chosen


def activation_bins(values: torch.Tensor, bins: int) -> torch.Tensor:
    """Each entry's quantile bin among ``values`` (shape (n,)): 0 (lowest) to ``bins - 1`` (highest), by rank,
    ties broken by index, so every bin holds n / bins entries (within one)."""
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    n = values.numel()
    ranks = torch.empty(n, dtype=torch.long)
    ranks[torch.argsort(values.double(), stable=True)] = torch.arange(n)
    return ranks * bins // n


def matched_random_channels(activity: Mapping[str, torch.Tensor], channels: set[Channel] | Sequence[Channel], *,
                            seed: int, bins: int, exclude: set[Channel] | Sequence[Channel] = ()) -> set[Channel]:
    """A seeded random control set matched to ``channels`` in layer *and* activation: for each channel of
    the set (highest activation first), one random channel of the same layer from the same quantile bin
    of ``activity`` (:func:`activation_bins` within the layer; the nearest bin with a free channel when
    that one is used up, the nearer of two equally near at random), never a channel of the set or of
    ``exclude``, never twice. ``activity``: layer -> per-channel activation (shape (channels,), e.g. the
    token-weighted mean |activation| of the domains the set was chosen for). Introduced in
    ``02_shared_routes``: C4's control, so that "the shared channels matter" is not just "busy channels
    matter"."""
    sizes = {layer: values.numel() for layer, values in activity.items()}
    wanted = _check_channels(channels, sizes)
    taken = set(_as_channels(exclude, sizes)) | {(layer, i) for layer, idx in wanted.items() for i in idx}
    generator = torch.Generator().manual_seed(int(seed))
    chosen: set[Channel] = set()
    for layer in sizes:  # a fixed layer order keeps the draw independent of the set's order
        if not wanted.get(layer):
            continue
        values = activity[layer].double()
        bin_of = activation_bins(values, bins).tolist()
        pools: dict[int, list[int]] = {}
        for i in range(sizes[layer]):
            if (layer, i) not in taken:
                pools.setdefault(bin_of[i], []).append(i)
        for index in sorted(wanted[layer], key=lambda i: (-float(values[i]), i)):
            home = bin_of[index]
            for distance in range(bins):
                near = [b for b in dict.fromkeys((home - distance, home + distance)) if pools.get(b)]
                if near:
                    break
            else:
                raise ValueError(f"cannot draw {len(wanted[layer])} channels in {layer!r}: too few free channels")
            pick = near[int(torch.randint(len(near), (1,), generator=generator))]
            pool = pools[pick]
            chosen.add((layer, pool.pop(int(torch.randint(len(pool), (1,), generator=generator)))))
    return chosen


def _as_channels(channels, sizes) -> list[Channel]:
    return [(layer, i) for layer, idx in _check_channels(channels, sizes).items() for i in idx]


def set_activation(activity: Mapping[str, torch.Tensor], channels: set[Channel] | Sequence[Channel]) -> float:
    """The mean of ``activity`` (layer -> per-channel values) over ``channels``: how busy a channel set is."""
    values = [float(activity[layer][i]) for layer, i in channels]
    if not values:
        raise ValueError("channels is empty")
    return float(np.mean(values))


def ablation_effects(model: nn.Module, tokenizer: PreTrainedTokenizerBase, evals: Mapping,
                     channel_sets: Mapping[str, set[Channel]], *, max_new_tokens: int, mode: str = "zero",
                     means: Mapping[str, torch.Tensor] | None = None) -> pd.DataFrame:
    """Every domain's greedy score with each channel set ablated, next to the unablated score.

    ``evals`` as :func:`mdrl_lib.evaluation.score_domains` takes them (name -> (domain, examples)).
    One row per (set, domain): ``ablated`` (the set's name), ``channels`` (its size), ``domain``,
    ``n``, ``score``, ``se``, ``base_score``, ``base_se`` and ``change`` = score - base_score.
    """
    from mdrl_lib.evaluation import score_domains  # scoring lives with evaluation; imported late on purpose

    if not channel_sets:
        raise ValueError("no channel sets to ablate")
    sizes = channel_counts(model)
    for name, channels in channel_sets.items():
        try:
            _check_channels(channels, sizes)
        except (TypeError, ValueError) as error:
            raise ValueError(f"channel set {name!r}: {error}") from None
    base = score_domains(model, tokenizer, evals, max_new_tokens=max_new_tokens).set_index("domain")
    frames = []
    for name, channels in channel_sets.items():
        with ablate_channels(model, channels, mode=mode, means=means):
            scores = score_domains(model, tokenizer, evals, max_new_tokens=max_new_tokens)
        scores.insert(0, "channels", len(set(channels)))
        scores.insert(0, "ablated", name)
        scores["base_score"] = scores["domain"].map(base["score"])
        scores["base_se"] = scores["domain"].map(base["se"])
        scores["change"] = scores["score"] - scores["base_score"]
        frames.append(scores)
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------------------------------
# Gradient geometry
# --------------------------------------------------------------------------------------------------

def module_of(parameter_name: str, embeddings: bool = False) -> str:
    """The module group a parameter belongs to: ``"<layer>.self_attn"`` (q, k, v, o projections with
    their biases), ``"<layer>.mlp"`` (gate, up, down) or ``"other"`` (embeddings, every RMSNorm, an
    untied lm_head). With ``embeddings=True`` the token embeddings and an untied ``lm_head`` form a
    group of their own, :data:`EMBEDDINGS`, and ``"other"`` keeps the norms (notebook ``02``'s C3 check
    reads every module, the embeddings included)."""
    match = _BLOCK.match(parameter_name)
    if match:
        return f"{match['layer']}.{match['block']}"
    return EMBEDDINGS if embeddings and _EMBEDDING.search(parameter_name) else OTHER


def _module_order(modules) -> list[str]:
    """Blocks in forward order, then the embeddings, then ``"other"`` (a stable sort)."""
    return sorted(modules, key=lambda m: (m == EMBEDDINGS) + 2 * (m == OTHER))


def module_gradients(loss_fn: Callable[[nn.Module], torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """The gradient of ``loss_fn(model)`` (a scalar), split by module: name -> flat fp32 gradient.

    Groups (see :func:`module_of`): one per attention block (``"model.layers.<i>.self_attn"``), one per
    MLP block (``"model.layers.<i>.mlp"``), in the order ``named_parameters`` meets them, then
    ``"other"``; within a group the parameters are
    concatenated in ``named_parameters`` order (tied weights once). Parameters that do not require
    grad are left out; parameters the loss does not reach get zeros. The model's ``.grad`` fields are
    not touched, and its train/eval mode is whatever ``loss_fn`` leaves it in. Memory: one fp32 copy
    of the gradient (4 bytes a parameter, 16 GB for a 4B model) on the parameters' device.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the model has no parameters that require grad")
    loss = loss_fn(model)
    if not (isinstance(loss, torch.Tensor) and loss.dim() == 0):
        raise TypeError(f"loss_fn must return a scalar tensor, got {type(loss).__name__} "
                        f"{tuple(loss.shape) if isinstance(loss, torch.Tensor) else ''}")
    grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    pieces: dict[str, list[torch.Tensor]] = {}
    for (name, parameter), grad in zip(named, grads):
        flat = torch.zeros(parameter.numel(), dtype=torch.float32, device=parameter.device) if grad is None \
            else grad.detach().float().flatten()
        pieces.setdefault(module_of(name), []).append(flat)
    ordered = sorted(pieces, key=lambda m: m == OTHER)  # stable: blocks in forward order, then "other"
    return {module: torch.cat(pieces[module]) for module in ordered}


@dataclass(frozen=True)
class GradientComparison:
    """Two gradients compared globally and module by module (see :func:`gradient_cosines`).

    ``modules`` has one row per module: ``module``, ``kind`` (attention, mlp, other), ``size``,
    ``cosine``, ``dot``, ``norm_a``, ``norm_b``, ``contribution`` (dot / (|a| |b|): these add up to
    the global cosine) and ``share`` (dot / sum of |dot| over modules: the module's signed part of the
    gross inner product; the shares' absolute values add up to 1).
    """

    cosine: float
    dot: float
    norm_a: float
    norm_b: float
    modules: pd.DataFrame

    @property
    def positive(self) -> float:
        """Sum of the positive module contributions to the global cosine."""
        return float(self.modules["contribution"].clip(lower=0).sum())

    @property
    def negative(self) -> float:
        """Sum of the negative module contributions to the global cosine (<= 0)."""
        return float(self.modules["contribution"].clip(upper=0).sum())

    @property
    def cancellation(self) -> float:
        """1 - |global dot| / sum of |module dots|: 0 when every module agrees in sign, near 1 when
        cooperating and conflicting modules cancel to a near-orthogonal global gradient."""
        gross = float(self.modules["dot"].abs().sum())
        return 1.0 - abs(self.dot) / gross if gross > 0 else 0.0

    def cosine_without(self, *modules: str) -> float:
        """The global cosine over every module but ``modules`` (e.g. :data:`EMBEDDINGS`): the sum of the
        other modules' dots over the product of their joint norms. Introduced in ``02_shared_routes``."""
        unknown = sorted(set(modules) - set(self.modules["module"]))
        if unknown:
            raise ValueError(f"unknown module(s) {unknown}; the modules are {list(self.modules['module'])}")
        kept = self.modules[~self.modules["module"].isin(modules)]
        return _cosine(float(kept["dot"].sum()), math.sqrt(float((kept["norm_a"] ** 2).sum())),
                       math.sqrt(float((kept["norm_b"] ** 2).sum())))


def _cosine(dot: float, norm_a: float, norm_b: float) -> float:
    return dot / (norm_a * norm_b) if norm_a > 0 and norm_b > 0 else math.nan


def gradient_cosines(grads_a: Mapping[str, torch.Tensor], grads_b: Mapping[str, torch.Tensor]) -> GradientComparison:
    """Global and per-module cosine of two gradients split by :func:`module_gradients`.

    The global inner product is the sum of the module inner products, so each module's
    ``contribution`` = dot_m / (|a| |b|) adds up to the global cosine: a near-zero global cosine can
    hide modules that conflict (negative) and cooperate (positive) and cancel. A module's share of the
    global dot itself (dot_m / dot) is ill-conditioned exactly when the global dot is near 0, hence
    the two normalisations above. Noise floor: the cosine of two independent batches of the *same*
    domain, computed with this same function, says how large a cosine sampling noise alone gives.
    """
    if set(grads_a) != set(grads_b):
        raise ValueError(f"the gradients split into different modules: {sorted(set(grads_a) ^ set(grads_b))}")
    rows = []
    for module in grads_a:
        a, b = grads_a[module].double(), grads_b[module].double()
        if a.shape != b.shape:
            raise ValueError(f"module {module!r} has {a.numel()} entries in one gradient and {b.numel()} in the other")
        dot, na, nb = float(a @ b), float(a.norm()), float(b.norm())
        kind = module if module in (OTHER, EMBEDDINGS) else ("attention" if module.endswith("self_attn") else "mlp")
        rows.append({"module": module, "kind": kind, "size": a.numel(), "cosine": _cosine(dot, na, nb),
                     "dot": dot, "norm_a": na, "norm_b": nb})
    modules = pd.DataFrame(rows)
    dot = float(modules["dot"].sum())
    norm_a = math.sqrt(float((modules["norm_a"] ** 2).sum()))
    norm_b = math.sqrt(float((modules["norm_b"] ** 2).sum()))
    scale = norm_a * norm_b
    modules["contribution"] = modules["dot"] / scale if scale > 0 else math.nan
    gross = float(modules["dot"].abs().sum())
    modules["share"] = modules["dot"] / gross if gross > 0 else math.nan
    return GradientComparison(cosine=_cosine(dot, norm_a, norm_b), dot=dot, norm_a=norm_a, norm_b=norm_b,
                              modules=modules)


def _ranked(comparison: GradientComparison, k: int, by: str, include_other: bool, ascending: bool) -> pd.DataFrame:
    if by not in ("cosine", "contribution"):
        raise ValueError(f"by must be 'cosine' or 'contribution', got {by!r}")
    table = comparison.modules if include_other else comparison.modules[comparison.modules["kind"] != OTHER]
    return table.sort_values(by, ascending=ascending, kind="stable").head(k).reset_index(drop=True)


def most_conflicting(comparison: GradientComparison, k: int = 1, by: str = "cosine",
                     include_other: bool = False) -> pd.DataFrame:
    """The ``k`` attention/MLP modules with the lowest ``by`` (cosine or contribution), lowest first."""
    return _ranked(comparison, k, by, include_other, ascending=True)


def most_synergistic(comparison: GradientComparison, k: int = 1, by: str = "cosine",
                     include_other: bool = False) -> pd.DataFrame:
    """The ``k`` attention/MLP modules with the highest ``by`` (cosine or contribution), highest first."""
    return _ranked(comparison, k, by, include_other, ascending=False)


# --------------------------------------------------------------------------------------------------
# Update directions on shared routes
# --------------------------------------------------------------------------------------------------

def route_coordinate_mask(model_or_shapes: nn.Module | Mapping[str, torch.Tensor | Sequence[int]],
                          channels: set[Channel] | Sequence[Channel]) -> dict[str, torch.Tensor]:
    """Boolean masks of the weight coordinates that belong to the chosen MLP channels: for channel
    (layer, c), row c of ``<layer>.mlp.gate_proj.weight`` and ``up_proj.weight`` (shape
    (intermediate, hidden)) and column c of ``down_proj.weight`` (shape (hidden, intermediate)).

    ``model_or_shapes``: a model (its state dict names) or a mapping name -> tensor or shape (e.g. a
    delta dict). Returns a mask for every MLP projection weight found, all False in unchosen layers;
    other tensors get no mask (all their coordinates count as elsewhere).
    """
    if isinstance(model_or_shapes, nn.Module):
        shapes = {name: tuple(t.shape) for name, t in model_or_shapes.state_dict().items()}
    else:
        shapes = {name: tuple(v.shape) if isinstance(v, torch.Tensor) else tuple(v)
                  for name, v in model_or_shapes.items()}
    masks: dict[str, torch.Tensor] = {}
    sizes: dict[str, int] = {}
    for name, shape in shapes.items():
        match = _MLP_WEIGHT.match(name)
        if match:
            masks[name] = torch.zeros(shape, dtype=torch.bool)
            sizes[match["layer"]] = shape[1] if match["proj"] == "down_proj" else shape[0]
    if not masks:
        raise ValueError("no MLP gate/up/down projection weights found (expected names like "
                         "'model.layers.0.mlp.gate_proj.weight')")
    for layer, indices in _check_channels(channels, sizes).items():
        idx = torch.tensor(indices, dtype=torch.long)
        for proj in ("gate_proj", "up_proj", "down_proj"):
            name = f"{layer}.mlp.{proj}.weight"
            if name not in masks:
                raise ValueError(f"layer {layer!r} has no {name}")
            if proj == "down_proj":
                masks[name][:, idx] = True
            else:
                masks[name][idx, :] = True
    return masks


@dataclass(frozen=True)
class MaskedCosine:
    """Cosine of two deltas on the masked coordinates (``on``) and on all the others (``off``), with
    how many coordinates each holds; nan where either delta is zero there."""

    on: float
    off: float
    on_size: int
    off_size: int


def delta_cosine_on_coordinates(delta_a: Mapping[str, torch.Tensor], delta_b: Mapping[str, torch.Tensor],
                                mask: Mapping[str, torch.Tensor]) -> MaskedCosine:
    """Do two experts' weight deltas (name -> tensor, e.g. ``after - before`` from
    :func:`mdrl_lib.edits.paired_tensors`) point the same way on shared routes? Cosine over the
    coordinates where ``mask`` is True (see :func:`route_coordinate_mask`) and over the rest, across
    every tensor both deltas hold; a tensor without a mask counts wholly as the rest."""
    names = [n for n in delta_a if n in delta_b]
    if not names:
        raise ValueError("the two deltas share no tensor names")
    unknown = sorted(set(mask) - set(names))
    if unknown:
        raise ValueError(f"mask names not in both deltas: {unknown[:5]}")
    totals = {"on": [0.0, 0.0, 0.0, 0], "off": [0.0, 0.0, 0.0, 0]}  # dot, |a|^2, |b|^2, size
    for name in names:
        a, b = delta_a[name].double(), delta_b[name].double()
        if a.shape != b.shape:
            raise ValueError(f"{name} has shape {tuple(a.shape)} in one delta and {tuple(b.shape)} in the other")
        m = mask.get(name)
        if m is None:
            m = torch.zeros(a.shape, dtype=torch.bool)
        elif tuple(m.shape) != tuple(a.shape):
            raise ValueError(f"mask of {name} has shape {tuple(m.shape)}, the delta {tuple(a.shape)}")
        m = m.to(a.device)
        for part, select in (("on", m), ("off", ~m)):
            x, y = a[select], b[select]
            total = totals[part]
            total[0] += float(x @ y)
            total[1] += float(x @ x)
            total[2] += float(y @ y)
            total[3] += x.numel()
    on, off = totals["on"], totals["off"]
    return MaskedCosine(on=_cosine(on[0], math.sqrt(on[1]), math.sqrt(on[2])),
                        off=_cosine(off[0], math.sqrt(off[1]), math.sqrt(off[2])),
                        on_size=on[3], off_size=off[3])


# --------------------------------------------------------------------------------------------------
# Notebook 02's analyses as cached artifacts (specs), and what the notebook computes from them
# --------------------------------------------------------------------------------------------------

ACTIVITY_FILE = "activity.safetensors"
ABLATION_ITEMS = "ablation_items.jsonl"
GRADIENT_FILE = "gradient.safetensors"
ROWS_FILE = "rows.json"
RANDOM_DRAWS = 20  # random channel sets per pair behind the "on random channels" mean and sd
ABLATIONS: tuple[str, ...] = ("only", "shared")


def channel_sizes(activity: RouteActivity) -> dict[str, int]:
    """Layer -> number of MLP channels, in layer order, read off a :class:`RouteActivity`."""
    return {layer: values.numel() for layer, values in activity.channels.items()}


def off_diagonal(matrix: pd.DataFrame) -> pd.DataFrame:
    """A square table with its diagonal blanked (a set overlaps itself fully; that says nothing)."""
    return matrix.where(~np.eye(len(matrix), dtype=bool))


def ablation_channels(answer_sets: Mapping[str, set[Channel]], ablate: str,
                      domains: Sequence[str] = ()) -> tuple[set[Channel], tuple[str, ...]]:
    """The channels a causal test switches off, and the domain(s) they belong to.

    ``answer_sets``: each domain's active route (answer positions). ``ablate="only"``: the channels in
    ``domains[0]``'s route and in no other domain's. ``ablate="shared"``: the channels in the routes of both
    ``domains``; with ``domains`` empty, of the pair whose routes overlap most (largest Jaccard index, the
    first pair in domain order on ties). Introduced in ``02_shared_routes``."""
    if ablate not in ABLATIONS:
        raise ValueError(f"ablate must be one of {ABLATIONS}, got {ablate!r}")
    domains = tuple(domains)
    if ablate == "only":
        target = domains[0]
        elsewhere = set().union(*(channels for n, channels in answer_sets.items() if n != target))
        return set(answer_sets[target]) - elsewhere, (target,)
    if not domains:
        domains = max(combinations(answer_sets, 2),
                      key=lambda pair: jaccard(set(answer_sets[pair[0]]), set(answer_sets[pair[1]])))
    return set(answer_sets[domains[0]]) & set(answer_sets[domains[1]]), domains


def token_weighted_means(activities: Sequence[RouteActivity]) -> dict[str, torch.Tensor]:
    """Per layer, the signed mean activation of each channel over every domain's tokens together (each
    domain's :attr:`RouteActivity.channel_means` weighted by its token count): what ``mode="mean"``
    ablation patches in."""
    tokens = sum(a.tokens for a in activities)
    return {layer: sum(a.channel_means[layer] * a.tokens for a in activities) / tokens
            for layer in activities[0].channel_means}


def split_by_module(gradient: Mapping[str, torch.Tensor], embeddings: bool = False) -> dict[str, torch.Tensor]:
    """A gradient by parameter name (in ``named_parameters`` order, e.g. ``DomainObjective.gradient``) split
    as :func:`module_gradients` splits it: module -> flat fp32 vector, blocks in order, then ``"other"``;
    with ``embeddings=True`` the embeddings form their own module (:func:`module_of`), before ``"other"``."""
    pieces: dict[str, list[torch.Tensor]] = {}
    for name, grad in gradient.items():
        pieces.setdefault(module_of(name, embeddings), []).append(grad.detach().float().flatten())
    return {module: torch.cat(pieces[module]) for module in _module_order(pieces)}


def row_contributions(grad_a: Mapping[str, torch.Tensor], grad_b: Mapping[str, torch.Tensor],
                      embeddings: bool = True) -> dict[str, torch.Tensor]:
    """Per module (:func:`module_of`), each unit's share of the module cosine: a unit is one row (first
    index) of a weight matrix (an output channel, a token's embedding row) or one entry of a vector (a
    bias, a norm's scale); its value is the unit's dot a_u . b_u over |a_m| |b_m|, so a module's values add
    up to its cosine. ``grad_a``, ``grad_b``: two gradients by parameter name with the same names and
    shapes. Returns module -> float64 vector (units,). Introduced in ``02_shared_routes`` (C3's null)."""
    if list(grad_a) != list(grad_b):
        raise ValueError(f"the gradients name different parameters: {sorted(set(grad_a) ^ set(grad_b))[:5]}")
    dots: dict[str, list[torch.Tensor]] = {}
    norms: dict[str, list[float]] = {}
    for name, a in grad_a.items():
        a, b = a.detach().double(), grad_b[name].detach().double()
        if a.shape != b.shape:
            raise ValueError(f"parameter {name!r} has shape {tuple(a.shape)} in one gradient and {tuple(b.shape)} "
                             f"in the other")
        rows = (a * b).reshape(a.shape[0], -1).sum(dim=1) if a.dim() > 1 else a * b
        module = module_of(name, embeddings)
        dots.setdefault(module, []).append(rows)
        norms.setdefault(module, [0.0, 0.0])
        norms[module][0] += float(a.pow(2).sum())
        norms[module][1] += float(b.pow(2).sum())
    out = {}
    for module in _module_order(dots):
        scale = math.sqrt(norms[module][0] * norms[module][1])
        out[module] = torch.cat(dots[module]) / scale if scale > 0 else torch.zeros(sum(d.numel() for d in dots[module]),
                                                                                     dtype=torch.float64)
    return out


@dataclass(frozen=True)
class ModuleNull:
    """The sign-flip null of the largest standardized |module cosine| (see :func:`module_cosine_null`).

    ``observed``: module -> its cosine averaged over replicates; ``null_sd``: module -> the sd of its own
    null cosine; ``null_max``: per draw, the largest |null cosine| / null sd over modules (shape (draws,)).
    Standardizing first keeps a module with few, large units (the norms) from setting everyone's bar."""

    observed: dict[str, float]
    null_max: np.ndarray
    null_sd: dict[str, float]

    def z(self) -> dict[str, float]:
        """Module -> |observed cosine| / its null sd (``inf`` where the null sd is 0 and the cosine is not)."""
        return {m: (abs(v) / self.null_sd[m] if self.null_sd[m] > 0 else (math.inf if v else 0.0))
                for m, v in self.observed.items()}

    def threshold(self, level: float) -> float:
        """The ``level`` quantile of the null's maximum (in null sds): a module beyond it is beyond what the
        most extreme of all modules reaches by chance with probability ``1 - level`` (family-wise)."""
        if not 0 < level < 1:
            raise ValueError(f"level must be in (0, 1), got {level}")
        return float(np.quantile(self.null_max, level))

    def bands(self, level: float) -> dict[str, float]:
        """Module -> the |cosine| it must exceed to be beyond chance at ``level``: threshold x its null sd."""
        q = self.threshold(level)
        return {m: q * sd for m, sd in self.null_sd.items()}

    def p_values(self) -> dict[str, float]:
        """Module -> the share of draws whose largest standardized |cosine| reaches the module's, the observed
        draw counted ((1 + hits) / (1 + draws)): a p-value adjusted for the max over modules."""
        n = len(self.null_max)
        return {m: float((1 + np.sum(self.null_max >= z)) / (1 + n)) for m, z in self.z().items()}


def module_cosine_null(pairs: Sequence[tuple[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]]], *,
                       draws: int, seed: int, embeddings: bool = True,
                       modules: Sequence[str] | None = None) -> ModuleNull:
    """A permutation (sign-flip) null for "a module conflicts or cooperates", on stored gradients.

    ``pairs``: one (gradient of domain A, gradient of domain B) per batch replicate, by parameter name.
    Each module's cosine, averaged over replicates, is the sum of its units' contributions
    (:func:`row_contributions`). Under the null that A's and B's gradients are unrelated within a module,
    each unit's contribution is as likely to be positive as negative; a draw gives every unit a random
    sign (the same sign on every replicate: a unit is one set of weights). Each module's null cosine is
    divided by its sd over the draws, and a draw records the largest |standardized cosine| over
    ``modules`` (default: all): the null of the most extreme module. ``draws`` >= 100; arithmetic only,
    under a second at toy scale. Introduced in ``02_shared_routes`` (C3).
    """
    if draws < 100:
        raise ValueError(f"draws must be at least 100 for a null of a maximum, got {draws}")
    if not pairs:
        raise ValueError("pairs is empty: give one (gradient A, gradient B) per replicate")
    per_replicate = [row_contributions(a, b, embeddings) for a, b in pairs]
    names = list(per_replicate[0]) if modules is None else list(modules)
    missing = sorted(set(names) - set(per_replicate[0]))
    if missing:
        raise ValueError(f"unknown module(s) {missing}; the modules are {list(per_replicate[0])}")
    generator = torch.Generator().manual_seed(int(seed))
    observed, null_sd, null = {}, {}, []
    for module in names:
        stacked = torch.stack([r[module] for r in per_replicate]).mean(dim=0)  # (units,): averaged over replicates
        observed[module] = float(stacked.sum())
        signs = torch.randint(0, 2, (draws, stacked.numel()), generator=generator, dtype=torch.int8).double() * 2 - 1
        values = signs @ stacked
        sd = float(values.std())
        null_sd[module] = sd
        null.append(values.abs() / sd if sd > 0 else torch.zeros(draws, dtype=torch.float64))
    return ModuleNull(observed=observed, null_max=torch.stack(null).max(dim=0).values.numpy(), null_sd=null_sd)


def on_channels(first: Mapping[str, torch.Tensor], second: Mapping[str, torch.Tensor],
                channels: set[Channel]) -> MaskedCosine:
    """Cosine of two name -> tensor maps (gradients, weight deltas) on the weights of ``channels``, and on
    every other coordinate (:func:`route_coordinate_mask`, :func:`delta_cosine_on_coordinates`)."""
    return delta_cosine_on_coordinates(first, second, route_coordinate_mask(first, channels))


def on_random_channels(first: Mapping[str, torch.Tensor], second: Mapping[str, torch.Tensor],
                       channels: set[Channel], sizes: Mapping[str, int], *, seed: int,
                       draws: int = RANDOM_DRAWS) -> tuple[float, float]:
    """Mean and standard deviation (ddof 1) of the cosine on ``draws`` random channel sets with the
    per-layer counts of ``channels`` and none of them (seeds ``seed``, ``seed + 1``, ...)."""
    values = [on_channels(first, second, random_channels(sizes, channels, seed=seed + k, exclude=channels)).on
              for k in range(draws)]
    return float(np.mean(values)), float(np.std(values, ddof=1))


@dataclass(frozen=True)
class GradientGeometry:
    """Gradient geometry of the domain objectives (notebook ``02_shared_routes``, section 3).

    ``floors[n]``: domain n's batch 0 against its batch 1 (the noise floor); ``comparisons[(a, b)]``: one
    :class:`GradientComparison` per replicate r (a's batch r against b's), pairs in domain order."""

    floors: dict[str, GradientComparison]
    comparisons: dict[tuple[str, str], list[GradientComparison]]
    replicates: tuple[int, ...]

    @classmethod
    def of(cls, gradients: Mapping[tuple[str, int], Mapping[str, torch.Tensor]],
           replicates: Sequence[int] = (0, 1), embeddings: bool = False) -> "GradientGeometry":
        """From each (domain, replicate)'s gradient by parameter name (:func:`split_by_module` splits it;
        ``embeddings=True`` gives the embeddings their own module, :data:`EMBEDDINGS`); the noise floors
        compare the first two replicates."""
        split = {k: split_by_module(g, embeddings) for k, g in gradients.items()}
        domains = list(dict.fromkeys(n for n, _ in split))
        first, second = replicates[0], replicates[1]
        floors = {n: gradient_cosines(split[(n, first)], split[(n, second)]) for n in domains}
        comparisons = {(a, b): [gradient_cosines(split[(a, r)], split[(b, r)]) for r in replicates]
                       for a, b in combinations(domains, 2)}
        return cls(floors, comparisons, tuple(replicates))

    def pair(self, x: str, y: str) -> list[GradientComparison]:
        """The replicates' comparisons of ``x`` and ``y``, in either order."""
        return self.comparisons[(x, y)] if (x, y) in self.comparisons else self.comparisons[(y, x)]

    def noise_floor(self, x: str, y: str) -> float:
        """The smaller of the two domains' global same-domain cosines."""
        return min(self.floors[x].cosine, self.floors[y].cosine)

    def module_floors(self, x: str, y: str) -> pd.Series:
        """Per module, the smaller of the two domains' same-domain (two-batch) cosines."""
        return pd.concat([self.floors[n].modules.set_index("module")["cosine"] for n in (x, y)], axis=1).min(axis=1)

    def replicate_modules(self, x: str, y: str) -> pd.DataFrame:
        """Every replicate's module rows (:attr:`GradientComparison.modules`) with ``replicate`` = "batch r"."""
        return pd.concat([c.modules.assign(replicate=f"batch {r}") for r, c in zip(self.replicates, self.pair(x, y))])

    def module_table(self, x: str, y: str, every_module: bool = False) -> pd.DataFrame:
        """Per attention/MLP module (``every_module``: the embeddings and ``"other"`` too), its cosine and
        contribution on each replicate: mean, min and max."""
        frame = pd.concat([c.modules.assign(replicate=r) for r, c in zip(self.replicates, self.pair(x, y))])
        if not every_module:
            frame = frame[~frame["kind"].isin((OTHER, EMBEDDINGS))]
        table = frame.groupby("module", sort=False)[["cosine", "contribution"]].agg(["mean", "min", "max"])
        table.columns = [f"{value} ({stat})" for value, stat in table.columns]
        return table

    def module_cosines(self, x: str, y: str, every_module: bool = False) -> dict[str, list[float]]:
        """Attention/MLP module (``every_module``: every module) -> its cross-domain cosine on each replicate."""
        reps = self.pair(x, y)
        return {m: [float(c.modules.set_index("module").loc[m, "cosine"]) for c in reps]
                for m in self.module_table(x, y, every_module).index}

    def global_cosines_without(self, x: str, y: str, *modules: str) -> list[float]:
        """Per replicate, the global cosine over every module but ``modules`` (:meth:`GradientComparison.cosine_without`)."""
        return [c.cosine_without(*modules) for c in self.pair(x, y)]

    def cancellation(self, x: str, y: str) -> float:
        """The mean over replicates of :attr:`GradientComparison.cancellation`."""
        return float(np.mean([c.cancellation for c in self.pair(x, y)]))

    def cosine_matrix(self) -> pd.DataFrame:
        """Domain x domain: the mean cross-domain cosine over replicates off the diagonal, the noise floor on it."""
        names = list(self.floors)
        matrix = pd.DataFrame(np.nan, index=names, columns=names)
        for n, floor in self.floors.items():
            matrix.loc[n, n] = floor.cosine
        for (a, b), reps in self.comparisons.items():
            matrix.loc[a, b] = matrix.loc[b, a] = float(np.mean([c.cosine for c in reps]))
        return matrix


def _save_tensors(tensors: Mapping[str, torch.Tensor], path) -> None:
    from safetensors.torch import save_file

    save_file({n: t.detach().float().cpu().contiguous() for n, t in tensors.items()}, str(path))


def _load_tensors(path, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file in the order ``names`` gives (the file keeps them sorted)."""
    from safetensors.torch import load_file

    stored = load_file(str(path))
    return {name: stored[name] for name in names}


@dataclass(frozen=True)
class ChannelActivity(Spec):
    """``domain``'s mean MLP channel and attention head activity on ``model`` (:func:`route_activity`), over
    its first ``prompts`` RL training prompts with their reference answers appended, at ``positions``.
    Opens as a :class:`RouteActivity`. Introduced in ``02_shared_routes`` (active routes)."""

    model: Spec
    domain: str
    positions: str = "answer"
    prompts: int = 300
    kind: ClassVar[str] = "route_activity"

    def __post_init__(self) -> None:
        from mdrl_lib.config import ConfigError, Param

        object.__setattr__(self, "domain", check_domain(self.domain))
        if self.positions not in POSITIONS:
            raise ConfigError(f"activity positions: unknown value {self.positions!r}; valid: {', '.join(POSITIONS)}")
        Param(int, "", minimum=1, maximum=10**6).check("activity prompts", self.prompts)

    def inputs(self) -> tuple[Spec, ...]:
        return (self.model,)

    def key_fields(self, kit) -> dict:
        return {"model": kit.key(self.model), "domain": self.domain, "positions": self.positions,
                "prompts": self.prompts, "dtype": str(kit.compute_dtype).removeprefix("torch.")}

    def examples(self, kit) -> list:
        """The examples whose activity this spec averages (fewer than ``prompts`` if the split is shorter)."""
        return list(kit.splits(self.domain).train[:self.prompts])

    def build(self, kit, directory, progress: bool) -> dict:
        model, tokenizer = kit.load(self.model)
        examples = self.examples(kit)
        activity = route_activity(model, tokenizer, [e.prompt for e in examples], [e.answer for e in examples],
                                  positions=self.positions)
        tensors = {f"{part}/{layer}": values for part in ("channels", "channel_means", "heads")
                   for layer, values in getattr(activity, part).items()}
        _save_tensors(tensors, directory / ACTIVITY_FILE)
        return {"tokens": activity.tokens, "prompts": len(examples), "layers": list(activity.channels)}

    def open(self, kit, artifact) -> RouteActivity:
        layers = artifact.metrics["layers"]
        parts = {part: _load_tensors(artifact.path / ACTIVITY_FILE, [f"{part}/{layer}" for layer in layers])
                 for part in ("channels", "channel_means", "heads")}
        return RouteActivity(**{part: {layer: values[f"{part}/{layer}"] for layer in layers}
                                for part, values in parts.items()}, tokens=artifact.metrics["tokens"])

    def label(self) -> str:
        return f"{self.domain} {self.positions} activity of {self.model.label()}"

    def toy_seconds(self, config) -> float:
        return 0.3


def answer_activity_specs(model: Spec, prompts: int) -> tuple[ChannelActivity, ...]:
    """Every domain's answer-position :class:`ChannelActivity` on ``model``, in domain order."""
    return tuple(ChannelActivity(model, n, "answer", prompts) for n in DOMAIN_NAMES)


def answer_routes(kit, model: Spec, prompts: int, fraction: float) -> tuple[dict[str, set[Channel]], dict[str, int]]:
    """Each domain's active route at answer positions on ``model`` (its top ``fraction`` of channels) and
    the model's channels per layer, from the cached :class:`ChannelActivity` artifacts."""
    activity = {spec.domain: kit.open(spec) for spec in answer_activity_specs(model, prompts)}
    sizes = channel_sizes(next(iter(activity.values())))
    return {n: active_routes(a.channels, fraction) for n, a in activity.items()}, sizes


@dataclass(frozen=True)
class AblatedScores:
    """What an :class:`AblationScores` artifact opens as: ``items`` (domain, item, score, completion; one row
    per held-out item), the ablated ``channels`` (in layer order, then by index) and the ``domains`` they
    were chosen for."""

    items: pd.DataFrame
    channels: tuple[Channel, ...]
    domains: tuple[str, ...]


@dataclass(frozen=True)
class AblationScores(Spec):
    """Per-item greedy held-out scores of ``model`` with one set of MLP channels switched off
    (:func:`ablate_channels`). Introduced in ``02_shared_routes`` (the causal test of C4).

    The set (:func:`ablation_channels`, on each domain's top ``route_fraction`` of channels at answer
    positions over its first ``route_prompts`` RL prompts, :class:`ChannelActivity`): ``ablate="only"``,
    the channels only ``domains[0]`` uses; ``"shared"``, those both ``domains`` use (empty ``domains``: the
    pair sharing most). ``control``: instead, random channels with the set's per-layer counts and none of
    its channels (:func:`random_channels` with ``seed``). ``mode``: ``zero``, or ``mean`` (every domain's
    token-weighted mean at answer positions, :func:`token_weighted_means`)."""

    model: Spec
    ablate: str
    domains: tuple[str, ...] = ()
    control: bool = False
    seed: int = 0
    mode: str = "zero"
    route_fraction: float = 0.1
    route_prompts: int = 300
    kind: ClassVar[str] = "route_ablation"

    def __post_init__(self) -> None:
        from mdrl_lib.config import ConfigError

        object.__setattr__(self, "domains", tuple(check_domain(d) for d in self.domains))
        if self.ablate not in ABLATIONS:
            raise ConfigError(f"ablation ablate: unknown value {self.ablate!r}; valid: {', '.join(ABLATIONS)}")
        wanted = (1,) if self.ablate == "only" else (0, 2)
        if len(self.domains) not in wanted:
            raise ConfigError(f"ablation domains: {self.ablate!r} takes {' or '.join(map(str, wanted))} domain(s), "
                              f"got {self.domains!r}")
        if self.mode not in ABLATION_MODES:
            raise ConfigError(f"ablation mode: unknown value {self.mode!r}; valid: {', '.join(ABLATION_MODES)}")
        if not 0 < self.route_fraction <= 1:
            raise ConfigError(f"ablation route_fraction: expected a fraction in (0, 1], got {self.route_fraction!r}")

    def activity(self) -> tuple[ChannelActivity, ...]:
        return answer_activity_specs(self.model, self.route_prompts)

    def inputs(self) -> tuple[Spec, ...]:
        return (self.model, *self.activity())

    def key_fields(self, kit) -> dict:
        fields = {"model": kit.key(self.model), "activity": [kit.key(s) for s in self.activity()],
                  "ablate": self.ablate, "domains": list(self.domains), "control": self.control, "mode": self.mode,
                  "route_fraction": self.route_fraction, "max_new_tokens": kit.config.rl.max_completion_length,
                  "dtype": str(kit.compute_dtype).removeprefix("torch.")}
        if self.control:
            fields["seed"] = self.seed
        return fields

    def build(self, kit, directory, progress: bool) -> dict:
        from mdrl_lib.evaluation import score_items

        activity = [kit.open(s) for s in self.activity()]
        sizes = channel_sizes(activity[0])
        sets = {s.domain: active_routes(a.channels, self.route_fraction) for s, a in zip(self.activity(), activity)}
        channels, domains = ablation_channels(sets, self.ablate, self.domains)
        if self.control:
            channels = random_channels(sizes, channels, seed=self.seed, exclude=channels)
        model, tokenizer = kit.load(self.model)
        with ablate_channels(model, channels, mode=self.mode, means=token_weighted_means(activity)):
            items = score_items(model, tokenizer, kit.evals, max_new_tokens=kit.config.rl.max_completion_length,
                                batch_size=kit.config.compute.eval_batch_size or None)
        with open(directory / ABLATION_ITEMS, "w") as handle:
            for row in items[["domain", "item", "score", "completion"]].to_dict("records"):
                handle.write(json.dumps(row, sort_keys=True) + "\n")
        order = list(sizes)
        chosen = sorted(channels, key=lambda c: (order.index(c[0]), c[1]))
        return {"channels": [list(c) for c in chosen], "domains": list(domains),
                "scores": items.groupby("domain", sort=False)["score"].mean().round(6).to_dict()}

    def open(self, kit, artifact) -> AblatedScores:
        lines = (artifact.path / ABLATION_ITEMS).read_text().splitlines()
        items = pd.DataFrame([json.loads(line) for line in lines], columns=["domain", "item", "score", "completion"])
        metrics = artifact.metrics
        return AblatedScores(items=items, channels=tuple((layer, int(i)) for layer, i in metrics["channels"]),
                             domains=tuple(metrics["domains"]))

    def label(self) -> str:
        what = f"{'+'.join(self.domains) or 'most shared pair'} {self.ablate}"
        return f"{'random control of ' if self.control else ''}{what} channels ablated in {self.model.label()}"

    def toy_seconds(self, config) -> float:
        return 2.0


@dataclass(frozen=True)
class MatchedControls:
    """What a :class:`MatchedAblationControls` artifact opens as: ``items`` (domain, draw, item, score; one row
    per held-out item of each of the pair's domains and draw), the ablated set's ``shared`` channels, the
    pair (``domains``), and per domain the ``ratios`` of each draw's mean activation to the shared set's
    (in that domain) and the ``overlap`` (mean Jaccard index of two draws' channel sets)."""

    items: pd.DataFrame
    shared: tuple[Channel, ...]
    domains: tuple[str, ...]
    ratios: dict[str, list[float]]
    overlap: dict[str, float]


@dataclass(frozen=True)
class MatchedAblationControls(Spec):
    """C4's control: ``draws`` activation-matched random channel sets per domain of a pair, each ablated
    while ``model`` answers that domain's held-out items. Introduced in ``02_shared_routes``.

    The shared set is :class:`AblationScores`'s (``ablate="shared"``, ``domains`` or the pair sharing
    most, routes of the top ``route_fraction`` at answer positions over ``route_prompts`` prompts). For
    domain d of the pair, draw k is :func:`matched_random_channels` on d's mean |activation| at answer
    positions (``bins`` quantile bins per layer; seed ``seed + 1000 j + k`` for the pair's j-th domain):
    as many channels per layer, as busy in d, none shared. Scored on d alone (the other domain has its
    own matched draws), so the cost is ``draws`` x two domains' held-out sets."""

    model: Spec
    domains: tuple[str, ...] = ()
    draws: int = 10
    bins: int = 20
    seed: int = 0
    mode: str = "zero"
    route_fraction: float = 0.1
    route_prompts: int = 300
    kind: ClassVar[str] = "route_matched_controls"

    def __post_init__(self) -> None:
        from mdrl_lib.config import ConfigError

        object.__setattr__(self, "domains", tuple(check_domain(d) for d in self.domains))
        if len(self.domains) not in (0, 2):
            raise ConfigError(f"matched controls domains: a pair or none (the pair sharing most), got {self.domains!r}")
        if self.draws < 1 or self.bins < 1:
            raise ConfigError(f"matched controls: draws and bins must be at least 1, got {self.draws}, {self.bins}")
        if self.mode not in ABLATION_MODES:
            raise ConfigError(f"matched controls mode: unknown value {self.mode!r}; valid: {', '.join(ABLATION_MODES)}")

    def activity(self) -> tuple[ChannelActivity, ...]:
        return answer_activity_specs(self.model, self.route_prompts)

    def inputs(self) -> tuple[Spec, ...]:
        return (self.model, *self.activity())

    def key_fields(self, kit) -> dict:
        return {"model": kit.key(self.model), "activity": [kit.key(s) for s in self.activity()],
                "domains": list(self.domains), "draws": self.draws, "bins": self.bins, "seed": self.seed,
                "mode": self.mode, "route_fraction": self.route_fraction,
                "max_new_tokens": kit.config.rl.max_completion_length,
                "dtype": str(kit.compute_dtype).removeprefix("torch.")}

    def build(self, kit, directory, progress: bool) -> dict:
        from mdrl_lib.evaluation import score_items

        activity = {s.domain: kit.open(s) for s in self.activity()}
        sets = {n: active_routes(a.channels, self.route_fraction) for n, a in activity.items()}
        shared, domains = ablation_channels(sets, "shared", self.domains)
        if not shared:
            raise ValueError(f"{'-'.join(domains)} share no channel: there is nothing to match")
        model, tokenizer = kit.load(self.model)
        means = token_weighted_means(list(activity.values()))
        rows, ratios, overlap, drawn = [], {}, {}, {}
        for j, domain in enumerate(domains):
            busy = activity[domain].channels
            draws = [matched_random_channels(busy, shared, seed=self.seed + 1000 * j + k, bins=self.bins)
                     for k in range(self.draws)]
            ratios[domain] = [set_activation(busy, d) / set_activation(busy, shared) for d in draws]
            pairs = [(a, b) for i, a in enumerate(draws) for b in draws[i + 1:]]
            overlap[domain] = float(np.mean([jaccard(a, b) for a, b in pairs])) if pairs else 1.0
            drawn[domain] = [sorted([list(c) for c in d]) for d in draws]
            evals = {domain: kit.evals[domain]}
            for k, channels in enumerate(draws):
                with ablate_channels(model, channels, mode=self.mode, means=means):
                    items = score_items(model, tokenizer, evals, max_new_tokens=kit.config.rl.max_completion_length,
                                        batch_size=kit.config.compute.eval_batch_size or None)
                rows += [{"domain": domain, "draw": k, "item": int(i), "score": float(s)}
                         for i, s in zip(items["item"], items["score"])]
        with open(directory / ABLATION_ITEMS, "w") as handle:
            for row in rows:
                handle.write(json.dumps(row, sort_keys=True) + "\n")
        order = list(activity[domains[0]].channels)
        return {"shared": [list(c) for c in sorted(shared, key=lambda c: (order.index(c[0]), c[1]))],
                "domains": list(domains), "ratios": ratios, "overlap": overlap, "channels": drawn}

    def open(self, kit, artifact) -> MatchedControls:
        lines = (artifact.path / ABLATION_ITEMS).read_text().splitlines()
        items = pd.DataFrame([json.loads(line) for line in lines], columns=["domain", "draw", "item", "score"])
        m = artifact.metrics
        return MatchedControls(items=items, shared=tuple((layer, int(i)) for layer, i in m["shared"]),
                               domains=tuple(m["domains"]), ratios=m["ratios"], overlap=m["overlap"])

    def label(self) -> str:
        return (f"{self.draws} activation-matched random controls of the {'+'.join(self.domains) or 'most shared pair'} "
                f"shared channels in {self.model.label()}")

    def toy_seconds(self, config) -> float:
        return 0.4 * self.draws


@dataclass(frozen=True)
class ObjectiveGradient(Spec):
    """The gradient of a domain objective (an :class:`~mdrl_lib.specs.ObjectiveBatch`) at the weights of
    ``at``, by parameter name in ``named_parameters`` order (fp32, eager attention: ``placement="analysis"``).
    Opens as name -> tensor; :func:`split_by_module` splits it by module. Introduced in ``02_shared_routes``.
    Disk: 4 bytes a parameter (16 GB for a 4B model)."""

    at: Spec
    objective: Spec
    kind: ClassVar[str] = "objective_gradient"

    def inputs(self) -> tuple[Spec, ...]:
        return (self.at, self.objective)

    def key_fields(self, kit) -> dict:
        return {"at": kit.key(self.at), "objective": kit.key(self.objective), "dtype": "fp32"}

    def build(self, kit, directory, progress: bool) -> dict:
        model, _ = kit.load(self.at, placement="analysis")
        gradient = kit.objective(self.objective).gradient(model)
        _save_tensors(gradient, directory / GRADIENT_FILE)
        norm = math.sqrt(sum(float(g.double().pow(2).sum()) for g in gradient.values()))
        return {"names": list(gradient), "norm": norm}

    def open(self, kit, artifact) -> dict[str, torch.Tensor]:
        return _load_tensors(artifact.path / GRADIENT_FILE, artifact.metrics["names"])

    def label(self) -> str:
        return f"gradient of {self.objective.label()} at {self.at.label()}"

    def toy_seconds(self, config) -> float:
        return 1.0


@dataclass(frozen=True)
class GradientsOnRoutes(Spec):
    """Per domain pair sharing channels, the two domains' objective gradients restricted to the weights of
    their shared channels (rows of ``gate_proj`` and ``up_proj``, columns of ``down_proj``): the cosine on
    each batch replicate, the same-domain floor there, the mean and sd over ``draws`` random channel sets
    of the same per-layer counts (replicate 0; seeds ``seed``, ``seed + 1``, ...) and the mean cosine on
    every other coordinate. ``gradients``: one :class:`ObjectiveGradient` per (domain, replicate), each
    domain's replicates in order; routes as :class:`AblationScores` measures them on ``routes_at``.
    Introduced in ``02_shared_routes`` (section 3b)."""

    gradients: tuple[ObjectiveGradient, ...]
    routes_at: Spec
    route_fraction: float = 0.1
    route_prompts: int = 300
    draws: int = RANDOM_DRAWS
    seed: int = 0
    kind: ClassVar[str] = "route_gradients"

    def inputs(self) -> tuple[Spec, ...]:
        return (*self.gradients, *answer_activity_specs(self.routes_at, self.route_prompts))

    def key_fields(self, kit) -> dict:
        return {"gradients": [kit.key(g) for g in self.gradients],
                "activity": [kit.key(s) for s in answer_activity_specs(self.routes_at, self.route_prompts)],
                "route_fraction": self.route_fraction, "draws": self.draws, "seed": self.seed}

    def by_domain(self) -> dict[str, list[ObjectiveGradient]]:
        out: dict[str, list[ObjectiveGradient]] = {}
        for spec in self.gradients:
            out.setdefault(spec.objective.domain, []).append(spec)
        return out

    def build(self, kit, directory, progress: bool) -> dict:
        sets, sizes = answer_routes(kit, self.routes_at, self.route_prompts, self.route_fraction)
        grads = {n: [kit.open(s) for s in specs] for n, specs in self.by_domain().items()}
        rows = []
        for x, y in combinations([n for n in DOMAIN_NAMES if n in grads], 2):
            both = sets[x] & sets[y]
            if not both:
                continue
            cross = [on_channels(gx, gy, both) for gx, gy in zip(grads[x], grads[y])]
            floor = min(on_channels(grads[n][0], grads[n][1], both).on for n in (x, y))
            random_mean, random_sd = on_random_channels(grads[x][0], grads[y][0], both, sizes, seed=self.seed,
                                                        draws=self.draws)
            rows.append({"a": x, "b": y, "shared": len(both), "on": [c.on for c in cross], "floor": floor,
                         "random_mean": random_mean, "random_sd": random_sd,
                         "elsewhere": float(np.mean([c.off for c in cross]))})
        (directory / ROWS_FILE).write_text(json.dumps(rows))
        return {"pairs": len(rows)}

    def open(self, kit, artifact) -> list[dict]:
        """One row per pair: ``a``, ``b``, ``shared`` (channels), ``on`` (cosine per replicate), ``floor``,
        ``random_mean``, ``random_sd``, ``elsewhere``."""
        return json.loads((artifact.path / ROWS_FILE).read_text())

    def label(self) -> str:
        return f"objective gradients on the shared routes of {self.routes_at.label()}"

    def toy_seconds(self, config) -> float:
        return 1.0


@dataclass(frozen=True)
class UpdatesOnRoutes(Spec):
    """Per pair of ``experts`` (model specs with a ``domain``, e.g. ``Stage(Base(), n)``) whose domains
    share channels on ``base``: the cosine of their weight updates (expert - base, fp32) on the weights of
    the shared channels, the mean and sd over ``draws`` random channel sets of the same per-layer counts
    (seeds ``seed``, ``seed + 1``, ...) and the cosine on every other coordinate. Routes as
    :class:`AblationScores` measures them, on ``base``. Introduced in ``02_shared_routes`` (section 4)."""

    base: Spec
    experts: tuple[Spec, ...]
    route_fraction: float = 0.1
    route_prompts: int = 300
    draws: int = RANDOM_DRAWS
    seed: int = 0
    kind: ClassVar[str] = "route_updates"

    def inputs(self) -> tuple[Spec, ...]:
        return (self.base, *self.experts, *answer_activity_specs(self.base, self.route_prompts))

    def key_fields(self, kit) -> dict:
        return {"base": kit.key(self.base), "experts": [kit.key(e) for e in self.experts],
                "activity": [kit.key(s) for s in answer_activity_specs(self.base, self.route_prompts)],
                "route_fraction": self.route_fraction, "draws": self.draws, "seed": self.seed}

    def build(self, kit, directory, progress: bool) -> dict:
        from mdrl_lib.edits import paired_tensors

        sets, sizes = answer_routes(kit, self.base, self.route_prompts, self.route_fraction)
        base_file = kit.weights_file(self.base)
        deltas = {e.domain: {name: after - before for name, before, after
                             in paired_tensors(base_file, kit.weights_file(e))} for e in self.experts}
        rows = []
        for x, y in combinations(list(deltas), 2):
            both = sets[x] & sets[y]
            if not both:
                continue
            on_shared = on_channels(deltas[x], deltas[y], both)
            random_mean, random_sd = on_random_channels(deltas[x], deltas[y], both, sizes, seed=self.seed,
                                                        draws=self.draws)
            rows.append({"a": x, "b": y, "shared": len(both), "on": on_shared.on, "random_mean": random_mean,
                         "random_sd": random_sd, "elsewhere": on_shared.off})
        (directory / ROWS_FILE).write_text(json.dumps(rows))
        return {"pairs": len(rows)}

    def open(self, kit, artifact) -> list[dict]:
        """One row per pair: ``a``, ``b``, ``shared`` (channels), ``on``, ``random_mean``, ``random_sd``,
        ``elsewhere``."""
        return json.loads((artifact.path / ROWS_FILE).read_text())

    def label(self) -> str:
        return f"updates of {', '.join(e.label() for e in self.experts)} on shared routes"

    def toy_seconds(self, config) -> float:
        return 1.0
