"""The generator: a command's options are read off its library function, so a new keyword is one edit.

Help: the command module's ``HELP``/``CHOICES``, else ``inheritune.commands.HELP``. The first
parameter is positional, every other one ``--its-name`` (required without a default). The type
hint picks the parsing: ``bool`` a switch, ``str`` as typed, a sequence comma-separated, ``int`` a
count (``1e6``: ``options.count``), ``float``; what no command line can spell stays Python-only.
``**options`` are TrainConfig's fields, read by ``make_config`` as it reads a ``--config`` YAML.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import re
import sys
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from inheritune import commands
from inheritune.error_lines import one_line
from inheritune.options import closest, count
from inheritune.training.train_config import HELP as TRAINING
from inheritune.training.train_config import TrainConfig


@dataclasses.dataclass(frozen=True)
class Command:
    """A subcommand: its function and its line in ``inheritune --help``; ``fixed``: TrainConfig fields
    the function sets itself; ``switches``: CLI-only flags that run instead of it (flag and help:
    each one's name and docstring)."""

    function: Callable[..., Any]
    help: str
    fixed: tuple[str, ...] = ()
    switches: tuple[Callable[..., str], ...] = ()  # called with the command's keywords: the text to print


class Parser(argparse.ArgumentParser):
    """Errors are one line, like every other inheritune error: the usage block argparse prints
    first would bury it (``--help`` still shows it). Descriptions are docstrings: paragraphs kept."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{"formatter_class": argparse.RawDescriptionHelpFormatter, **kwargs})

    def error(self, message: str) -> NoReturn:
        message = one_line(re.sub(r"^argument ", "", message))
        unknown = re.match(r"unrecognized arguments: (-\S+)", message)
        if unknown:
            message += closest(unknown.group(1).split("=")[0], self.option_names())
        print(f"inheritune: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)

    def option_names(self) -> list[str]:
        """Its options and its subcommands' (argparse reports a subcommand's unknown option from the top)."""
        subs = [p for a in self._actions if isinstance(a, argparse._SubParsersAction) for p in a.choices.values()]
        return [*self._option_string_actions, *(name for p in subs for name in p.option_names())]


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def described(text: str, default: Any) -> str:
    """``text`` naming ``default`` (``--help`` shows every one), unless it already says it in words."""
    if "default" in text:
        return text
    shown = (
        "off"
        if default is False
        else "on"
        if default is True
        else "none"
        if default in (None, "", (), [])
        else ",".join(map(str, default))
        if isinstance(default, (list, tuple))
        else default
    )
    return f"{text} (default: {shown})".strip()


def spelling(hint: Any, default: Any) -> dict | None:
    """How a parameter of type ``hint`` is written; None when no command line can write it."""
    members = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    items = [typing.get_args(m)[0] for m in members if typing.get_origin(m) in (list, Sequence)]
    if bool in members:
        return {"action": "store_true" if default is False else argparse.BooleanOptionalAction}
    if str in members or Path in members:
        return {}
    if items:
        read = count if items[0] is int else items[0]
        return {
            "type": lambda text: [read(item.strip()) for item in text.split(",") if item.strip()],
            "metavar": "A,B,...",
        }
    return {"type": count} if int in members else {"type": float} if float in members else None


def add_command(sub: argparse._SubParsersAction, name: str, command: Command) -> None:
    """``name``'s parser: its function's parameters as options, then its switches."""
    p = sub.add_parser(name, help=command.help, description=inspect.getdoc(command.function))
    p.set_defaults(_command=command)
    hints = typing.get_type_hints(command.function)
    module = importlib.import_module(f"inheritune.commands.{name}")  # its options' help: the module named like it
    texts = {**commands.HELP, **getattr(module, "HELP", {})}
    choices = {**commands.CHOICES, **getattr(module, "CHOICES", {})}
    first, *rest = inspect.signature(command.function).parameters.values()
    optional = first.default is not first.empty
    nargs = "+" if typing.get_origin(hints[first.name]) in (list, Sequence) else "?" if optional else None
    p.add_argument(first.name, nargs=nargs, default=first.default if optional else None, help=texts[first.name])
    for parameter in rest:
        if parameter.kind is parameter.VAR_KEYWORD:
            training_options(p.add_argument_group("training options"), skip=command.fixed)
        else:
            add_option(
                p, parameter, hints.get(parameter.name, str), texts.get(parameter.name), choices.get(parameter.name)
            )
    for switch in command.switches:
        p.add_argument(
            flag(switch.__name__),
            dest=f"_{switch.__name__}",
            action="store_true",
            help=described(inspect.getdoc(switch) or "", False),
        )


def add_option(
    p: argparse.ArgumentParser, parameter: inspect.Parameter, hint: Any, text: str | None, choices: Sequence[str] | None
) -> None:
    """``--name`` for ``parameter`` unless no command line can spell it."""
    settings = spelling(hint, parameter.default)
    if settings is None:
        return
    if text is None:
        raise KeyError(f"no help text for --{parameter.name}: add it to its command module's HELP")
    if choices is not None:
        settings["choices"] = choices
    if parameter.default is parameter.empty:
        p.add_argument(flag(parameter.name), **settings, required=True, help=text)
    else:
        p.add_argument(
            flag(parameter.name), **settings, default=parameter.default, help=described(text, parameter.default)
        )


def training_options(group: argparse._ArgumentGroup, skip: tuple[str, ...]) -> None:
    """Every TrainConfig field but ``skip``. Only those given reach the function (SUPPRESS): the
    others keep ``--config``'s or TrainConfig's value."""
    hints = typing.get_type_hints(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        hint = hints[field.name]
        settings = (
            {"action": argparse.BooleanOptionalAction}
            if hint is bool
            else {"nargs": len(typing.get_args(hint))}
            if typing.get_origin(hint) is tuple
            else {}
        )
        if field.name not in skip:
            group.add_argument(
                flag(field.name),
                **settings,
                default=argparse.SUPPRESS,
                help=described(TRAINING.get(field.name, ""), field.default),
            )


def keywords(args: argparse.Namespace) -> dict[str, Any]:
    """The function's keyword arguments: the parsed options but the CLI's own (``_command``, ``_debug``...)."""
    return {name: value for name, value in vars(args).items() if not name.startswith("_")}
