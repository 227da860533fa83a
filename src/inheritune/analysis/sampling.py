"""Sequences to analyze: N windows of T tokens, drawn reproducibly from data or a text file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from inheritune.data.shards import open_data
from inheritune.data.sources import decode_utf8
from inheritune.errors import InherituneError
from inheritune.models.loading import tokenizer_fingerprint


def sample_sequences(tokens: np.ndarray, n: int, seq_len: int, seed: int = 0) -> torch.Tensor:
    """``[n, seq_len]`` windows at seeded random offsets of a token stream."""
    if seq_len < 2:
        raise InherituneError(f"sequence length must be at least 2, not {seq_len}")
    if len(tokens) < seq_len:
        raise InherituneError(f"sequence length {seq_len} is longer than the data ({len(tokens)} tokens)")
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(tokens) - seq_len + 1, size=n)
    return torch.from_numpy(np.stack([np.asarray(tokens[s : s + seq_len], dtype=np.int64) for s in starts]))


def tokens_from(data: str | Path | None, text: str | Path | None, tokenizer, split: str = "val") -> np.ndarray:
    """The token stream of a prepared data folder's split, or of a UTF-8 text file tokenized here.

    Data tokenized with another tokenizer than ``tokenizer`` is refused: its ids would mean other
    tokens to the model (None: a weights-only model, whose tokens are taken as they are)."""
    if (data is None) == (text is None):
        raise InherituneError("give exactly one of --data DIR or --text FILE")
    if data is not None:
        token_data = open_data(data)
        if tokenizer is not None:
            token_data.check_tokenizer(tokenizer_fingerprint(tokenizer), "the model's tokenizer")
        return np.asarray(token_data.tokens(split))
    assert text is not None  # exactly one of the two is given (checked above)
    path = Path(text)
    if not path.is_file():
        raise InherituneError(f"text file not found: {path}")
    content = decode_utf8(path.read_bytes(), path)
    if not content.strip():
        raise InherituneError(f"{path} is empty")
    return np.asarray(tokenizer.encode(content), dtype=np.int64)


def sequences_from(
    data: str | Path | None, text: str | Path | None, tokenizer, n: int, seq_len: int, seed: int = 0, split: str = "val"
) -> torch.Tensor:
    """``n`` windows of ``seq_len`` tokens from ``tokens_from(data, text, tokenizer, split)``."""
    return sample_sequences(tokens_from(data, text, tokenizer, split), n, seq_len, seed)
