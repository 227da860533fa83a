"""Atomic writes: an output is either complete or absent, never half-written."""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from inheritune.errors import InherituneError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output_dir(out: str | Path, overwrite: bool) -> Path:
    """Refuse to clobber a non-empty folder unless the user asked for it."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InherituneError(f"output path {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InherituneError(f"output folder {out} is not empty (pass --overwrite to replace it)")
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
    complete. Touches nothing but a swap a kill interrupted (see ``restore``)."""
    restore(out)
    occupied = out.is_dir() and any(out.iterdir())
    return beside(out) if occupied and not continuing else out


def restore(out: Path) -> None:
    """Undo a swap killed between its two renames: put the old output back where it was (the new
    one is still complete beside it, and the rerun that calls this finishes it)."""
    if out.exists() or not beside(out).is_dir():
        return
    olds = sorted(out.parent.glob(f".{out.name}.old-*")) if out.parent.is_dir() else []
    if olds:
        os.replace(olds[-1], out)


def swap_in(new: Path, out: Path) -> None:
    """Replace ``out`` by the complete folder ``new``: rename the old one away, the new one in, then
    delete the old one. A kill between the renames is undone by ``restore``; one after them leaves
    only a hidden ``.NAME.old-PID`` behind."""
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(new, out)
        shutil.rmtree(old, ignore_errors=True)
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
            obj = re.sub(re.escape(old) + r"(?![\w.-])", lambda m: new, obj)
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
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the result is an ordinary folder
    try:
        with building(out, tmp):
            yield tmp
        swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write a file through a temp file + fsync + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; the result is an ordinary file
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
        what = f"was started with {started_with}" + (f" ({', '.join(keys)} differ)" if keys else "") if stored \
            else "is not empty"
        raise InherituneError(f"output folder {out} {what}; pass --overwrite to start over or use a new --out")
    return False


def claim(out: Path, work: Path, stamp: str, settings: dict, started_with: str, resuming: bool) -> bool:
    """Make ``work`` (``out``, or the sibling its replacement is built in) ready to write; True if it
    continues an output there. A replacement a kill stopped continues when its settings are these."""
    if work != out:
        resuming = resumes(work, stamp, settings, started_with, overwrite=True)
    if not resuming:
        if work.exists():
            shutil.rmtree(work)  # never ``out``: that is replaced only by the finished ``work``
        work.mkdir(parents=True)
        atomic_write_json(work / stamp, json.loads(json.dumps(settings)))
    return resuming
