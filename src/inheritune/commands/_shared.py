"""What the model-scoring commands (importance, prune, induction) share: loading, checks, results."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from transformers import PreTrainedModel

from inheritune.errors import InherituneError
from inheritune.result import CommandResult  # noqa: F401  (the commands' results derive from it)
from inheritune.models.families import family_of
from inheritune.options import closest
from inheritune.models.loading import check_device, check_tokenizer_fits, load_model, load_tokenizer


def positive(value: int, name: str) -> None:
    if value < 1:
        raise InherituneError(f"{name} must be at least 1, not {value}")


def check_names(values: Sequence[str], allowed: Sequence[str], option: str) -> list[str]:
    """A list option's values, each one of ``allowed``."""
    values = [values] if isinstance(values, str) else list(values)
    for value in values:
        if value not in allowed:
            raise InherituneError(f"{option}: '{value}' is not one of {', '.join(allowed)}{closest(value, allowed)}")
    return values


def model_name(model: str | Path | PreTrainedModel) -> str:
    """The model as the user named it (a loaded model: the name it was loaded from)."""
    if isinstance(model, PreTrainedModel):
        return str(getattr(model.config, "_name_or_path", "") or type(model).__name__)
    return str(model)


def load(model, tokenizer, trust_remote_code: bool, needed: bool, no_tokenizer: str, device: str = "cpu",
         device_map: str | None = None):
    """Model and tokenizer (each a reference or already loaded). The tokenizer is None for a
    weights-only model when nothing ``needed`` it; ``no_tokenizer`` says then what that means.
    A reference loads onto ``device`` (or spread by ``device_map``); a loaded model stays where it is."""
    check_device(device, device_map)
    loaded = model if isinstance(model, PreTrainedModel) else load_model(
        model, trust_remote_code=trust_remote_code, device=device, device_map=device_map)
    family_of(loaded.config)  # a model whose heads the family table does not know fails in one line
    if tokenizer is None or isinstance(tokenizer, (str, Path)):
        given = tokenizer is not None
        source = tokenizer if given else model
        if isinstance(source, PreTrainedModel):
            source = getattr(source.config, "_name_or_path", None)
        tok = load_tokenizer(source, trust_remote_code=trust_remote_code, required=needed or given) if source else None
        if given:
            check_tokenizer_fits(loaded, tok, str(source))
    else:
        tok = tokenizer
        check_tokenizer_fits(loaded, tok, "the given tokenizer")
    if tok is None:
        if needed:
            raise InherituneError(f"{model_name(model)} has no tokenizer (attach one with --tokenizer REF)")
        print(f"{model_name(model)} has no tokenizer: {no_tokenizer}", flush=True)
    return loaded, tok


def csv_text(header: list[str], rows: list[list]) -> str:
    return "\n".join(",".join(str(x) for x in row) for row in [header] + rows) + "\n"
