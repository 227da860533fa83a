"""The one special-token rule (models/tokens.py) that analyze --bos, induction and prune read."""
from __future__ import annotations

from conftest import make_tokenizer, tiny_model

from inheritune.models.tokens import bos_id, shared_vocab, special_ids


def test_the_tokenizer_decides_when_there_is_one(tokenizer):
    model = tiny_model()
    model.config.bos_token_id, model.config.eos_token_id = 7, [8, 9]
    assert bos_id(model, tokenizer) == tokenizer.bos_token_id != 7
    assert special_ids(model, tokenizer) == tuple(sorted(set(tokenizer.all_special_ids)))
    assert shared_vocab(model, tokenizer) == min(model.config.vocab_size, len(tokenizer))


def test_without_a_tokenizer_the_config_decides_and_lists_of_ids_count():
    model = tiny_model()
    model.config.bos_token_id, model.config.eos_token_id, model.config.pad_token_id = 5, [8, 9], 8
    assert bos_id(model, None) == 5
    assert special_ids(model, None) == (5, 8, 9)
    assert shared_vocab(model, None) == model.config.vocab_size


def test_a_tokenizer_without_bos_falls_back_to_the_config_and_none_when_neither_has_one():
    tok = make_tokenizer()
    tok.bos_token = None
    model = tiny_model()
    model.config.bos_token_id = 3
    assert bos_id(model, tok) == 3
    model.config.bos_token_id = None
    assert bos_id(model, tok) is None
