"""The base of every command's typed result (``DeriveResult``, ``TrainResult``, ``PruneResult``, ...).

A result is a dataclass naming what the command wrote: ``to_json`` gives plain JSON values
(paths as strings), ``from_json`` reads them back (fields typed ``Path`` become paths again, and
fields typed as a dataclass, or a list of one, become those dataclasses: ``Record``), and
``report()`` is what the command's own JSON file holds (everything but the output folder and
the timing, which differ between two runs of the same command); ``summary()`` what the CLI prints.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

TIMING = ("out", "seconds")


def _plain(value: Any) -> Any:
    """JSON values: paths as strings, in nested dataclasses, lists and dicts too."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _typed(kind: Any, value: Any) -> Any:
    """``value`` read back as ``kind``: a path, a Record, a list or dict of them, or as it is."""
    if value is None:
        return None
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and len(args) == 1:  # X | None
        return _typed(args[0], value)
    if kind is Path:
        return Path(value)
    if isinstance(kind, type) and issubclass(kind, Record):
        return kind.from_json(value)
    if typing.get_origin(kind) is list and args:
        return [_typed(args[0], v) for v in value]
    if typing.get_origin(kind) is dict and len(args) == 2:
        return {k: _typed(args[1], v) for k, v in value.items()}
    return value


@dataclasses.dataclass
class Record:
    """A typed value that round-trips through JSON (``to_json``/``from_json``)."""

    def to_json(self) -> dict:
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, d: dict) -> Any:
        if isinstance(d, cls):
            return d
        hints = typing.get_type_hints(cls)
        return cls(**{k: _typed(hints.get(k), v) for k, v in d.items()})


@dataclasses.dataclass
class CommandResult(Record):
    """What a command wrote (see the module's docstring)."""

    def report(self) -> dict:
        return {k: v for k, v in self.to_json().items() if k not in TIMING}

    def summary(self) -> str:
        """What the CLI prints of the result (the files hold the rest); nothing unless a command says."""
        return ""
