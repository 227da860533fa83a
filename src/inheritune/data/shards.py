"""The on-disk token format every command shares: binary shards plus a JSON manifest.

A data folder holds ``manifest.json`` and, per split (``train``, ``val``), flat arrays of
token ids (``uint16`` when the vocabulary fits, else ``uint32``), documents separated by EOS.
Readers memory-map the shards; nothing loads a whole corpus.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inheritune.errors import InherituneError
from inheritune.io import read_json

MANIFEST = "manifest.json"
FORMAT = "inheritune-tokens/1"
SPLITS = ("train", "val")


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
        arrays = []
        for name in self.manifest["splits"][split]["shards"]:
            path = self.root / name
            if not path.is_file():
                raise InherituneError(f"data shard missing: {path}")
            expected = self.manifest["splits"][split]["shard_tokens"][len(arrays)]
            if path.stat().st_size != expected * self.dtype.itemsize:
                raise InherituneError(f"data shard {path} is truncated or corrupt (size does not match the manifest)")
            arrays.append(np.memmap(path, dtype=self.dtype, mode="r"))
        return arrays

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
    """Open a prepared data folder, with one-line errors for anything that is not one."""
    root = Path(root)
    if not root.is_dir():
        raise InherituneError(f"data folder not found: {root} (create it with `inheritune data prepare`)")
    manifest = read_json(root / MANIFEST, "data manifest")
    if manifest.get("format") != FORMAT:
        raise InherituneError(f"{root / MANIFEST} is not an inheritune data manifest (format {manifest.get('format')!r})")
    return TokenData(root, manifest)


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
        self._file = None

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
            self._file.write(ids[:take].tobytes())
            self.counts[-1] += take
            self.tokens += take
            ids = ids[take:]

    def _next_shard(self) -> None:
        if self._file is not None:
            self._file.close()
        self.names.append(f"{self.split}-{len(self.names):05d}.bin")
        self.counts.append(0)
        self._file = open(self.root / self.names[-1], "wb")

    def close(self) -> dict:
        if self._file is not None:
            self._file.close()
            self._file = None
        return {"shards": self.names, "shard_tokens": self.counts, "tokens": self.tokens, "documents": self.documents}
