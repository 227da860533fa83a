"""Raw text -> token shards with a fixed, document-level validation split (what `data prepare` runs).

Documents stream from the sources (interleaved when there are several), are tokenized in
batches by the reference's own fast tokenizer on all cores, get EOS appended, and are routed
to a split as they go:

- each document gets a key, a seeded hash of its text;
- the validation set is the documents with the *lowest* keys, just enough of them to reach
  ``val_tokens``. A bounded heap holds the current candidates; a document pushed out of it
  (or never let in) is written to train at once. Memory stays at about ``val_tokens``.

So the split is by document (none is in both), is the same for the same seed and text
whatever the batching or document order, and exact duplicates share a key and therefore a
split.

The validation set is a function of the sources, the seed and ``val_tokens`` only: it is
picked among the documents that start within the first ``val_pool`` tokens of the source
stream (max(2M, 20 x val_tokens); the whole stream when shorter), and reading always covers
that pool, whatever ``max_tokens`` says. ``max_tokens`` caps the train split exactly (its last
document may be cut); past the pool, reading stops once the cap is reached. So the same
sources and seed give byte-identical validation shards for any training cap, and a streamed
source need not be read to its end.
"""

from __future__ import annotations

import hashlib
import heapq
import os
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase

from inheritune.data.shards import ShardWriter
from inheritune.errors import InherituneError

DEFAULT_VAL_TOKENS = 100_000  # capped at 10% of the sources when they are shorter than the pool
VAL_POOL_TOKENS = 2_000_000  # the validation set is drawn from this prefix of the stream (or 20x val_tokens)
SHARD_TOKENS = 100_000_000  # 200 MB per uint16 shard
BATCH_CHARS = 1_000_000  # text per tokenizer call: big enough to keep every core busy


def encoder(tok: PreTrainedTokenizerBase) -> Callable[[list[str]], list[list[int]]]:
    """Batch encoding of raw text: no BOS (EOS is ours to add), and special-token strings that
    occur in the text (say "<|endoftext|>" quoted on a web page) stay text, so the only EOS ids
    in the shards are the document separators."""
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:  # the Rust tokenizer: parallel over the batch, no per-token Python work
        raw = Tokenizer.from_str(backend.to_str())  # a copy: the caller's tokenizer is not modified
        raw.encode_special_tokens = True
        return lambda texts: [e.ids for e in raw.encode_batch_fast(texts, add_special_tokens=False)]
    return lambda texts: tok(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]


@contextmanager
def _all_cores() -> Iterator[None]:
    """Let the Rust tokenizer use every core here (the CLI turns it off to stay fork-safe)."""
    before = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TOKENIZERS_PARALLELISM")
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = before


def _batches(docs: Iterator[str], chars: int) -> Iterator[list[str]]:
    batch, size = [], 0
    for doc in docs:
        batch.append(doc)
        size += len(doc)
        if size >= chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def doc_key(seed: int, text: str) -> int:
    """A document's place in the seeded random order that picks the validation set."""
    h = hashlib.blake2b(f"{seed}\n".encode(), digest_size=8)
    h.update(text.encode("utf-8", "surrogatepass"))
    return int.from_bytes(h.digest(), "big")


class ValidationPicker:
    """Keeps the lowest-key documents whose tokens just reach ``target``; hands back the rest.

    A max-heap on key (``-key`` in heapq's min-heap). Documents with equal keys (exact
    duplicates) leave together, so they never straddle the split.
    """

    def __init__(self, target: int):
        self.target, self.tokens = target, 0
        self.heap: list[tuple[int, int, np.ndarray]] = []
        self._order = 0  # tie-break within equal keys: stream order, deterministic

    def offer(self, key: int, ids: np.ndarray) -> list[np.ndarray]:
        """Take the document as a candidate, or not; returns the documents that go to train."""
        if self.tokens >= self.target and key > -self.heap[0][0]:
            return [ids]
        heapq.heappush(self.heap, (-key, self._order, ids))
        self._order += 1
        self.tokens += len(ids)
        return self.shrink(self.target)

    def shrink(self, target: int) -> list[np.ndarray]:
        """Drop highest-key groups while the rest still reach ``target``."""
        self.target = target
        evicted: list[np.ndarray] = []
        while self.heap:
            group = [heapq.heappop(self.heap)]
            while self.heap and self.heap[0][0] == group[0][0]:
                group.append(heapq.heappop(self.heap))
            group_tokens = sum(len(e[2]) for e in group)
            if self.tokens - group_tokens < target:
                for e in group:
                    heapq.heappush(self.heap, e)
                break
            evicted.extend(e[2] for e in group)
            self.tokens -= group_tokens
        return evicted

    def documents(self) -> list[np.ndarray]:
        """The validation documents, lowest key first."""
        return [ids for _, _, ids in sorted(self.heap, key=lambda e: (-e[0], e[1]))]


