"""The one rule for a model's special tokens, with or without its tokenizer at hand.

analyze (``--bos``), induction and prune's induction check all read it: the tokenizer decides
when there is one (it is what produced the data), the model's config otherwise. Config fields
may hold a list of ids (several EOS tokens, as Gemma and Llama 3 do).
"""

from __future__ import annotations

from transformers import PreTrainedModel

CONFIG_SPECIALS = ("bos_token_id", "eos_token_id", "pad_token_id")


def _config_ids(model: PreTrainedModel, name: str) -> list[int]:
    value = getattr(model.config, name, None)
    return [int(i) for i in (value if isinstance(value, list) else [value]) if i is not None]


def bos_id(model: PreTrainedModel, tokenizer) -> int | None:
    """The BOS id: the tokenizer's, else the first the config names; None when neither has one."""
    if tokenizer is not None and tokenizer.bos_token_id is not None:
        return int(tokenizer.bos_token_id)
    ids = _config_ids(model, "bos_token_id")
    return ids[0] if ids else None


def special_ids(model: PreTrainedModel, tokenizer) -> tuple[int, ...]:
    """Ids that are not text: the tokenizer's special tokens, else the config's BOS, EOS and pad."""
    if tokenizer is not None:
        return tuple(sorted(set(tokenizer.all_special_ids)))
    return tuple(sorted({i for name in CONFIG_SPECIALS for i in _config_ids(model, name)}))


def shared_vocab(model: PreTrainedModel, tokenizer) -> int:
    """How many ids both the model's embedding and the tokenizer know (tokenizers may be shorter)."""
    return model.config.vocab_size if tokenizer is None else min(model.config.vocab_size, len(tokenizer))
