"""One way to turn values into a dataclass's typed fields: CLI strings, YAML values and stored
settings all go through ``convert`` and ``build``, so ``--tokens 1e6``, ``tokens: 1e6`` in a recipe
and ``tokens="1e6"`` in Python mean the same, and every refusal reads the same.

Strings are parsed only where the field's type is not a string: counts as the README writes them
(``1e6``, ``1_000_000``, no decimal point; ``count``, which the CLI's count options use too),
floats, ``none``/``null``, and option specs (``inheritune.specs``: ``last:4``, ``top:64``, parsed
here once into their typed value, which remembers the key as the user spelled it: ``shown``).
An unknown key names the closest valid one.
"""

from __future__ import annotations

import argparse
import contextvars
import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Any, cast

from inheritune.errors import InherituneError
from inheritune.specs import Spec

NONE = ("none", "null", "~")
# "cli" while the command line is the boundary (cli.main sets it): a bare key is then shown as its flag
SPELLING: contextvars.ContextVar[str] = contextvars.ContextVar("spelling", default="python")


def shown(key: str) -> str:
    """``key`` as the user wrote it: ``--train-blocks`` on the command line, ``train.train_blocks`` in a
    recipe (keys with a section stay as they are), ``train_blocks`` in Python."""
    return "--" + key.replace("_", "-") if SPELLING.get() == "cli" and "." not in key else key


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

    ``type=int`` refuses the spellings the README uses. A decimal point is refused even when the
    value is whole (``1.5e3``): a count written with one is more often a typo than a wish, and
    saying exactly which spellings work costs the user one retry. A refusal raises
    ``ArgumentTypeError``, so that as an ``argparse`` ``type=`` the parser turns it into one line
    naming the option.
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


def closest(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest known name, or nothing when none is close."""
    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        return f"a list of {type_name(typing.get_args(tp)[0])}"
    if typing.get_origin(tp) is tuple:
        return "a list"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if isinstance(tp, type) and issubclass(tp, Spec):
        return tp.syntax or tp.__name__
    return {type(None): "null", dict: "a mapping"}.get(tp, getattr(tp, "__name__", str(tp)))


def _scalar(value: Any, tp: Any, key: str) -> Any:
    """``value`` as the scalar type ``tp``, or raise ValueError (a spec refuses in its own words)."""
    text = value.strip() if isinstance(value, str) else None
    if isinstance(tp, type) and issubclass(tp, Spec):
        if isinstance(value, tp):
            return value
        if isinstance(value, (str, list, tuple)) or (isinstance(value, int) and not isinstance(value, bool)):
            return tp(value, shown(key))  # a YAML 3 is the text "3"
    elif tp is type(None):
        if value is None or (text is not None and text.lower() in NONE):
            return None
    elif tp is bool:  # strict: "yes" in a recipe is more likely a typo than a wish (CLI flags are switches)
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if text is not None:
            try:
                return count(text)
            except argparse.ArgumentTypeError:
                pass
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if text is not None:
            try:
                return float(text)
            except ValueError:
                pass
    elif tp in (str, dict):
        if isinstance(value, tp):
            return value
    else:
        raise TypeError(f"unsupported field type {tp}")
    raise ValueError


def convert(value: Any, tp: Any, key: str, what: str = "recipe key") -> Any:
    """``value`` checked against (and converted to) the type hint ``tp``; errors name the ``what`` ``key``."""
    origin = typing.get_origin(tp)
    try:
        if origin in (typing.Union, types.UnionType):
            options = sorted(typing.get_args(tp), key=lambda a: a is not type(None))  # "none" means None first
            for option in options:
                try:
                    return convert(value, option, key, what)
                except InherituneError:
                    continue
        elif dataclasses.is_dataclass(tp):
            if isinstance(value, dict):
                return build(cast(type, tp), value, key + ".", what)  # a type hint: a dataclass type
        elif origin is list:
            if isinstance(value, list):
                return [convert(v, typing.get_args(tp)[0], f"{key}[{i}]", what) for i, v in enumerate(value)]
        elif origin is dict:
            if isinstance(value, dict):
                return value
        elif origin is tuple:
            args = typing.get_args(tp)
            if isinstance(value, (list, tuple)) and len(value) == len(args):
                return tuple(
                    convert(v, a, f"{key}[{i}]", what) for i, (v, a) in enumerate(zip(value, args, strict=True))
                )
        else:
            return _scalar(value, tp, key)
    except ValueError:
        pass
    given = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    raise InherituneError(f"{what} '{key}' must be {type_name(tp)}, not {given}")


def check_keys(given: Iterable[str], known: Iterable[str], what: str, where: str = "") -> None:
    """Refuse the first unknown key, naming the closest known one (``where``: a prefix saying where)."""
    known = list(known)
    for key in given:
        if key not in known:
            raise InherituneError(f"{where}unknown {what} '{key}'{closest(key, known)} (known: {', '.join(known)})")


def build(cls: type, values: dict, prefix: str = "", what: str = "recipe key") -> Any:
    """Instantiate dataclass ``cls`` from a mapping, converting every value and naming the first bad key."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    check_keys([prefix + k for k in values], [prefix + n for n in names], what)
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in values
    ]
    if missing:
        raise InherituneError(f"recipe is missing the required key '{prefix}{missing[0]}'")
    return cls(**{k: convert(v, hints[k], prefix + k, what) for k, v in values.items()})


def positive(value: int, name: str) -> None:
    """A count option that must be at least 1."""
    if value < 1:
        raise InherituneError(f"{name} must be at least 1, not {value}")
