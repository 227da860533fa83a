"""The on-disk token format every command shares: binary shards plus a JSON manifest.

A data folder holds ``manifest.json`` and, per split (``train``, ``val``), flat arrays of
token ids (``uint16`` when the vocabulary fits, else ``uint32``), documents separated by EOS.
Readers memory-map the shards; nothing loads a whole corpus.

Opening a folder validates it, so that corrupt data is refused in one line naming the file
before any model sees it (a random-byte shard otherwise ends as an ``IndexError`` deep in the
embedding): the manifest must be self-consistent (keys present, one count per shard, split
totals equal to the sum of their shards), every shard must exist with exactly the manifest's
size, and every shard's largest token id must be below the manifest's ``tokenizer.vocab_size``.

The id check is one pass over each shard at memory speed (0.45 ms for a 1.1M-token folder,
page cache warm). Its result is cached in-process only, keyed by the shard's resolved
path, size, mtime_ns, ctime_ns and inode: a pipeline that opens the same folder for training,
evaluation and each growth round pays once. Nothing is written on open, neither the manifest
nor a sidecar file: a data folder is an input, which must stay byte-identical and may be
read-only or shared by several ranks. ctime cannot be set by users (``touch -d`` and
``cp -p`` restore mtime, not ctime), so any rewrite of a shard changes the key; a shard
changed less than ``RACY_SECONDS`` ago is never cached, because timestamps are only as fine
as the kernel clock tick and a rewrite within the same tick would keep the key unchanged.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from inheritune.atomic import read_json
from inheritune.errors import InherituneError

MANIFEST = "manifest.json"
FORMAT = "inheritune-tokens/1"
SPLITS = ("train", "val")
DTYPES = ("uint16", "uint32")
RACY_SECONDS = 2.0  # a shard modified more recently than this is re-scanned on every open

_max_ids: dict[tuple, int] = {}  # (path, size, mtime_ns, ctime_ns, inode, dtype) -> largest token id


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


@dataclass
class TokenData:
    """A prepared data folder: its manifest and memory-mapped shards."""

    root: Path
    manifest: dict

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.manifest["dtype"])

    @property
    def fingerprint(self) -> str:
        return self.manifest["tokenizer"]["fingerprint"]

    def shards(self, split: str) -> list[np.ndarray]:
        """The split's shards as read-only memory maps, in order."""
        if split not in self.manifest["splits"]:
            raise InherituneError(f"{self.root} has no '{split}' split")
        entry = self.manifest["splits"][split]
        pairs = zip(entry["shards"], entry["shard_tokens"], strict=True)
        return [_open_shard(self.root / name, count, self.dtype) for name, count in pairs]

    def tokens(self, split: str) -> np.ndarray:
        """The whole split as one array (a copy; meant for the small validation set)."""
        shards = self.shards(split)
        return np.concatenate(shards) if len(shards) > 1 else np.asarray(shards[0])

    def num_tokens(self, split: str) -> int:
        return int(self.manifest["splits"][split]["tokens"])

    def check_tokenizer(self, fingerprint: str, what: str = "the model") -> None:
        """Refuse to pair data with a model whose tokenizer encodes differently."""
        if fingerprint != self.fingerprint:
            raise InherituneError(
                f"tokenizer mismatch: {self.root} was tokenized with {self.manifest['tokenizer'].get('name', '?')} "
                f"(fingerprint {self.fingerprint}), {what} uses fingerprint {fingerprint}"
            )


