"""The teacher computed once per token: its last hidden states, stored on disk and shared by every
run that trains on the same windows of the same data.

Distillation's largest cost is the teacher's forward pass, yet the teacher sees the same tokens
again and again: every KD arm of a recipe, every growth round, a resume, a sweep. A training
window is a pure function of (data, seq_len, its start in the train stream) (data/loader.py), so
the teacher's last hidden states of a window can be computed once and read back by anyone who
draws that window again. The LM head then recomputes the teacher's logits chunk by chunk beside
the student's (training/objective.py), so the loss and its gradients are the uncached ones exactly:
the states are stored in the dtype the fused loss computes in (fp32, or bf16 under bf16 autocast),
the very values it would have cast them to.

Two forms (``teacher_states``): ``hidden``, the teacher's last hidden states (576 numbers, 2.3 KB
per token in fp32 for SmolLM2, against 196 KB for its 49,152 logits), exact, with the head's
matmul and the teacher's softmax still paid per step; ``top:K``, its K most likely tokens with
their exact probabilities and the rest of the mass spread by a stated rule (loss.py's TopK):
approximate, 8K + 4 bytes per token, and nearly the price of cross-entropy. The same form gives
the same loss cached or not; benchmarks/bench_distill.py measures both.

Layout: ``ROOT/DATA-HASH-seqL/TEACHER/FORM/`` holds ``meta.json`` (what the states are of: the
teacher's weights, the data's identity, precision, seq_len, shape, temperature for top:K) and
segments: each writing process appends windows to its own ``seg-*.bin`` and, only once a window's
bytes are written and flushed, one record (start, byte offset, CRC-32) to the segment's ``.idx``.
A kill mid-window therefore leaves bytes no record points to, which are never read; a torn record
(a short tail) is ignored. A record whose bytes are missing or fail their checksum is refused,
naming the file. A cache whose meta names other weights, data or dtype is cleared with one line
and computed again.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import socket
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import torch
from transformers import PreTrainedModel

from inheritune.atomic import atomic_write_json, read_json
from inheritune.data.shards import MANIFEST, TokenData
from inheritune.errors import InherituneError
from inheritune.leftovers import discard
from inheritune.specs import HIDDEN, TeacherStates
from inheritune.training.objective import TopK
from inheritune.training.train_result import CacheStats

FORMAT = "inheritune-teacher-cache/1"
RECORD = np.dtype([("start", "<i8"), ("offset", "<i8"), ("crc", "<u4"), ("pad", "<u4")])
STORED = {
    torch.float32: ("fp32", np.float32),
    torch.bfloat16: ("bf16", np.uint16),
    torch.float16: ("fp16", np.float16),
    torch.int32: ("int32", np.int32),
}
AUTO_LIMIT = 64 * 2**30  # "auto" never plans a cache larger than this, nor than half the free disk


def default_root() -> Path:
    """``$INHERITUNE_CACHE/teacher`` (default ``~/.cache/inheritune/teacher``): shared by every run of this user."""
    base = os.environ.get("INHERITUNE_CACHE") or Path.home() / ".cache" / "inheritune"
    return Path(base) / "teacher"


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A hash of every parameter and buffer (names, shapes, dtypes, bytes): other weights, another cache."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def data_identity(data: TokenData) -> str:
    """The train split's identity: the manifest and each shard's (size, mtime, ctime, inode). ctime
    cannot be set by users, so any rewrite of a shard changes it (as data/shards.py's scan cache)."""
    h = hashlib.blake2b((data.root / MANIFEST).read_bytes(), digest_size=16)
    for name in data.manifest["splits"]["train"]["shards"]:
        st = os.stat(data.root / name)
        h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino};".encode())
    return h.hexdigest()


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[-80:] or "teacher"


def folder_for(root: Path, teacher: str, data: TokenData, seq_len: int) -> Path:
    """One cache per (data folder, seq_len, teacher name); what they hold is checked against meta.json."""
    where = hashlib.blake2b(str(data.root.resolve()).encode(), digest_size=4).hexdigest()
    return root / f"{slug(data.root.resolve().name)}-{where}-seq{seq_len}" / slug(teacher)


