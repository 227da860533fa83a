"""`inheritune analyze MODEL --data DIR|--text FILE --out OUT`: lazy layers, redundancy, layers to inherit
(``inheritune.analyze``)."""
from __future__ import annotations

import argparse

from inheritune.analysis.analyze import BI_SHARE, LAZY_MASS, LAZY_RANK, MIN_DEPTH
from inheritune.cli.args import device_options
from inheritune.commands.analyze import analyze
from inheritune.options import count


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="attention rank, sinks, Block Influence and a layer-count recommendation")
    p.add_argument("model", help="alias (smollm2-135m, gemma3-270m), model folder (e.g. a run's final/), .gguf or hub id")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="prepared data folder (its val split is sampled)")
    source.add_argument("--text", help="UTF-8 text file, tokenized with the model's tokenizer")
    p.add_argument("--out", required=True, help="output folder (analysis.json, CSVs, PNGs)")
    p.add_argument("--sequences", type=count, default=100, help="number of sequences N")
    p.add_argument("--seq-len", type=count, default=100, help="tokens per sequence T")
    p.add_argument("--tau", type=float, default=0.9, help="energy share of the approximate rank")
    p.add_argument("--seed", type=int, default=0, help="seed of the sequence sampling")
    p.add_argument("--batch-size", type=count, default=None,
                   help="sequences per forward pass (default: as many as a quarter of the free memory holds)")
    p.add_argument("--lazy-rank", type=float, default=LAZY_RANK,
                   help="lazy if max-over-heads rank <= this fraction of T")
    p.add_argument("--lazy-mass", type=float, default=LAZY_MASS,
                   help="... and mean heaviest-column share >= this")
    p.add_argument("--min-depth", type=float, default=MIN_DEPTH,
                   help="recommendation: look for the first lazy layer from this fraction of depth on")
    p.add_argument("--bi-share", type=float, default=BI_SHARE,
                   help="secondary rule: cumulative Block Influence share")
    p.add_argument("--bos", action="store_true", help="start every sequence with the BOS token (then T-1 sampled tokens)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the model's own code to run")
    p.add_argument("--tokenizer", metavar="REF",
                   help="tokenizer to use (default: the model's; a weights-only model needs one only for --text)")
    device_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    r = analyze(args.model, **{k: v for k, v in vars(args).items() if k not in ("model", "func", "command", "debug")})
    lazy = ", ".join(map(str, r.lazy_layers)) or "none"
    print(f"{r.num_layers} layers x {r.num_heads} heads on {r.sequences} x {r.seq_len} tokens "
          f"in {r.seconds:.1f}s; lazy layers: {lazy}")
    print(f"recommended: inherit {r.recommended_layers} layers ({r.rule}); "
          f"by Block Influence: {r.by_block_influence} -> {r.out}")
    return 0
