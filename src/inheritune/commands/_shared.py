"""What the model-scoring commands (importance, prune, induction) share: loading, checks, results."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from inheritune.errors import InherituneError
from inheritune.result import CommandResult  # noqa: F401  (the commands' results derive from it)
from inheritune.models.loading import load, model_name  # noqa: F401  (the commands' one loader)
from inheritune.options import closest


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


def csv_text(header: list[str], rows: list[list]) -> str:
    return "\n".join(",".join(str(x) for x in row) for row in [header] + rows) + "\n"
