"""The toy tokenizer and model (mdrl_lib.models): vocabulary, round trips, padding, the default
model's size, seeding, and saving and loading a checkpoint."""
from __future__ import annotations

import pytest
import torch

from mdrl_lib.config import ModelConfig
from mdrl_lib.domains.toy import ALPHABET
from mdrl_lib.models import build_toy_model, load_model, parameter_count, save_model

TINY = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)

TOY_STRINGS = ["m:12+7=", "19", "c:17,3=", "3*5+2", "q:bax age?=", "f:bax age?=", "w:bg12=", "2 bat 17 gem",
               " a b ", "  ", ALPHABET]



def ids_of(text: str) -> list[int]:
    """The expected ids without BOS: pad, bos, eos, unk are 0-3, then the alphabet in order."""
    return [4 + ALPHABET.index(c) for c in text]


# ----------------------------------------------------------------------------- tokenizer


def test_vocabulary_is_four_specials_and_the_alphabet(tokenizer):
    assert len(ALPHABET) == 46 and len(set(ALPHABET)) == 46
    assert len(tokenizer) == 50
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2, 3)
    vocab = tokenizer.get_vocab()
    assert all(vocab[c] == 4 + i for i, c in enumerate(ALPHABET))


def test_encoding_is_one_token_per_character_after_bos(tokenizer):
    assert tokenizer("m:3+4=").input_ids == [1] + ids_of("m:3+4=")
    assert tokenizer("2 bat").input_ids == [1, 6, 45, 15, 14, 33]  # <s> 2 space b a t
    assert tokenizer("?=").input_ids == [1, 49, 48]
    assert tokenizer("a b", add_special_tokens=False).input_ids == ids_of("a b")
    for text in TOY_STRINGS:
        ids = tokenizer(text).input_ids
        assert ids[0] == tokenizer.bos_token_id and len(ids) == len(text) + 1


@pytest.mark.parametrize("text", TOY_STRINGS)
def test_decode_inverts_encode_including_spaces(tokenizer, text):
    assert tokenizer.decode(tokenizer(text).input_ids, skip_special_tokens=True) == text


def test_characters_outside_the_alphabet_are_unknown(tokenizer):
    assert tokenizer("A!", add_special_tokens=False).input_ids == [3, 3]


def test_batches_are_padded_on_the_left(tokenizer):
    batch = tokenizer(["m:1=", "m:12+3="], padding=True)
    assert batch.input_ids[0] == [0, 0, 0, 1] + ids_of("m:1=")
    assert batch.attention_mask[0] == [0, 0, 0, 1, 1, 1, 1, 1]
    assert batch.input_ids[1] == [1] + ids_of("m:12+3=")
    assert batch.attention_mask[1] == [1] * 8
    assert tokenizer.padding_side == "left"


# ----------------------------------------------------------------------------- model


def expected_parameters(vocab: int, hidden: int, layers: int, intermediate: int) -> int:
    """Qwen2 with tied embeddings: q/k/v with bias, o without, gated MLP, two RMSNorms per layer."""
    attention = 3 * (hidden * hidden + hidden) + hidden * hidden
    mlp = 3 * hidden * intermediate
    return vocab * hidden + layers * (attention + mlp + 2 * hidden) + hidden


def test_default_toy_model_has_335488_parameters(tokenizer):
    config = ModelConfig()
    model = build_toy_model(config, tokenizer, seed=0)
    assert parameter_count(model) == 335488
    assert expected_parameters(50, config.hidden_size, config.num_layers, config.intermediate_size) == 335488
    assert parameter_count(build_toy_model(TINY, tokenizer, 0)) == expected_parameters(50, 32, 1, 64)


def test_embeddings_are_tied_and_ids_configured(tokenizer):
    model = build_toy_model(TINY, tokenizer, seed=0)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert model.config.vocab_size == 50
    assert (model.config.pad_token_id, model.config.bos_token_id, model.config.eos_token_id) == (0, 1, 2)
    assert model.generation_config.pad_token_id == 0 and model.generation_config.eos_token_id == 2


def test_same_seed_gives_identical_weights(tokenizer):
    first = build_toy_model(TINY, tokenizer, seed=3).state_dict()
    second = build_toy_model(TINY, tokenizer, seed=3).state_dict()
    other = build_toy_model(TINY, tokenizer, seed=4).state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)


def test_logits_have_the_vocabulary_width(tokenizer):
    model = build_toy_model(TINY, tokenizer, seed=0)
    batch = tokenizer(["m:1+2=", "w:bg12="], return_tensors="pt", padding=True)
    logits = model(**batch).logits
    assert logits.shape == (2, batch.input_ids.shape[1], 50)


# ----------------------------------------------------------------------------- save and load


def test_save_and_load_round_trip(tokenizer, tmp_path):
    model = build_toy_model(TINY, tokenizer, seed=1)
    save_model(model, tokenizer, tmp_path)
    loaded, loaded_tokenizer = load_model(tmp_path)
    loaded_str, _ = load_model(str(tmp_path))
    model.eval(), loaded.eval()

    batch = tokenizer(TOY_STRINGS, return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, loaded(**batch).logits)
        assert torch.equal(model(**batch).logits, loaded_str(**batch).logits)
    assert parameter_count(loaded) == parameter_count(model)

    assert len(loaded_tokenizer) == 50 and loaded_tokenizer.padding_side == "left"
    for text in TOY_STRINGS:
        assert loaded_tokenizer(text).input_ids == tokenizer(text).input_ids
        ids = loaded_tokenizer(text).input_ids
        assert loaded_tokenizer.decode(ids, skip_special_tokens=True) == text
    assert loaded_tokenizer(TOY_STRINGS, padding=True).input_ids == tokenizer(TOY_STRINGS, padding=True).input_ids
    assert (loaded_tokenizer.pad_token_id, loaded_tokenizer.eos_token_id) == (0, 2)
    assert loaded.generation_config.pad_token_id == 0


def test_load_model_without_config_names_the_path(tmp_path):
    directory = tmp_path / "not-a-model"
    directory.mkdir()
    (directory / "notes.txt").write_text("nothing here")
    with pytest.raises(FileNotFoundError) as info:
        load_model(directory)
    assert str(directory) in str(info.value) and "config.json" in str(info.value)


def test_every_toy_sequence_fits_the_model_positions(tokenizer):
    from mdrl_lib.config import RLConfig
    from mdrl_lib.domains.base import DOMAIN_NAMES, get_domain
    from mdrl_lib.models import TOY_MAX_POSITIONS

    longest_prompt = 0
    for name in DOMAIN_NAMES:
        domain = get_domain(name)
        splits = domain.build_splits(0, *domain.default_sizes)
        for prompt, answer in domain.warmup_pairs(splits) + [(e.prompt, e.answer) for e in splits.train + splits.eval]:
            assert 1 + len(prompt) + len(answer) + 1 <= TOY_MAX_POSITIONS  # <s> prompt answer </s>
            longest_prompt = max(longest_prompt, 1 + len(prompt))
    assert longest_prompt + RLConfig().max_completion_length <= TOY_MAX_POSITIONS