def open_data(root: str | Path) -> TokenData:
    """Open a prepared data folder, validated (see the module docstring), with one-line errors
    for anything that is not a consistent one."""
    root = Path(root)
    if not root.is_dir():
        raise InherituneError(f"data folder not found: {root} (create it with `inheritune data prepare`)")
    manifest = read_json(root / MANIFEST, "data manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise InherituneError(f"{root / MANIFEST} is not an inheritune data manifest (format {found!r})")
    check_manifest(root / MANIFEST, manifest)
    data = TokenData(root, manifest)
    vocab_size = manifest["tokenizer"]["vocab_size"]
    for entry in manifest["splits"].values():
        for name, count in zip(entry["shards"], entry["shard_tokens"], strict=True):
            check_token_ids(_open_shard(root / name, count, data.dtype), root / name, vocab_size)
    return data


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_tokenizer_entry(path: Path, manifest: dict) -> None:
    tokenizer = manifest.get("tokenizer")
    if not isinstance(tokenizer, dict):
        raise InherituneError(
            f"{path} has no 'tokenizer' entry (fingerprint, vocab_size): rerun `inheritune data prepare`"
        )
    for key in ("fingerprint", "vocab_size"):
        if key not in tokenizer:
            raise InherituneError(f"{path} has no 'tokenizer.{key}': rerun `inheritune data prepare`")
    vocab_size = tokenizer["vocab_size"]
    if not _is_count(vocab_size) or vocab_size == 0:
        raise InherituneError(f"{path}: 'tokenizer.vocab_size' must be a positive integer, not {vocab_size!r}")
    dtype = manifest.get("dtype")
    if dtype not in DTYPES:
        raise InherituneError(f"{path}: 'dtype' must be one of {', '.join(DTYPES)}, not {dtype!r}")
    if vocab_size - 1 > np.iinfo(np.dtype(dtype)).max:
        raise InherituneError(
            f"{path}: 'dtype' {dtype} cannot hold the ids of a {vocab_size}-token vocabulary ('tokenizer.vocab_size')"
        )


def _check_split(path: Path, split: str, entry) -> None:
    """One split's entry: shard names in the folder, one count per shard, counts summing to the total."""
    where = f"{path}: split '{split}'"
    if not isinstance(entry, dict):
        raise InherituneError(f"{where} is not an object")
    for key in ("shards", "shard_tokens", "tokens"):
        if key not in entry:
            raise InherituneError(f"{where} has no '{key}'")
    shards, counts, total = entry["shards"], entry["shard_tokens"], entry["tokens"]
    if not isinstance(shards, list) or not all(isinstance(n, str) and n and Path(n).name == n for n in shards):
        raise InherituneError(f"{where}: 'shards' must be a list of file names inside the folder, not {shards!r}"[:300])
    if not isinstance(counts, list) or not all(_is_count(c) for c in counts):
        raise InherituneError(f"{where}: 'shard_tokens' must be a list of token counts, not {counts!r}"[:300])
    if len(counts) != len(shards):
        raise InherituneError(f"{where} lists {len(shards)} shards but {len(counts)} 'shard_tokens' counts")
    if not _is_count(total) or total != sum(counts):
        raise InherituneError(
            f"{where}: 'tokens' is {total!r} but its shards hold {sum(counts)} tokens (the sum of 'shard_tokens')"
        )
    if "documents" in entry and not _is_count(entry["documents"]):
        raise InherituneError(f"{where}: 'documents' must be a count, not {entry['documents']!r}")


def check_manifest(path: Path, manifest: dict) -> None:
    """Refuse a manifest that lies about its shards or leaves out what readers rely on."""
    _check_tokenizer_entry(path, manifest)
    splits = manifest.get("splits")
    if not isinstance(splits, dict):
        raise InherituneError(f"{path} has no 'splits' entry: rerun `inheritune data prepare`")
    for split in SPLITS:
        if split not in splits:
            raise InherituneError(f"{path} has no '{split}' split (it has: {', '.join(map(str, splits)) or 'none'})")
    for split, entry in splits.items():
        _check_split(path, split, entry)
    uses = Counter(name for entry in splits.values() for name in entry["shards"])
    repeated = sorted(name for name, n in uses.items() if n > 1)
    if repeated:
        raise InherituneError(f"{path} lists shard {repeated[0]} more than once")


def _open_shard(path: Path, count: int, dtype: np.dtype) -> np.ndarray:
    """A shard as a read-only memory map, refused unless its size is exactly ``count`` tokens."""
    if not path.is_file():
        raise InherituneError(f"data shard missing: {path} (listed in {path.parent / MANIFEST})")
    size = path.stat().st_size
    if size != count * dtype.itemsize:
        raise InherituneError(
            f"data shard {path} is truncated or corrupt: it holds {size} bytes, the manifest says "
            f"{count} tokens x {dtype.itemsize} bytes = {count * dtype.itemsize}"
        )
    if count == 0:
        return np.zeros(0, dtype=dtype)  # np.memmap refuses empty files
    return np.memmap(path, dtype=dtype, mode="r")


def _now_ns() -> int:
    return time.time_ns()


def _scan(tokens: np.ndarray) -> int:
    return int(tokens.max()) if len(tokens) else -1


def _cache_key(path: Path, dtype: np.dtype) -> tuple | None:
    """The in-process cache key of a shard, or None while it is too fresh to trust its timestamps."""
    st = os.stat(path)
    if _now_ns() - max(st.st_mtime_ns, st.st_ctime_ns) < RACY_SECONDS * 1e9:
        return None
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, dtype.str)


