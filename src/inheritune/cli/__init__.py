"""Derive small, strong language models from larger pretrained ones.

One subcommand per step of the workflow. Each module here only maps a command's arguments onto
its library function (``PYTHON`` below) and prints the typed result.

Every failure a user can cause ends as one line on stderr and a non-zero exit;
``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import os
import sys

from inheritune.cli import analyze, data, derive, eval, grow, importance, induction, prune, run, study, train
from inheritune.cli.args import Parser
from inheritune.errors import InherituneError
from inheritune.messages import one_line

COMMANDS = [derive, data, analyze, eval, train, importance, prune, induction, study, grow, run]

# Each command's Python counterpart, where it is a library function taking the command's arguments
# (same names, same defaults), writing the same files and returning a typed result
# (``to_json``/``from_json``). tests/test_commands.py holds every command with an output to this.
PYTHON = {
    "derive": "inheritune.derive",
    "data prepare": "inheritune.prepare_data",
    "analyze": "inheritune.analyze",
    "eval": "inheritune.evaluate",
    "train": "inheritune.train",
    "grow": "inheritune.grow",
    "run": "inheritune.run",
    "importance": "inheritune.importance",
    "prune": "inheritune.prune",
    "induction": "inheritune.induction",
    "study": "inheritune.study",
}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="inheritune", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    # Subparsers (and theirs, e.g. `data prepare`) are Parsers too: their errors are one line.
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for command in COMMANDS:
        command.register(sub)
    return parser


def quiet_transformers() -> None:
    """Our own progress bars and messages are the output; transformers' would bury them."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    # The GGUF dequantiser uses a bare tqdm that the switch above does not reach.
    import functools

    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from tqdm.auto import tqdm

    gguf_utils.tqdm = functools.partial(tqdm, disable=True)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    quiet_transformers()
    try:
        return args.func(args) or 0
    except InherituneError as e:
        print(f"inheritune: error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("inheritune: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            raise
        print(f"inheritune: error: {type(e).__name__}: {one_line(str(e), 500)} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1
