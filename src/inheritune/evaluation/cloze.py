"""cloze-local: a LAMBADA-style last-word task built from a data folder's *validation* documents.

Each validation document (the val split cut at EOS, decoded with the data's tokenizer) gives at
most one passage: the model reads the document up to its final word and must predict that word.
Training documents are never read, so the task measures held-out text even for a model trained
on the same folder. The build is deterministic: same folder and tokenizer, same passages.
"""

from __future__ import annotations

import re
from typing import cast

import numpy as np
from transformers import PreTrainedTokenizerBase

from inheritune.data.shards import TokenData
from inheritune.errors import InherituneError

# The final word: letters only, preceded by whitespace, followed only by closing punctuation.
_LAST_WORD = re.compile(r"(?<=\s)([^\W\d_]+)[\s.!?,;:'\")\]]*$")


def val_documents(data: TokenData, tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """The validation split's documents as text, in order (EOS-separated in the shards)."""
    tokens = data.tokens("val")
    eos = int(data.manifest["tokenizer"]["eos_token_id"])
    cuts = np.flatnonzero(tokens == eos)
    docs: list[str] = []
    start = 0
    for end in [*cuts.tolist(), len(tokens)]:
        if end > start:  # one sequence of ids decodes to one string
            docs.append(cast(str, tokenizer.decode(tokens[start:end].tolist(), skip_special_tokens=True)))
        start = end + 1
    return docs


def cloze_passage(
    text: str, min_context_words: int = 15, max_context_words: int = 200, min_target_chars: int = 3
) -> dict | None:
    """``{"context", "target"}`` for one document, or None when it does not end in a usable word.

    The context keeps the document's own formatting, cut to its last ``max_context_words``
    words so passages fit a small model's window; the target is the bare final word.
    """
    match = _LAST_WORD.search(text.rstrip())
    if match is None or len(match.group(1)) < min_target_chars:
        return None
    context = text[: match.start(1)].rstrip()
    words = list(re.finditer(r"\S+", context))
    if len(words) < min_context_words:
        return None
    if len(words) > max_context_words:
        context = context[words[-max_context_words].start() :]
    return {"context": context, "target": match.group(1)}


def cloze_rows(
    data: TokenData, tokenizer: PreTrainedTokenizerBase, min_context_words: int = 15, max_context_words: int = 200
) -> list[dict]:
    """The task's rows: one passage per usable validation document, in document order."""
    rows = []
    for doc in val_documents(data, tokenizer):
        passage = cloze_passage(doc, min_context_words, max_context_words)
        if passage is not None:
            rows.append(passage)
    if not rows:
        raise InherituneError(
            f"cloze-local: no validation document of {data.root} ends in a word after at least "
            f"{min_context_words} words of context"
        )
    return rows
