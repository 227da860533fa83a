"""Argument parsing shared by every subcommand: counts as people write them, one-line errors.

Token and step counts are written the way the README writes them (``1e9``, ``1_000_000``);
``type=int`` refuses both. A decimal point is refused even when the value is whole
(``1.5e3``): a count written with one is more often a typo than a wish, and saying exactly
which spellings work costs the user one retry.
"""
from __future__ import annotations

import argparse
import re
import sys
from decimal import Decimal, InvalidOperation
from typing import NoReturn

from inheritune.messages import one_line
from inheritune.options import closest

_INTEGER = re.compile(r"[+-]?\d+(?:_\d+)*")
_SCIENTIFIC = re.compile(r"([+-]?\d+(?:_\d+)*)[eE]\+?(\d+)")
MAX_EXPONENT = 18  # 1e18 tokens is beyond any corpus; larger exponents are typos


EXAMPLES = "counts are written like 1000000, 1_000_000 or 1e6"


def _spellings(value: int) -> str:
    """The accepted ways to write ``value``, e.g. ``1500, 1_500 or 15e2`` (duplicates dropped)."""
    digits = str(abs(value)).rstrip("0") or "0"
    zeros = len(str(abs(value))) - len(digits)
    sign = "-" if value < 0 else ""
    forms = list(dict.fromkeys([str(value), f"{value:_}", f"{sign}{digits}e{zeros}" if zeros else str(value)]))
    return forms[0] if len(forms) == 1 else ", ".join(forms[:-1]) + " or " + forms[-1]


def _refusal(text: str) -> str:
    """Why ``text`` is not a count; for a whole number written with a point, how to write it."""
    try:
        value = Decimal(text.replace("_", ""))
    except InvalidOperation:
        return f"'{text}' is not a count ({EXAMPLES})"
    whole = value.is_finite() and value == value.to_integral_value() and abs(value) < Decimal(10) ** MAX_EXPONENT
    if whole and "." in text:
        return f"'{text}' is not a whole count (write {_spellings(int(value))})"
    return f"'{text}' is not a whole count ({EXAMPLES})"


def count(text: str) -> int:
    """A token/step/example count: ``1000000``, ``1_000_000`` or ``1e6`` (integer mantissa).

    For ``argparse`` ``type=``: a refusal raises ``ArgumentTypeError``, which the parser turns
    into one line naming the option.
    """
    text = text.strip()
    if _INTEGER.fullmatch(text):
        return int(text.replace("_", ""))
    match = _SCIENTIFIC.fullmatch(text)
    if match:
        exponent = int(match.group(2))
        if exponent > MAX_EXPONENT:
            raise argparse.ArgumentTypeError(f"'{text}' is too large for a count (at most 1e{MAX_EXPONENT})")
        return int(match.group(1).replace("_", "")) * 10**exponent
    raise argparse.ArgumentTypeError(_refusal(text))


def csv_list(text: str) -> list[str]:
    """A list option, the one syntax every command uses: ``--tasks a,b`` (comma-separated, blanks
    dropped), so that a list never swallows the positional argument after it."""
    return [item.strip() for item in text.split(",") if item.strip()]


def device_options(p: argparse.ArgumentParser) -> None:
    """Where a command that only reads a model runs it: ``--device`` or accelerate's ``--device-map``."""
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--device-map", choices=["auto"], default=None,
                   help="'auto': spread a model too large for one device over every GPU (then CPU), with accelerate")


class HelpFormatter(argparse.HelpFormatter):
    """``--help`` names every option's default: ``(default: X)`` unless the help already says."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help = action.help or ""
        if "default" in help or action.default is argparse.SUPPRESS or not action.option_strings or action.required:
            return help
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            return help
        default = action.default
        if isinstance(action, argparse._StoreTrueAction):
            shown = "off"
        elif default is None or default == [] or default == "":
            shown = "none"
        else:
            shown = "%(default)s" if not isinstance(default, list) else ",".join(map(str, default))
        return f"{help} (default: {shown})" if help else f"(default: {shown})"

class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line, like every other inheritune error.

    The usage block argparse prints first buries the one line that matters; ``--help`` still
    shows it in full.
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        message = one_line(re.sub(r"^argument ", "", message))
        unknown = re.match(r"unrecognized arguments: (-\S+)", message)
        if unknown:
            message += closest(unknown.group(1).split("=")[0], self._all_options())
        print(f"inheritune: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)

    def _all_options(self) -> list[str]:
        """Every option string of this parser and of its subcommands' (argparse reports an unknown
        option of a subcommand from the top parser)."""
        found = list(self._option_string_actions)
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    found += sub._all_options() if isinstance(sub, Parser) else list(sub._option_string_actions)
        return found
