"""Atomic writes: an output is either complete or absent, never half-written.

Temporaries are hidden and name their owner (``leftovers.py``), so the next command on that output
removes only those a kill left behind. A command's folder is written beside the old one and swapped
in at the end (``RunFolder``).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inheritune.errors import InherituneError
from inheritune.leftovers import (
    clean_leftovers,
    dead_leftover,
    discard,
    hidden_name,
    owner_tag,
    remove_tree,
    say_removed,
    sweep,
    umask,
)


def check_output_dir(out: str | Path, overwrite: bool) -> Path:
    """Refuse to clobber a non-empty folder unless the user asked for it. What a killed write of
    ``out`` left is dealt with first (an interrupted swap undone: ``restore``), and its dead
    temporaries removed once the command may go on (a refusal stays the one line it prints)."""
    out = Path(out)
    restore(out)
    if out.exists() and not out.is_dir():
        raise InherituneError(f"output path {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InherituneError(f"output folder {out} is not empty (pass --overwrite to replace it)")
    clean_leftovers(out.parent, out.name)
    return out


# Replacements being built in this process: work folder -> the folder it will become.
_BUILDING: dict[Path, Path] = {}


def beside(out: Path) -> Path:
    """The sibling a resumable command builds a replacement of ``out`` in: hidden, and on the same
    filesystem, so the swap at the end is two renames. Its name is fixed (not random) so that
    rerunning the same command after a kill finds and continues it."""
    return out.with_name(f".{out.name}.new")


def build_dir(out: Path, continuing: bool) -> Path:
    """Where a command writes ``out``: in place when it continues the run there or there is nothing
    to replace, else beside it, so the previous output survives every failure until the new one is
    complete. Touches nothing but what killed runs left: a swap they interrupted (``restore``) and
    their dead temporaries, inside the run it continues and the replacement beside it too (a rerun
    may never redo the step whose write was killed)."""
    restore(out)
    scopes = [(out.parent, out.name, False), (beside(out), None, True)] + ([(out, None, True)] if continuing else [])
    say_removed([entry for scope in scopes for entry in sweep(*scope)], out.parent)
    occupied = out.is_dir() and any(out.iterdir())
    return beside(out) if occupied and not continuing else out


def restore(out: Path) -> None:
    """Undo a swap killed between its two renames (``swap_in``): put the old output back where it
    was. The new one is still beside it: a resumable command's rerun finishes it again, and a
    one-go output's temporary is a dead leftover that ``clean_leftovers`` removes."""
    if out.exists() or not out.parent.is_dir():
        return
    olds = [
        p
        for p in out.parent.iterdir()
        if (match := dead_leftover(p)) and (match["target"], match["kind"]) == (out.name, "old")
    ]
    if olds:
        os.replace(max(olds, key=lambda p: p.stat().st_ctime), out)  # ctime: when it was renamed


def swap_in(new: Path, out: Path) -> None:
    """Replace ``out`` by the complete folder ``new``: rename the old one away, the new one in, then
    delete the old one. A kill between the renames is undone by ``restore``; one after them leaves
    only a hidden leftover that the next command on ``out`` removes."""
    if out.exists():
        old = hidden_name(out, "old")
        os.replace(out, old)
        os.replace(new, out)
        discard(old)
    else:
        os.replace(new, out)


@contextmanager
def building(out: Path, work: Path) -> Iterator[None]:
    """While ``work`` is being built to become ``out``, paths written into files (``final_paths``)
    name ``out``: a result.json must stay true after the swap."""
    if Path(work) == Path(out):
        yield
        return
    _BUILDING[Path(work)] = Path(out)
    try:
        yield
    finally:
        _BUILDING.pop(Path(work), None)


def _spellings(work: Path, out: Path) -> list[tuple[str, str]]:
    """(work, out) as given and as absolute paths: a path may reach a file in either form."""
    pairs = {(str(work), str(out)), (str(work.absolute()), str(out.absolute()))}
    return sorted(pairs, key=lambda p: -len(p[0]))


