"""Text hygiene for error messages: whatever a library raised, the user sees one clean line.

Library errors arrive with line breaks (transformers' multi-part explanations, which a
first-line cut leaves dangling at "one of:") and terminal escape codes (torch's refused-pickle
message is bold); a one-line error must carry neither.
"""
from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")


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