def pool_tokens(val_tokens: int | None) -> int:
    """How much of the stream the validation set is drawn from: independent of max_tokens."""
    return max(VAL_POOL_TOKENS, 20 * (val_tokens or DEFAULT_VAL_TOKENS))


def write_splits(
    docs: Iterator[str],
    encode: Callable[[list[str]], list[list[int]]],
    eos: int,
    root: Path,
    dtype: np.dtype,
    seed: int,
    max_tokens: int | None,
    val_tokens: int | None,
) -> tuple[dict, dict]:
    pool = pool_tokens(val_tokens)
    picker = ValidationPicker(val_tokens or DEFAULT_VAL_TOKENS)
    train = ShardWriter(root, "train", dtype, SHARD_TOKENS, limit=max_tokens)
    read = {"documents": 0, "tokens": 0}
    bar = tqdm(unit="tok", unit_scale=True, desc="tokenizing", file=sys.stderr, disable=None)

    def done() -> bool:  # the pool is read (the val set is final) and the train cap is reached
        return read["tokens"] >= pool and train.full

    def route(texts: list[str], encoded: list[list[int]]) -> None:
        for text, ids in zip(texts, encoded, strict=True):
            if done():  # the stream prefix read is fixed by the pool and the cap, not by batch boundaries
                return
            doc = np.empty(len(ids) + 1, dtype=dtype)
            doc[:-1] = ids
            doc[-1] = eos
            in_pool = read["tokens"] < pool
            for leaving in picker.offer(doc_key(seed, text), doc) if in_pool else [doc]:
                train.write(leaving)
            read["documents"] += 1
            read["tokens"] += len(doc)
            bar.update(len(doc))

    # Tokenize batch i on a worker thread (the Rust side drops the GIL) while batch i+1 is read.
    with _all_cores(), ThreadPoolExecutor(1) as pool_thread, bar:
        pending = None
        for batch in _batches(docs, BATCH_CHARS):
            future = pool_thread.submit(encode, batch)
            if pending is not None:
                route(pending[0], pending[1].result())
            pending = (batch, future)
            if done():
                pending[1].cancel()
                pending = None
                break
        if pending is not None:
            route(pending[0], pending[1].result())

    if val_tokens is None and read["tokens"] < pool:  # the whole (small) sources were read: 10% of them
        for leaving in picker.shrink(min(DEFAULT_VAL_TOKENS, max(1, read["tokens"] // 10))):
            train.write(leaving)
    val = ShardWriter(root, "val", dtype, SHARD_TOKENS)
    for doc in picker.documents():
        val.write(doc)
    splits = {"train": train.close(), "val": val.close()}
    _check_split(splits, read, val_tokens)
    return splits, read


def _check_split(splits: dict, read: dict, val_tokens: int | None) -> None:
    data = f"{read['tokens']:,} tokens in {read['documents']:,} document(s)"
    if read["documents"] == 0:
        raise InherituneError("the sources hold no text")
    if read["documents"] == 1:
        raise InherituneError(
            f"the sources hold one document ({data}); the train/val split is by document, "
            "so at least two are needed: give more text"
        )
    if splits["train"]["tokens"] == 0:
        if val_tokens is not None:
            raise InherituneError(f"--val-tokens {val_tokens:,} is larger than the data ({data}): lower it")
        raise InherituneError(f"all documents fell in the validation set ({data}): give more text")