def max_token_id(tokens: np.ndarray, path: Path) -> int:
    """The largest id in a shard (-1 if empty): one pass, cached by the shard's stat (module docstring)."""
    key = _cache_key(path, tokens.dtype)
    if key is not None and key in _max_ids:
        return _max_ids[key]
    value = _scan(tokens)
    if key is not None:
        _max_ids[key] = value
    return value


def check_token_ids(tokens: np.ndarray, path: Path, vocab_size: int) -> None:
    """Refuse a shard holding an id the tokenizer cannot have produced, naming the id and where."""
    if max_token_id(tokens, path) < vocab_size:
        return
    position = int(np.argmax(tokens >= vocab_size))
    raise InherituneError(
        f"data shard {path} holds token id {int(tokens[position])} at position {position}, past the vocabulary "
        f"(tokenizer.vocab_size {vocab_size} in {path.parent / MANIFEST}): the shard is corrupt or from another "
        f"tokenizer; prepare the data again"
    )


class ShardWriter:
    """Append token arrays to one split's shards, optionally stopping at a token cap.

    Shards are opened lazily and cut at ``shard_tokens``; ``close()`` returns the split's
    manifest entry. Used inside ``io.atomic_dir``, so an interrupted write never looks complete.
    """

    def __init__(self, root: Path, split: str, dtype: np.dtype, shard_tokens: int, limit: int | None = None):
        self.root, self.split, self.dtype = Path(root), split, np.dtype(dtype)
        self.shard_tokens, self.limit = shard_tokens, limit
        self.names: list[str] = []
        self.counts: list[int] = []
        self.tokens = 0
        self.documents = 0
        self._file: BinaryIO | None = None

    @property
    def full(self) -> bool:
        return self.limit is not None and self.tokens >= self.limit

    def write(self, ids: np.ndarray) -> None:
        """One document's ids (EOS included); past the cap, the tail is dropped."""
        if self.full:
            return
        if self.limit is not None:
            ids = ids[: self.limit - self.tokens]
        self.documents += 1
        ids = np.asarray(ids, dtype=self.dtype)
        while len(ids):
            if self._file is None or self.counts[-1] == self.shard_tokens:
                self._next_shard()
            take = min(len(ids), self.shard_tokens - self.counts[-1])
            assert self._file is not None  # opened by _next_shard
            self._file.write(ids[:take].tobytes())
            self.counts[-1] += take
            self.tokens += take
            ids = ids[take:]

    def _next_shard(self) -> None:
        if self._file is not None:
            self._file.close()
        self.names.append(f"{self.split}-{len(self.names):05d}.bin")
        self.counts.append(0)
        self._file = open(self.root / self.names[-1], "wb")  # noqa: SIM115 -- held across writes, closed by close()

    def close(self) -> dict:
        if self._file is not None:
            self._file.close()
            self._file = None
        return {"shards": self.names, "shard_tokens": self.counts, "tokens": self.tokens, "documents": self.documents}
