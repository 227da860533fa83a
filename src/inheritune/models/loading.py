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
import logging
from pathlib import Path
from typing import Literal, cast, overload

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from inheritune.atomic import atomic_dir, atomic_write_json, atomic_write_text
from inheritune.errors import InherituneError
from inheritune.models.families import family_of
from inheritune.models.load_checks import check_loaded
from inheritune.models.model_source import (
    Source,
    check_remote_code,
    load_failure,
    resolve,
    where,
)


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
    check_remote_code(source, trust_remote_code)
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
        raise load_failure("model", source, e) from None
    check_loaded(model, info, source)
    adapters = Path(source.location) / ADAPTERS
    if source.kind == "folder" and (adapters / "adapter_config.json").is_file():
        model = _with_adapters(model, adapters)
    if getattr(model.config, "quantization_config", None) is not None and source.kind == "gguf":
        del model.config.quantization_config  # weights are dequantized: save them as a plain model
        # else save_pretrained refuses the (no longer) quantized model
        model.hf_quantizer = None  # type: ignore[assignment]  # transformers sets it undeclared: typed as a submodule
    model.eval()
    return model if device_map else model.to(device)  # type: ignore[arg-type]  # functools.wraps: .to typed unbound


ADAPTERS = "adapter"  # train --no-lora-merge: the folder holds the untouched base, peft's adapters in here


def _with_adapters(model: PreTrainedModel, folder: Path) -> PreTrainedModel:
    """A LoRA run kept apart: its adapters merged into the base, so every command (eval, export,
    derive, a further train) uses the model that was trained, not the base it started from."""
    from peft import PeftModel

    try:
        merged = PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
    except Exception as e:
        raise InherituneError(f"{folder}: the LoRA adapters cannot be applied: {str(e).splitlines()[0]}") from None
    return cast(PreTrainedModel, merged)


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
            raise _no_tokenizer(where(source))
        return None
    if source.kind == "folder":
        check_remote_code(source, trust_remote_code)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source.location, trust_remote_code=trust_remote_code, **source.kwargs()
        )
    except Exception as e:
        raise load_failure("tokenizer", source, e) from None
    if len(tokenizer) == 0:  # files that describe no vocabulary
        if required:
            raise _no_tokenizer(where(source))
        return None
    return tokenizer


def load_config(reference: str | Path | PreTrainedModel, trust_remote_code: bool = False) -> PretrainedConfig:
    """A model's config without its weights (a GGUF's from its metadata): what commands check their
    options against before they write anything."""
    if isinstance(reference, PreTrainedModel):
        return reference.config
    source = resolve(reference)
    check_remote_code(source, trust_remote_code)
    try:
        return AutoConfig.from_pretrained(source.location, trust_remote_code=trust_remote_code, **source.kwargs())
    except Exception as e:
        raise load_failure("the config", source, e) from None


def skeleton(config: PretrainedConfig, trust_remote_code: bool = False) -> PreTrainedModel:
    """A model of ``config``'s shape on the meta device: its modules and shapes, no weights, no memory."""
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)


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
