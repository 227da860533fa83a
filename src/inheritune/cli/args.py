"""Argument parsing shared by every subcommand: list and device options, ``--help`` with every
default, one-line errors. Count options (``1e6``, ``1_000_000``) parse with
``inheritune.options.count``, as recipe and config values do.
"""
from __future__ import annotations

import argparse
import re
import sys
from typing import NoReturn

from inheritune.messages import one_line
from inheritune.options import closest


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