@dataclass
class _Entry:
    segment: Path
    offset: int
    crc: int


def fields(form: TeacherStates, width: int, dtype: torch.dtype) -> list[tuple[str, torch.dtype, int]]:
    """What one token's entry holds: (name, dtype, numbers per token)."""
    k = form.k
    if k is None:
        return [("hidden", dtype, width)]
    return [("values", torch.float32, k), ("indices", torch.int32, k), ("lse", torch.float32, 1)]


def token_bytes(layout: list[tuple[str, torch.dtype, int]]) -> int:
    return sum(n * np.dtype(STORED[dtype][1]).itemsize for _, dtype, n in layout)


@dataclass
class TeacherCache:
    """Windows' teacher states by their start in the train stream (see the module docstring)."""

    folder: Path
    seq_len: int
    form: TeacherStates  # hidden | top:K
    layout: list[tuple[str, torch.dtype, int]]
    entries: dict[int, _Entry] = field(default_factory=dict)
    hits: int = 0  # windows read back
    computed: int = 0  # windows computed (and stored) by this process
    compute_seconds: float = 0.0
    _segment: Path | None = None

    @property
    def bytes_per_token(self) -> int:
        return token_bytes(self.layout)

    @property
    def window_bytes(self) -> int:
        return self.seq_len * self.bytes_per_token

    def states(self, starts: list[int], inputs: torch.Tensor, compute: Callable[[torch.Tensor], object]):
        """The teacher's states of ``inputs`` [rows, seq_len] (a Tensor [rows * seq_len, width], or a
        TopK), whose rows are the windows starting at ``starts``: read where stored, else computed
        with ``compute`` and stored."""
        rows: list[list[torch.Tensor] | None] = [self._read(s) for s in starts]
        missing = [i for i, r in enumerate(rows) if r is None]
        if missing:
            begin = time.perf_counter()
            fresh = _as_fields(compute(inputs[missing]), self.layout)
            for n, i in enumerate(missing):
                window = [f[n * self.seq_len : (n + 1) * self.seq_len] for f in fresh]
                rows[i] = window
                self._write(starts[i], window)
            self.compute_seconds += time.perf_counter() - begin
            self.computed += len(missing)
        self.hits += len(starts) - len(missing)
        filled = cast(list[list[torch.Tensor]], rows)  # every missing row was computed above
        joined = [torch.cat([r[f] for r in filled]).to(inputs.device) for f in range(len(self.layout))]
        return joined[0] if self.form.k is None else TopK(joined[0], joined[1], joined[2].flatten())

    def stats(self) -> CacheStats:
        return CacheStats(
            folder=str(self.folder),
            form=self.form,
            windows_read=self.hits,
            windows_computed=self.computed,
            compute_seconds=round(self.compute_seconds, 2),
            bytes_per_token=self.bytes_per_token,
        )

    def _read(self, start: int) -> list[torch.Tensor] | None:
        entry = self.entries.get(start)
        if entry is None:
            return None
        size = entry.segment.stat().st_size
        if entry.offset + self.window_bytes > size:
            raise _corrupt(entry.segment, f"ends at byte {size}, before the window at token {start} it indexes")
        raw = np.memmap(entry.segment, dtype=np.uint8, mode="r", offset=entry.offset, shape=(self.window_bytes,))
        if zlib.crc32(raw.data) != entry.crc:
            raise _corrupt(entry.segment, f"the window at token {start} fails its checksum")
        out, at = [], 0
        for _, dtype, n in self.layout:
            size = self.seq_len * n * np.dtype(STORED[dtype][1]).itemsize
            array = np.array(raw[at : at + size]).view(STORED[dtype][1]).reshape(self.seq_len, n)
            out.append(torch.from_numpy(array).view(dtype))
            at += size
        return out

    def _write(self, start: int, parts: list[torch.Tensor]) -> None:
        """The window's bytes, flushed, then its record: a record never points at unwritten bytes."""
        if self._segment is None:
            self._segment = self.folder / f"seg-{slug(socket.gethostname())}-{os.getpid()}-{secrets.token_hex(3)}.bin"
        data = b"".join(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes() for p in parts)
        with open(self._segment, "ab") as f:
            offset = f.tell()
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        crc = zlib.crc32(data)
        with open(self._segment.with_suffix(".idx"), "ab") as f:
            f.write(np.array([(start, offset, crc, 0)], dtype=RECORD).tobytes())
        self.entries.setdefault(start, _Entry(self._segment, offset, crc))


