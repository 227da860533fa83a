"""Hidden temporaries that name their owner, and the cleanup of those a kill left behind.

Every hidden temporary names its owner (``.NAME.tmp-HOST-PID-RANDOM``, likewise ``.NAME.old-*`` and
``.NAME.deleting-*``), so the next command on that output can tell one a kill left behind (its
process is gone) from one being written right now, and remove only the former.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Leftovers of a command: its temporaries, the old output it swaps out, and what it is deleting.
_LEFTOVER = re.compile(r"\.(?P<target>.+)\.(?P<kind>tmp|old|deleting)-(?P<tag>[^.]*)")


_HOST = re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())  # no "-" or ".": a tag splits on "-"


_STARTED = time.time()  # a leftover named without its owner is abandoned if it predates this process


_OLD_RANDOM = re.compile(r"[a-z0-9_]{8}")  # what tempfile added to the temporaries of older versions


def owner_tag() -> str:
    """What a temporary's name says of its maker (``HOST-PID``): enough to tell whether it still runs."""
    return f"{_HOST}-{os.getpid()}"


def hidden_name(path: Path, kind: str) -> Path:
    """A hidden sibling of ``path`` of this ``kind`` (old, deleting), owned by this process."""
    return path.with_name(f".{path.name}.{kind}-{owner_tag()}-{os.urandom(4).hex()}")


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (signal 0 tests for it and sends nothing)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process (or no such number)
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _abandoned(path: Path, tag: str) -> bool:
    """Whether the command that made ``path`` is gone: its process (on this host) no longer runs.
    One made on another host (a shared filesystem) is never judged; one an older version named
    without its host (``.NAME.old-PID``) or owner (``.NAME.tmp-RANDOM``) is judged by its PID, or is
    abandoned when it predates this process; any other name is not ours to remove."""
    parts = tag.split("-")
    if len(parts) == 3 and parts[1].isdigit():
        return parts[0] == _HOST and not _alive(int(parts[1]))
    if tag.isdigit():
        return not _alive(int(tag))
    try:
        return _OLD_RANDOM.fullmatch(tag) is not None and path.lstat().st_mtime < _STARTED
    except FileNotFoundError:  # removed meanwhile
        return False


def dead_leftover(entry: Path) -> re.Match | None:
    """The parts of ``entry``'s name (target, kind, tag) if it is a leftover whose command is dead."""
    match = _LEFTOVER.fullmatch(entry.name)
    return match if match is not None and _abandoned(entry, match["tag"]) else None


def _of(made_for: str, target: str | None) -> bool:
    """Whether a leftover made for ``made_for`` is one of ``target`` (any, if None): of it, or of a
    hidden sibling of it (``.NAME.new``, a ``.NAME.old-*`` being deleted)."""
    return target is None or made_for == target or made_for.startswith(f".{target}.")


def _stale(entry: Path, target: str | None) -> bool:
    """A dead leftover of ``target`` that may go. An old output counts only once its replacement is
    in place: until then ``restore`` puts it back."""
    match = dead_leftover(entry)
    if match is None or not _of(match["target"], target):
        return False
    return match["kind"] != "old" or (entry.parent / match["target"]).exists()


def _entries(folder: Path, recursive: bool) -> Iterator[Path]:
    """What ``folder`` holds (and its subfolders, but not the inside of a leftover, when ``recursive``)."""
    for parent, dirs, files in os.walk(folder):
        yield from (Path(parent, name) for name in dirs + files)
        dirs[:] = [d for d in dirs if not _LEFTOVER.fullmatch(d)] if recursive else []


def _main_process() -> bool:
    """One process of a distributed run (rank 0) cleans, so leftovers are removed and reported once."""
    return os.environ.get("RANK", "0") == "0"


def clean_leftovers(folder: Path, target: str | None = None, recursive: bool = False) -> list[Path]:
    """Remove what killed commands left in ``folder`` (of ``target`` only, when given; in its
    subfolders too, when ``recursive``), saying so in one line: a kill must not leave hidden copies
    behind for good, and the next command on that output is the one that can tell they are dead."""
    removed = sweep(folder, target, recursive)
    say_removed(removed, folder)
    return removed


def sweep(folder: Path, target: str | None = None, recursive: bool = False) -> list[Path]:
    """``clean_leftovers`` without the line: for a caller that cleans several places and says so once."""
    if not folder.is_dir() or not _main_process():
        return []
    removed = [entry for entry in _entries(folder, recursive) if _stale(entry, target)]
    for entry in removed:
        remove_tree(entry)
    return removed


def say_removed(removed: list[Path], folder: Path) -> None:
    """One line for all that was removed: a user finding hidden folders gone should know why."""
    if removed:
        names = ", ".join(str(p.relative_to(folder)) for p in removed)
        print(f"inheritune: removed what an interrupted command left in {folder}: {names}", file=sys.stderr)


def remove_tree(path: Path) -> None:
    """Delete a hidden leftover (folder or file): nothing to rename first, its name is already invisible."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def discard(path: Path) -> None:
    """Delete ``path`` by renaming it to a hidden ``.NAME.deleting-*`` first: a kill mid-deletion
    leaves nothing half-deleted under its own name (a checkpoint without its state, a run folder
    whose stamp survived), only a leftover that ``clean_leftovers`` removes."""
    gone = hidden_name(path, "deleting")
    os.replace(path, gone)
    remove_tree(gone)
