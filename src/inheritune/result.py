"""The base of every command's typed result (``DeriveResult``, ``TrainResult``, ``PruneResult``, ...).

A result is a dataclass naming what the command wrote: ``to_json`` gives plain JSON values
(paths as strings), ``from_json`` reads them back (fields typed ``Path`` become paths again), and
``report()`` is what the command's own JSON file holds (everything but the output folder and
the timing, which differ between two runs of the same command); ``summary()`` what the CLI prints.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

TIMING = ("out", "seconds")


@dataclasses.dataclass
class CommandResult:
    def to_json(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, d: dict) -> Any:
        paths = {f.name for f in dataclasses.fields(cls) if f.type in ("Path", Path, "Path | None")}
        return cls(**{k: Path(v) if k in paths and v is not None else v for k, v in d.items()})

    def report(self) -> dict:
        return {k: v for k, v in self.to_json().items() if k not in TIMING}

    def summary(self) -> str:
        """What the CLI prints of the result (the files hold the rest); nothing unless a command says."""
        return ""
