"""Derive small, strong language models from larger pretrained ones.

One subcommand per step of the workflow, each generated from its library function (``COMMANDS``;
``generate``): the same names, defaults and meaning in Python, YAML and on the command line.
Every failure a user can cause ends as one line on stderr and a non-zero exit; ``--debug`` shows
the traceback instead. Distributed training: ``torchrun --nproc_per_node=K -m inheritune train ...``.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

import transformers.modeling_gguf_pytorch_utils as gguf_utils
from tqdm.auto import tqdm
from transformers.utils import logging as hf_logging

from inheritune import (
    analyze,
    derive,
    evaluate,
    export,
    grow,
    importance,
    induction,
    prepare_data,
    prune,
    run,
    study,
    train,
)
from inheritune.cli.generate import Command, Parser, add_command, keywords
from inheritune.commands.run import check, show_default
from inheritune.error_lines import one_line
from inheritune.errors import InherituneError, TrainingInterrupted
from inheritune.options import SPELLING
from inheritune.training.distributed import teardown

COMMANDS = {  # in the order `inheritune --help` lists them
    "data prepare": Command(prepare_data, "tokenize text into train/val shards"),
    "derive": Command(derive, "copy N of a reference's blocks (chosen by --by) into a smaller model"),
    "analyze": Command(analyze, "attention rank, sinks, Block Influence and a layer-count recommendation"),
    "eval": Command(evaluate, "validation loss and lm-eval tasks of a model, as JSON"),
    "train": Command(train, "train a model on prepared token data (the recipe's train step)"),
    "importance": Command(importance, "head importance (gradient of a head mask) and FFN knock-out importance"),
    "prune": Command(prune, "remove the least important heads and FFNs and save the pruned model"),
    "induction": Command(induction, "prefix-matching and copying score per head on repeated random tokens"),
    "study": Command(study, "analyze + importance + induction joined per head/layer, correlations, findings"),
    "grow": Command(
        grow,
        "derive N layers, train, and grow by K until the reference's val loss is matched",
        fixed=("steps", "tokens"),
    ),  # per round: --tokens-per-round
    "run": Command(
        run, "run a recipe end to end: data, grow until matched, scratch arms, report", switches=(show_default, check)
    ),
    "export": Command(export, "write a model as one GGUF file for llama.cpp, LM Studio and Ollama"),
}
GROUPS = {"data": "prepare token data (train/val shards) from text"}
# Each command's Python counterpart (tests/test_commands.py holds the two to writing the same files).
PYTHON = {name: f"inheritune.{command.function.__name__}" for name, command in COMMANDS.items()}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="inheritune", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", dest="_debug", action="store_true", help="show tracebacks (default: off)")
    sub = parser.add_subparsers(dest="_name", required=True, metavar="COMMAND")
    groups = {
        name: sub.add_parser(name, help=text).add_subparsers(dest="_action", required=True, metavar="ACTION")
        for name, text in GROUPS.items()
    }
    for name, command in COMMANDS.items():
        group, _, leaf = name.rpartition(" ")
        add_command(groups[group] if group else sub, leaf, command)
    return parser


def quiet_libraries() -> None:
    """Our own progress bars and messages are the output; transformers' and datasets' would bury them
    (lm-eval's per-task progress is enough)."""
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # read when datasets is first imported
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    gguf_utils.tqdm = functools.partial(tqdm, disable=True)  # the GGUF dequantiser's bare tqdm


def call(args: argparse.Namespace) -> int:
    """The parsed command: a switch given instead of the function; under torchrun rank 0 speaks for the run."""
    command, speaks = args._command, os.environ.get("RANK", "0") == "0"
    for switch in command.switches:
        if getattr(args, f"_{switch.__name__}"):
            print(switch(**keywords(args)), end="")
            return 0
    try:
        result = command.function(**keywords(args))
    except TrainingInterrupted as e:  # a checkpoint was written: say how to continue, exit as an interrupt
        if speaks:
            print(f"inheritune: {e}")
        return 130
    finally:
        teardown()
    if speaks and (text := result.summary()):
        print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    quiet_libraries()
    spelling = SPELLING.set("cli")  # option values name themselves as flags (--train-blocks)
    try:
        return call(args)
    except InherituneError as e:
        print(f"inheritune: error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("inheritune: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args._debug:
            raise
        print(
            f"inheritune: error: {type(e).__name__}: {one_line(str(e), 500)} (rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1
    finally:
        SPELLING.reset(spelling)
