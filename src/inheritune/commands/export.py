"""`inheritune export`: a model folder (or any reference) as one GGUF file for llama.cpp.

``export(model, gguf=OUT)`` is ``inheritune export MODEL --gguf OUT.gguf [--type f16]``. The file
is written beside ``OUT`` and renamed into place when complete; an existing ``OUT`` is replaced
only with ``--overwrite``. The work is ``models.gguf_export``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from transformers import PreTrainedModel

from inheritune.errors import InherituneError
from inheritune.models.gguf_export import TYPES, check_type, export_gguf, layout_of
from inheritune.models.loading import load, load_config, model_name
from inheritune.result import CommandResult

HELP = {
    "gguf": "the GGUF file to write (e.g. model.gguf)",
    "type": "tensor type of the matrices: f32 (exact), f16, bf16 or q8_0 (8-bit blocks of 32); norms stay f32",
    "no_tokenizer": "write the weights alone (a tokenizer GGUF cannot hold is otherwise refused)",
    "overwrite": "replace an existing --gguf file (the new one is written beside it and renamed over it)",
}
CHOICES = {"type": list(TYPES)}


@dataclasses.dataclass
class ExportResult(CommandResult):
    """What ``export`` wrote."""

    out: Path  # the GGUF file
    model: str
    arch: str  # the llama.cpp architecture it is written as
    type: str
    tensors: int
    bytes: int
    tokenizer: bool
    seconds: float

    def summary(self) -> str:
        return (
            f"exported {self.model} as {self.arch} GGUF ({self.type}, {self.tensors} tensors, "
            f"{self.bytes / 1e6:.1f} MB{', with its tokenizer' if self.tokenizer else ''}) -> {self.out}"
        )


def export(
    model: str | Path | PreTrainedModel,
    *,
    gguf: str | Path,
    type: str = "f16",
    no_tokenizer: bool = False,
    overwrite: bool = False,
    trust_remote_code: bool = False,
) -> ExportResult:
    """Write ``model`` (alias, folder, .gguf or hub id) and its tokenizer as one GGUF file ``gguf``."""
    start, out = time.perf_counter(), Path(gguf)
    check_type(type)
    if out.suffix != ".gguf":
        raise InherituneError(f"--gguf {out}: the file name must end in .gguf")
    if out.is_dir() or (out.exists() and not overwrite):
        raise InherituneError(f"{out} exists; pass --overwrite to replace it")
    if not out.parent.is_dir():
        raise InherituneError(f"{out.parent} is not a folder")
    config = model.config if isinstance(model, PreTrainedModel) else load_config(model, trust_remote_code)
    layout_of(config)  # a family GGUF cannot express fails before the load
    loaded, tok = load(
        model,
        trust_remote_code=trust_remote_code,
        needed=not no_tokenizer,
        no_tokenizer="the GGUF file holds the weights alone",
    )
    written = export_gguf(loaded.eval(), None if no_tokenizer else tok, out, type)
    return ExportResult(
        out=out,
        model=model_name(model),
        arch=written.arch,
        type=type,
        tensors=written.tensors,
        bytes=written.bytes,
        tokenizer=written.tokenizer,
        seconds=time.perf_counter() - start,
    )
