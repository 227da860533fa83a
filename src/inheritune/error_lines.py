"""Text hygiene for error messages: whatever a library raised, the user sees one clean line.

Library errors arrive with line breaks (transformers' multi-part explanations, which a
first-line cut leaves dangling at "one of:") and terminal escape codes (torch's refused-pickle
message is bold); a one-line error must carry neither. What libraries print on their own while
they work (lm-eval's notices, datasets' progress bars) is held back where it could precede an
error (``held_back``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import sys
from collections.abc import Iterator

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
# Loggers whose handlers (if they set one up) write to the stderr they found, which a redirect misses.
LIBRARY_LOGGERS = ("lm_eval", "lm-eval", "datasets", "huggingface_hub", "fsspec", "transformers")


def strip_ansi(text: str) -> str:
    """``text`` without terminal escape sequences (colours, bold)."""
    return _ANSI.sub("", text)


def one_line(text: str, limit: int | None = None) -> str:
    """``text`` as one line: escapes removed, whitespace runs (newlines included) collapsed,
    cut at ``limit`` characters with an ellipsis so a long library message still ends visibly."""
    line = " ".join(strip_ansi(text).split())
    if limit is not None and len(line) > limit:
        line = line[: limit - 1].rstrip() + "…"
    return line


@contextlib.contextmanager
def held_back() -> Iterator[None]:
    """Hold back what libraries print during the block (stdout, stderr, their loggers' output):
    written to stderr once the block succeeds, dropped when it raises, so that a failing command
    prints its one error line and nothing else (the error says what went wrong)."""
    held = io.StringIO()
    handlers = [
        h
        for name in ("", *LIBRARY_LOGGERS)
        for h in logging.getLogger(name).handlers
        if type(h) is logging.StreamHandler
    ]  # not FileHandler: log files are not the terminal
    streams = [h.stream for h in handlers]
    for handler in handlers:
        handler.stream = held  # not setStream: it flushes the old stream, which may be closed
    try:
        with contextlib.redirect_stdout(held), contextlib.redirect_stderr(held):
            yield
    finally:
        for handler, stream in zip(handlers, streams, strict=True):
            handler.stream = stream
    sys.stderr.write(held.getvalue())
