"""Models: the toy character tokenizer and tiny Qwen-style LM built offline; full-scale loading.

Introduced in notebook ``00_toy_world``. The toy tokenizer maps each character of
:data:`mdrl_lib.domains.toy.ALPHABET` to one token, adds ``<s>`` in front of every input and pads on
the left (for batched generation). The toy model is a Qwen2 causal LM with tied embeddings.
``load_model`` opens either a stored checkpoint directory or, at full scale, any causal LM id.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from mdrl_lib.config import ModelConfig
from mdrl_lib.domains.toy import ALPHABET

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
TOY_MAX_POSITIONS = 64


def build_toy_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level fast tokenizer over the toy alphabet: 4 special tokens + 46 characters."""
    vocab = {token: i for i, token in enumerate([PAD, BOS, EOS, UNK, *ALPHABET])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, vocab[BOS])])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, bos_token=BOS, eos_token=EOS,
                                   unk_token=UNK, padding_side="left", model_max_length=TOY_MAX_POSITIONS)


def build_toy_model(config: ModelConfig, tokenizer: PreTrainedTokenizerBase, seed: int) -> Qwen2ForCausalLM:
    """A randomly initialised tiny Qwen2 causal LM (335k parameters at the default sizes)."""
    model_config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads, max_position_embeddings=TOY_MAX_POSITIONS,
        tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(model_config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, directory: str | Path) -> None:
    """Write the model as safetensors and its tokenizer with ``save_pretrained``."""
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))


def load_model(name_or_path: str | Path, dtype: torch.dtype = torch.float32,
               ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal LM and its tokenizer from a checkpoint directory or a model id (full scale).

    A directory must hold ``config.json``; a model id is fetched by transformers (needs a hub).
    The tokenizer pads on the left for batched generation.
    """
    path = Path(name_or_path).expanduser()
    if path.exists() and not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a model directory: it has no config.json")
    source = str(path) if path.exists() else str(name_or_path)
    tokenizer = _load_tokenizer(source, path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def load_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer of a checkpoint directory or model id, padding on the left (full scale: the
    domains truncate prompts with it)."""
    path = Path(name_or_path).expanduser()
    tokenizer = _load_tokenizer(str(path) if path.exists() else str(name_or_path), path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _load_tokenizer(source: str, path: Path) -> PreTrainedTokenizerBase:
    # AutoTokenizer would pick the model type's tokenizer class (Qwen2Tokenizer, which drops the toy
    # alphabet's spaces); a plain tokenizers-backed checkpoint is opened as exactly that.
    config_file = path / "tokenizer_config.json"
    if config_file.is_file() and json.loads(config_file.read_text()).get("tokenizer_class") in _PLAIN_TOKENIZERS:
        return PreTrainedTokenizerFast.from_pretrained(source, padding_side="left")
    return AutoTokenizer.from_pretrained(source, padding_side="left")


_PLAIN_TOKENIZERS = ("TokenizersBackend", "PreTrainedTokenizerFast")


def parameter_count(model: torch.nn.Module) -> int:
    """Number of distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters())
