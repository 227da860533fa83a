"""`inheritune grow REFERENCE --data DIR --out RUN --start-layers N`: derive, train, grow until matched
(``inheritune.grow``)."""
from __future__ import annotations

import argparse

from inheritune.analysis import selection
from inheritune.growth.config import DIRECTIONS, GROW_MODES
from inheritune.cli.train import add_train_options, given_options
from inheritune.options import count

PER_ROUND = ("steps", "tokens")  # set by --tokens-per-round
GROW = ("start_layers", "step_layers", "max_layers", "min_layers", "tokens_per_round", "margin", "by", "direction",
        "mode", "overwrite", "config")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("grow", help="derive N layers, train, and grow by K until the reference's val loss is matched")
    p.add_argument("reference", help="alias (smollm2-135m, gemma3-270m), model folder, .gguf file or hub id")
    p.add_argument("--data", required=True, help="prepared data folder (inheritune data prepare)")
    p.add_argument("--out", required=True, help="grow run folder (rerun the same command to resume)")
    p.add_argument("--start-layers", type=count, required=True, help="N: layers of the first round")
    p.add_argument("--step-layers", type=count, default=3, help="K: layers added per round")
    p.add_argument("--max-layers", type=count, help="M: stop growing here (default: the reference's depth)")
    p.add_argument("--tokens-per-round", type=count, default=100_000, help="T: training tokens per round")
    p.add_argument("--margin", type=float, default=0.0, help="E: matched when val loss <= reference + E")
    p.add_argument("--min-layers", type=count, default=1, help="shrink: stop here")
    p.add_argument("--by", default="first-n", metavar="SELECTOR",
                   help=f"which reference blocks each round holds (growth adds back the ones it ranks next, at their "
                        f"places): {selection.HELP}")
    p.add_argument("--direction", default="grow", choices=DIRECTIONS,
                   help="grow (the paper: add blocks until matched) or shrink (start deep, drop blocks of the healed "
                        "model while within the margin)")
    p.add_argument("--mode", default="reference", choices=GROW_MODES,
                   help="new blocks: the reference's or copies of the model's own blocks just before them")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a run in --out started with other settings: the new one is built beside it "
                        "(.NAME.new) and swapped in when complete; rerun the same command to continue it after a kill")
    add_train_options(p, skip=PER_ROUND)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from inheritune.growth.grow import grow

    result = grow(args.reference, args.data, args.out, **{k: getattr(args, k) for k in GROW}, **given_options(args))
    print(f"model -> {result.model_dir}; summary -> {result.run_dir / 'summary.json'}")
    return 0