def final_paths(obj: Any) -> Any:
    """``obj`` (JSON-like) with every path inside a folder being built renamed to where it will be
    after the swap; also inside text (a verdict naming the model folder). For what goes to disk."""
    if isinstance(obj, dict):
        return {k: final_paths(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [final_paths(v) for v in obj]
    if isinstance(obj, Path):
        return Path(final_paths(str(obj)))
    if not isinstance(obj, str):
        return obj
    for work, out in _BUILDING.items():
        for old, new in _spellings(work, out):
            obj = re.sub(re.escape(old) + r"(?![\w.-])", lambda m: new, obj)  # noqa: B023 -- re.sub calls it at once
    return obj


def current_paths(obj: Any) -> Any:
    """The inverse of ``final_paths`` for paths read back from disk: where those files are now.
    Only whole path values are mapped (text is for people, not for reading back)."""
    if isinstance(obj, dict):
        return {k: current_paths(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [current_paths(v) for v in obj]
    if not isinstance(obj, str):
        return obj
    for work, out in _BUILDING.items():
        for new, old in _spellings(work, out):
            if obj == old or obj.startswith(old + os.sep):
                return str(Path(new) / Path(obj).relative_to(old))
    return obj


@contextmanager
def atomic_dir(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; swap it in as ``out`` only if the block succeeds.

    An existing ``out`` (allowed only with ``overwrite``) is replaced at the end (``swap_in``),
    so an interrupted or failed write leaves the previous contents untouched. For outputs written
    in one go; resumable commands (train, grow, run) use ``build_dir`` and ``swap_in`` directly.
    """
    out = check_output_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{owner_tag()}-", dir=out.parent))
    os.chmod(tmp, 0o777 & ~umask())  # mkdtemp makes it private; the result is an ordinary folder
    try:
        with building(out, tmp):
            yield tmp
        swap_in(tmp, out)
    except BaseException:
        remove_tree(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write a file through a temp file + fsync + rename (removing the temp files of killed writes first)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-{owner_tag()}-", dir=path.parent)
    os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes it private; the result is an ordinary file
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path, what: str = "file") -> Any:
    """Read JSON, turning a missing or corrupt file into a one-line error."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InherituneError(f"{what} not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InherituneError(f"{what} {path} is corrupt: {e}") from None


def differences(stored: dict | None, asked: dict, ignore: frozenset[str] | set[str] = frozenset()) -> list[tuple]:
    """``(key, stored, asked)`` for every setting that differs from the stored one (compared as JSON
    values, so a tuple equals its stored list), but those in ``ignore``: the one same-settings test of
    every resume (train runs, grow runs, recipe runs)."""
    asked = json.loads(json.dumps(asked))
    stored = stored or {}
    return [(k, stored.get(k), v) for k, v in asked.items() if k not in ignore and stored.get(k) != v]


def resumes(out: Path, stamp: str, settings: dict, started_with: str, overwrite: bool) -> bool:
    """True if ``out`` holds a resumable output started with these ``settings`` (recorded in its
    ``stamp`` file); refuse any other content unless ``overwrite``. Touches nothing: the folder is
    claimed (``claim``) only once every input has been checked."""
    if out.exists() and not out.is_dir():
        raise InherituneError(f"output path {out} exists and is not a folder")
    if not (out.is_dir() and any(f.name != stamp for f in out.iterdir())):  # the stamp alone: nothing ran yet
        return False
    stored = read_json(out / stamp, f"{out.name} {stamp}") if (out / stamp).is_file() else None
    diff = differences(stored, settings)
    if stored is not None and not diff and set(stored) == set(json.loads(json.dumps(settings))):
        return True
    if not overwrite:
        keys = [k for k, _, _ in diff]
        what = (
            f"was started with {started_with}" + (f" ({', '.join(keys)} differ)" if keys else "")
            if stored
            else "is not empty"
        )
        raise InherituneError(f"output folder {out} {what}; pass --overwrite to start over or use a new --out")
    return False


def claim(out: Path, work: Path, stamp: str, settings: dict, started_with: str, resuming: bool) -> bool:
    """Make ``work`` (``out``, or the sibling its replacement is built in) ready to write; True if it
    continues an output there. A replacement a kill stopped continues when its settings are these."""
    if work != out:
        resuming = resumes(work, stamp, settings, started_with, overwrite=True)
    if not resuming:
        if work.exists():
            discard(work)  # never ``out``: that is replaced only by the finished ``work``
        work.mkdir(parents=True)
        atomic_write_json(work / stamp, json.loads(json.dumps(settings)))
    return resuming


@dataclass
class RunFolder:
    """A resumable command's output folder, the protocol written once: ``open`` before the slow work
    (a folder started with other settings is refused unless ``overwrite``; nothing is touched),
    ``build`` once every input is checked (a replacement is built beside the old output and claimed
    with its settings stamp), and at the end of ``build`` the complete folder is swapped in; a
    failure or kill at any point leaves the previous output as it was, and a rerun continues."""

    out: Path
    resuming: bool
    stamp: str | None = None  # the settings file in the folder (None: the caller records its own)
    settings: dict | None = None
    started_with: str = "different settings"

    @classmethod
    def open(cls, out: Path, stamp: str, settings: dict, started_with: str, overwrite: bool) -> RunFolder:
        resuming = resumes(out, stamp, settings=settings, started_with=started_with, overwrite=overwrite)
        return cls(out, resuming, stamp, settings, started_with)

    @contextmanager
    def build(self, swap: bool = True) -> Iterator[Path]:
        """The folder to write (``out``, or the hidden sibling a replacement is built in); swapped in
        when the block ends without error (``swap=False``: the caller swaps, e.g. on one rank only)."""
        work = build_dir(self.out, self.resuming)
        with building(self.out, work):
            if self.stamp is not None:
                claim(self.out, work, self.stamp, self.settings or {}, self.started_with, self.resuming)
            yield work
            if swap and work != self.out:
                swap_in(work, self.out)  # the new output is complete: only now is the old one replaced


def csv_text(header: list[str], rows: list[list]) -> str:
    """A CSV file's text: a header row, then one line per row."""
    return "\n".join(",".join(str(x) for x in row) for row in [header, *rows]) + "\n"
