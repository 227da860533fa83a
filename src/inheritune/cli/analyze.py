"""`inheritune analyze MODEL --data DIR|--text FILE --out OUT`: lazy layers, redundancy, layers to inherit."""
from __future__ import annotations

import argparse

from inheritune.analysis.analyze import BI_SHARE, LAZY_MASS, LAZY_RANK, MIN_DEPTH, analyze
from inheritune.cli.args import count
from inheritune.io import check_output_dir
from inheritune.models.loading import check_tokenizer_fits, load_model, load_tokenizer


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="attention rank, sinks, Block Influence and a layer-count recommendation")
    p.add_argument("model", help="alias (smollm2-135m, gemma3-270m), model folder (e.g. a run's final/), .gguf or hub id")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="prepared data folder (its val split is sampled)")
    source.add_argument("--text", help="UTF-8 text file, tokenized with the model's tokenizer")
    p.add_argument("--out", required=True, help="output folder (analysis.json, CSVs, PNGs)")
    p.add_argument("--sequences", type=count, default=100, help="number of sequences N (default 100)")
    p.add_argument("--seq-len", type=count, default=100, help="tokens per sequence T (default 100)")
    p.add_argument("--tau", type=float, default=0.9, help="energy share of the approximate rank (default 0.9)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sequence sampling")
    p.add_argument("--batch-size", type=count, default=None, help="sequences per forward pass (default: fit 256 MiB)")
    p.add_argument("--lazy-rank", type=float, default=LAZY_RANK,
                   help=f"lazy if max-over-heads rank <= this fraction of T (default {LAZY_RANK})")
    p.add_argument("--lazy-mass", type=float, default=LAZY_MASS,
                   help=f"... and mean heaviest-column share >= this (default {LAZY_MASS})")
    p.add_argument("--min-depth", type=float, default=MIN_DEPTH,
                   help=f"recommendation: look for the first lazy layer from this fraction of depth on (default {MIN_DEPTH})")
    p.add_argument("--bi-share", type=float, default=BI_SHARE,
                   help=f"secondary rule: cumulative Block Influence share (default {BI_SHARE})")
    p.add_argument("--bos", action="store_true", help="start every sequence with the BOS token (then T-1 sampled tokens)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the model's own code to run")
    p.add_argument("--tokenizer", metavar="REF",
                   help="tokenizer to use (default: the model's; a weights-only model needs one only for --text)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_output_dir(args.out, args.overwrite)  # fail before the slow load
    model, tokenizer = _load(args)
    r = analyze(model, tokenizer=tokenizer, data=args.data, text=args.text, out=args.out, sequences=args.sequences,
                seq_len=args.seq_len, tau=args.tau, seed=args.seed, overwrite=args.overwrite,
                batch_size=args.batch_size, lazy_rank=args.lazy_rank, lazy_mass=args.lazy_mass,
                bi_share=args.bi_share, bos=args.bos, min_depth=args.min_depth)
    lazy = ", ".join(map(str, r["lazy_layers"])) or "none"
    print(f"{r['num_layers']} layers x {r['num_heads']} heads on {r['sequences']} x {r['seq_len']} tokens "
          f"in {r['seconds']:.1f}s; lazy layers: {lazy}")
    print(f"recommended: inherit {r['recommended_layers']} layers ({r['rule']}); "
          f"by Block Influence: {r['by_block_influence']} -> {args.out}")
    return 0


def _load(args: argparse.Namespace):
    """Model and tokenizer, loaded here so that --trust-remote-code and --tokenizer reach them;
    a weights-only model analyses --data without a tokenizer (the windows are token ids)."""
    model = load_model(args.model, trust_remote_code=args.trust_remote_code)
    model.config._name_or_path = str(args.model)  # analysis.json names the model as the user did
    source = args.tokenizer or args.model
    required = bool(args.tokenizer) or args.text is not None
    tokenizer = load_tokenizer(source, trust_remote_code=args.trust_remote_code, required=required)
    if args.tokenizer:
        check_tokenizer_fits(model, tokenizer, source)
    if tokenizer is None:
        print(f"{args.model} has no tokenizer: --data is read as token ids, unchecked against the model's tokenizer",
              flush=True)
    return model, tokenizer
