"""`data prepare`: raw text -> token shards with a fixed, document-level validation split.

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

import dataclasses
import hashlib
import heapq
import time
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase

from inheritune.data.shards import FORMAT, MANIFEST, ShardWriter, dtype_for_vocab
from inheritune.data.sources import ERRORS, check_source, documents, interleave
from inheritune.errors import InherituneError
from inheritune.atomic import atomic_dir, atomic_write_json, check_output_dir, read_json
from inheritune.models.loading import load_tokenizer, tokenizer_fingerprint
from inheritune.result import CommandResult

DEFAULT_VAL_TOKENS = 100_000  # capped at 10% of the sources when they are shorter than the pool
VAL_POOL_TOKENS = 2_000_000  # the validation set is drawn from this prefix of the stream (or 20x val_tokens)
SHARD_TOKENS = 100_000_000  # 200 MB per uint16 shard
BATCH_CHARS = 1_000_000  # text per tokenizer call: big enough to keep every core busy


@dataclasses.dataclass
class PrepareResult(CommandResult):
    """What ``prepare_data`` wrote to ``out`` (the data folder; its manifest.json holds the rest)."""

    out: Path
    tokenizer: str
    dtype: str
    train_tokens: int
    train_documents: int
    val_tokens: int
    val_documents: int
    seconds: float


def prepare_data(
    sources: Sequence[str],
    tokenizer: str | PreTrainedTokenizerBase,
    out: str | Path,
    max_tokens: int | None = None,
    val_tokens: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
    text_field: str = "text",
    errors: str = "strict",
    trust_remote_code: bool = False,
) -> PrepareResult:
    """Tokenize ``sources`` with ``tokenizer`` into the data folder ``out`` (``inheritune data
    prepare SOURCE... --tokenizer REF --out DIR``, same arguments).

    ``val_tokens`` defaults to 100,000, or 10% of the sources when they hold fewer tokens than
    the validation pool (see the module docstring).
    """
    start = time.perf_counter()
    sources = [str(s) for s in sources]
    if not sources:
        raise InherituneError("give at least one source")
    for name, value in (("--max-tokens", max_tokens), ("--val-tokens", val_tokens)):
        if value is not None and value < 1:
            raise InherituneError(f"{name} must be at least 1, got {value}")
    if errors not in ERRORS:
        raise InherituneError(f"--errors must be one of {', '.join(ERRORS)}, got {errors!r}")
    for spec in sources:
        check_source(spec)  # before the tokenizer loads: a typo should fail in a second

    name = tokenizer if isinstance(tokenizer, str) else (tokenizer.name_or_path or type(tokenizer).__name__)
    tok = load_tokenizer(tokenizer, trust_remote_code=trust_remote_code) if isinstance(tokenizer, str) else tokenizer
    if tok.eos_token_id is None:
        raise InherituneError(f"tokenizer {name} has no EOS token to separate documents")
    fingerprint = tokenizer_fingerprint(tok)
    out = Path(out)
    _check_same_tokenizer(out, fingerprint)
    check_output_dir(out, overwrite)

    dtype = dtype_for_vocab(len(tok))
    with atomic_dir(out, overwrite) as tmp:
        splits, read = _write_splits(
            interleave([documents(s, text_field, errors) for s in sources]), _encoder(tok), tok.eos_token_id,
            tmp, dtype, seed, max_tokens, val_tokens,
        )
        atomic_write_json(tmp / MANIFEST, _manifest(dtype.name, name, fingerprint, tok, sources, seed, max_tokens,
                                                    val_tokens, text_field, errors, read, splits))
    train, val = splits["train"], splits["val"]
    return PrepareResult(out=out, tokenizer=name, dtype=dtype.name, train_tokens=train["tokens"],
                         train_documents=train["documents"], val_tokens=val["tokens"], val_documents=val["documents"],
                         seconds=time.perf_counter() - start)


def _manifest(dtype: str, name: str, fingerprint: str, tok: PreTrainedTokenizerBase, sources: list[str], seed: int,
              max_tokens: int | None, val_tokens: int | None, text_field: str, errors: str, read: dict,
              splits: dict) -> dict:
    """manifest.json: how the folder was made (every argument) and what it holds."""
    return {
        "format": FORMAT,
        "dtype": dtype,
        "tokenizer": {"name": name, "fingerprint": fingerprint, "vocab_size": len(tok),
                      "eos_token_id": tok.eos_token_id},
        "sources": sources,
        "seed": seed,
        "max_tokens": max_tokens,
        "val_tokens": val_tokens,
        "text_field": text_field,
        "errors": errors,
        "split": "by document: val = lowest blake2b(seed, text) keys up to val_tokens among the documents "
                 "starting in the first val_pool tokens of the sources; the rest is train, capped at max_tokens",
        "val_pool": _pool(val_tokens),
        "read": read,
        "splits": splits,
    }


def _check_same_tokenizer(out: Path, fingerprint: str) -> None:
    """An existing data folder keeps its tokenizer: runs that point at it rely on its val set."""
    if not (out / MANIFEST).is_file():
        return
    old = read_json(out / MANIFEST, "data manifest").get("tokenizer", {})
    if old.get("fingerprint") != fingerprint:
        raise InherituneError(
            f"{out} holds data tokenized with {old.get('name', '?')} (fingerprint {old.get('fingerprint')}), "
            f"not this tokenizer (fingerprint {fingerprint}); use a new --out or delete {out} first"
        )


def _encoder(tok: PreTrainedTokenizerBase) -> Callable[[list[str]], list[list[int]]]:
    """Batch encoding of raw text: no BOS (EOS is ours to add), and special-token strings that
    occur in the text (say "<|endoftext|>" quoted on a web page) stay text, so the only EOS ids
    in the shards are the document separators."""
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:  # the Rust tokenizer: parallel over the batch, no per-token Python work
        from tokenizers import Tokenizer

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
        self.target, self.tokens, self.heap = target, 0, []
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
        self.target, evicted = target, []
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


def _pool(val_tokens: int | None) -> int:
    """How much of the stream the validation set is drawn from: independent of max_tokens."""
    return max(VAL_POOL_TOKENS, 20 * (val_tokens or DEFAULT_VAL_TOKENS))


def _write_splits(
    docs: Iterator[str], encode: Callable[[list[str]], list[list[int]]], eos: int, root: Path, dtype: np.dtype,
    seed: int, max_tokens: int | None, val_tokens: int | None,
) -> tuple[dict, dict]:
    pool = _pool(val_tokens)
    picker = ValidationPicker(val_tokens or DEFAULT_VAL_TOKENS)
    train = ShardWriter(root, "train", dtype, SHARD_TOKENS, limit=max_tokens)
    read = {"documents": 0, "tokens": 0}
    bar = tqdm(unit="tok", unit_scale=True, desc="tokenizing", file=sys.stderr, disable=None)

    def done() -> bool:  # the pool is read (the val set is final) and the train cap is reached
        return read["tokens"] >= pool and train.full

    def route(texts: list[str], encoded: list[list[int]]) -> None:
        for text, ids in zip(texts, encoded):
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
        raise InherituneError(f"the sources hold one document ({data}); the train/val split is by document, "
                              "so at least two are needed: give more text")
    if splits["train"]["tokens"] == 0:
        if val_tokens is not None:
            raise InherituneError(f"--val-tokens {val_tokens:,} is larger than the data ({data}): lower it")
        raise InherituneError(f"all documents fell in the validation set ({data}): give more text")
