"""The supervised warm-up helpers (mdrl_lib.training): encoding, collation, the rate schedule, and a
tiny warm-up that learns and is deterministic by seed."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mdrl_lib.config import ModelConfig
from mdrl_lib.domains.base import get_domain
from mdrl_lib.models import build_toy_model
from mdrl_lib.training import IGNORE, batch_backward, collate, encode_pairs, length_groups, warmup, warmup_rate

TINY = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)




@pytest.fixture(scope="module")
def pairs():
    out = {}
    for name in ("math", "code", "qa", "cw"):
        domain = get_domain(name)
        out[name] = domain.warmup_pairs(domain.build_splits(0, 10, 10))
    return out


# ----------------------------------------------------------------------------- encoding and collation


def test_encode_pairs_puts_bos_before_the_prompt_and_eos_after_the_answer(tokenizer):
    encoded = encode_pairs(tokenizer, [("m:1+2=", "3"), ("w:bg12=", "2 bat 17 gem")])
    # ids: pad 0, bos 1, eos 2, unk 3, then "0".."9" = 4..13, "a".."z" = 14..39, "+" 40, ":" 47, "=" 48, " " 45
    assert encoded[0] == ([1, 26, 47, 5, 40, 6, 48], [7, 2])
    prompt_ids, answer_ids = encoded[1]
    assert prompt_ids[0] == 1 and len(prompt_ids) == 1 + len("w:bg12=")
    assert answer_ids == tokenizer("2 bat 17 gem", add_special_tokens=False).input_ids + [2]
    assert answer_ids[1] == 45  # the space survives


def test_collate_pads_right_and_masks_the_prompt():
    encoded = [([1, 5, 6], [7, 2]), ([1], [8, 2])]
    batch = collate(encoded, pad_id=0)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert all(t.shape == (2, 5) and t.dtype == torch.long for t in batch.values())
    assert batch["input_ids"].tolist() == [[1, 5, 6, 7, 2], [1, 8, 2, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE, IGNORE, IGNORE, 7, 2], [IGNORE, 8, 2, IGNORE, IGNORE]]
    assert IGNORE == -100


def test_collate_with_another_pad_id():
    batch = collate([([1, 4], [9, 2]), ([1, 4, 4, 4, 4], [9, 2])], pad_id=7)
    assert batch["input_ids"].shape == (2, 7)
    assert batch["input_ids"][0].tolist() == [1, 4, 9, 2, 7, 7, 7]
    assert batch["labels"][1].tolist() == [IGNORE] * 5 + [9, 2]


def test_the_loss_counts_answer_tokens_only(tokenizer):
    model = build_toy_model(TINY, tokenizer, seed=0)
    encoded = encode_pairs(tokenizer, [("m:1+2=", "3"), ("q:bax age?=", "17"), ("c:9,3=", "3*3")])
    batch = collate(encoded, tokenizer.pad_token_id)
    with torch.no_grad():
        output = model(**batch)
    logits, labels = output.logits[:, :-1], batch["labels"][:, 1:]
    keep = labels != IGNORE
    assert keep.sum().item() == sum(len(a) for _, a in encoded)
    manual = F.cross_entropy(logits[keep], labels[keep])
    assert torch.allclose(output.loss, manual, atol=1e-6)


# ----------------------------------------------------------------------------- length groups


def padded_tokens(lengths, groups):
    return sum(len(g) * max(lengths[i] for i in g) for g in groups)


@pytest.mark.parametrize("lengths,expected", [
    ([14, 30, 14, 14], [[0, 2, 3], [1]]),          # 3 x 14 + 1 x 30 = 72 < 4 x 30 = 120
    ([10, 10, 10], [[0, 1, 2]]),                   # equal lengths: nothing to save
    ([5], [[0]]),
    ([], []),
    ([20, 9, 21, 10], [[1, 3], [0, 2]]),           # 2 x 10 + 2 x 21 = 62 beats 9 + 3 x 21 = 72 and 3 x 20 + 21 = 81
])
def test_length_groups_cut_where_padding_is_least(lengths, expected):
    groups = length_groups(lengths)
    assert groups == expected
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))


def test_length_groups_beat_every_other_cut():
    import random

    rng = random.Random(0)
    for _ in range(50):
        lengths = [rng.choice([9, 12, 14, 18, 21, 30]) for _ in range(rng.randint(2, 20))]
        order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
        best = min(padded_tokens(lengths, [order[:k], order[k:]] if k else [order]) for k in range(len(order)))
        assert padded_tokens(lengths, length_groups(lengths)) == best


def test_grouped_backward_matches_one_padded_batch(tokenizer):
    model = build_toy_model(TINY, tokenizer, seed=0)
    rows = encode_pairs(tokenizer, [("m:1+2=", "3"), ("w:bg12=", "2 bat 17 gem"), ("q:bax age?=", "17 years"),
                                    ("m:41-3=", "(38)"), ("c:9,3=", "3*3")])
    assert len(length_groups([len(p) + len(a) for p, a in rows])) == 2
    loss = batch_backward(model, rows, tokenizer.pad_token_id)
    grouped = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    reference = model(**collate(rows, tokenizer.pad_token_id)).loss
    reference.backward()
    assert loss == pytest.approx(reference.item(), rel=1e-5)
    for name, param in model.named_parameters():
        assert torch.allclose(grouped[name], param.grad, rtol=1e-4, atol=1e-6), name



# ----------------------------------------------------------------------------- learning-rate schedule


@pytest.mark.parametrize("step,expected", [
    (0, 0.05), (4, 0.25), (9, 0.5), (19, 1.0),        # linear ramp over 20 steps
    (20, 1.0), (50, 1.0), (80, 1.0),                   # flat until the anneal starts at 100 - 20
    (81, 0.95), (90, 0.5), (99, 0.05), (100, 0.0),     # linear decay to 0
])
def test_warmup_rate_ramps_stays_flat_and_anneals_to_zero(step, expected):
    assert warmup_rate(step, 100, 20) == pytest.approx(expected)


def test_warmup_rate_without_anneal_stays_flat():
    assert [warmup_rate(s, 50, 0) for s in (0, 19, 49, 50)] == pytest.approx([0.05, 1.0, 1.0, 1.0])


def test_warmup_rate_when_ramp_and_anneal_overlap():
    # 10 steps, all annealed: ramp (s + 1) / 20 times (10 - s) / 10
    assert [warmup_rate(s, 10, 10) for s in (0, 5, 9, 10)] == pytest.approx([0.05, 0.15, 0.05, 0.0])


def test_warmup_rate_is_never_negative_or_above_one():
    rates = [warmup_rate(s, 300, 120) for s in range(301)]
    assert all(0.0 <= r <= 1.0 for r in rates)
    assert rates[-1] == 0.0


# ----------------------------------------------------------------------------- a tiny warm-up


def run_tiny_warmup(tokenizer, pairs, seed: int):
    model = build_toy_model(TINY, tokenizer, seed=seed)
    log = warmup(model, tokenizer, pairs, steps=40, lr=3e-3, batch_size=16, seed=seed,
                 weights={"math": 3.0, "code": 2.0, "qa": 1.0, "cw": 1.0}, anneal_steps=10, log_every=10,
                 progress=False)
    return model, log


def test_tiny_warmup_learns_and_is_deterministic_by_seed(tokenizer, pairs):
    model, log = run_tiny_warmup(tokenizer, pairs, seed=0)
    assert log.every == 10 and len(log.losses) == 4 and log.seconds > 0
    assert log.losses[-1] < log.losses[0] - 0.3, log.losses
    assert not model.training

    again, log_again = run_tiny_warmup(tokenizer, pairs, seed=0)
    assert log_again.losses == log.losses
    first, second = model.state_dict(), again.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert all(first[k].numpy().tobytes() == second[k].numpy().tobytes() for k in first)

    other, log_other = run_tiny_warmup(tokenizer, pairs, seed=1)
    assert log_other.losses != log.losses
    assert any(not torch.equal(first[k], other.state_dict()[k]) for k in first)


def test_warmup_changes_the_weights_it_was_given(tokenizer, pairs):
    model = build_toy_model(TINY, tokenizer, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    warmup(model, tokenizer, {"math": pairs["math"]}, steps=5, lr=1e-3, batch_size=4, seed=0,
           anneal_steps=0, log_every=5, progress=False)
    after = model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