def _as_fields(states, layout: list[tuple[str, torch.dtype, int]]) -> list[torch.Tensor]:
    """A computed Tensor or TopK as the layout's fields, [tokens, n] each, in their stored dtypes."""
    parts = [states] if isinstance(states, torch.Tensor) else [states.values, states.indices, states.lse]
    return [p.reshape(p.shape[0], n).to(dtype).cpu() for p, (_, dtype, n) in zip(parts, layout, strict=True)]


def _corrupt(path: Path, why: str) -> InherituneError:
    return InherituneError(f"teacher cache file {path} is corrupt ({why}); delete {path.parent} to compute it again")


def _load_entries(folder: Path) -> dict[int, _Entry]:
    entries: dict[int, _Entry] = {}
    for idx in sorted(folder.glob("seg-*.idx")):
        raw = idx.read_bytes()
        records = np.frombuffer(
            raw[: len(raw) // RECORD.itemsize * RECORD.itemsize], dtype=RECORD
        )  # a torn tail: ignored
        segment = idx.with_suffix(".bin")
        for start, offset, crc, _ in records:
            entries.setdefault(int(start), _Entry(segment, int(offset), int(crc)))
    return entries


def open_cache(
    root: Path,
    teacher_name: str,
    teacher: PreTrainedModel,
    data: TokenData,
    seq_len: int,
    dtype: torch.dtype,
    form: TeacherStates = HIDDEN,
    temperature: float = 1.0,
    quiet: bool = False,
) -> TeacherCache:
    """The cache of this teacher's states on this data, created or cleared (one line) as needed.
    ``dtype`` is the precision the states are computed in; ``temperature`` shapes top:K states."""
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise InherituneError(f"the teacher cache stores fp32, bf16 or fp16 states, not {dtype}")
    layout = fields(form, teacher.get_output_embeddings().weight.shape[1], dtype)
    folder = folder_for(root, teacher_name, data, seq_len) / form.replace(":", "")
    meta = {
        "format": FORMAT,
        "teacher": teacher_name,
        "weights": weights_fingerprint(teacher),
        "data": str(data.root.resolve()),
        "data_identity": data_identity(data),
        "seq_len": seq_len,
        "form": form,
        "layout": [[name, STORED[d][0], n] for name, d, n in layout],
        "dtype": STORED[dtype][0],
        "temperature": temperature if form.k is not None else None,
    }
    if (folder / "meta.json").is_file():
        stored = read_json(folder / "meta.json", "teacher cache meta")
        changed = [
            k
            for k in ("format", "weights", "data_identity", "seq_len", "layout", "dtype", "temperature")
            if stored.get(k) != meta[k]
        ]
        if changed:
            if not quiet:
                print(
                    f"inheritune: teacher cache {folder} was computed with other {_what(changed)}: computing it again",
                    file=sys.stderr,
                )
            discard(folder)
    if not (folder / "meta.json").is_file():
        if folder.exists():  # segments without meta: a creation that a kill stopped
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        atomic_write_json(folder / "meta.json", meta)
    return TeacherCache(folder, seq_len, form=form, layout=layout, entries=_load_entries(folder))


def _what(changed: list[str]) -> str:
    names = {
        "weights": "teacher weights",
        "data_identity": "data",
        "dtype": "precision",
        "format": "format",
        "seq_len": "seq_len",
        "layout": "shape",
        "temperature": "temperature",
    }
    return ", ".join(names[k] for k in changed)


def fits(root: Path, tokens: int, bytes_per_token: int) -> bool:
    """Whether "auto" caches a run of ``tokens`` teacher tokens: at most AUTO_LIMIT and half the free disk."""
    probe = root
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    return tokens * bytes_per_token <= min(AUTO_LIMIT, free // 2)
