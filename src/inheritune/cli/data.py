"""`inheritune data prepare SOURCE... --tokenizer REF --out DIR`: raw text to token shards."""
from __future__ import annotations

import argparse

from inheritune.data.corpora import CORPORA, MIXES
from inheritune.data.prepare import prepare_data
from inheritune.data.sources import ERRORS
from inheritune.options import count


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="prepare token data (train/val shards) from text")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = actions.add_parser(
        "prepare", help="tokenize text into train/val shards",
        description="Tokenize text with a reference's tokenizer into train/val token shards. "
                    f"Packaged corpora: {', '.join([*CORPORA, *MIXES])}.",
    )
    q.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="corpus alias, .txt/.jsonl/.parquet file or folder, or hf:NAME[:CONFIG][@SPLIT]")
    q.add_argument("--tokenizer", required=True, help="reference whose tokenizer to use (alias, folder, .gguf, hub id)")
    q.add_argument("--out", required=True, help="output data folder")
    q.add_argument("--max-tokens", type=count, help="cap on train tokens (the slice of data to train on)")
    q.add_argument("--val-tokens", type=count,
                   help="validation tokens, whole documents (default: 100000, or 10%% of the sources when shorter than the validation pool)")
    q.add_argument("--seed", type=int, default=0, help="seed of the train/val split")
    q.add_argument("--text-field", default="text", help="text field of .jsonl/.parquet/hf sources")
    q.add_argument("--errors", default="strict", choices=ERRORS, help="invalid UTF-8: fail (strict) or use U+FFFD")
    q.add_argument("--overwrite", action="store_true", help="replace a non-empty --out (same tokenizer only)")
    q.add_argument("--trust-remote-code", action="store_true", help="allow the tokenizer's own code to run")
    q.set_defaults(func=run_prepare)


def run_prepare(args: argparse.Namespace) -> int:
    r = prepare_data(args.sources, args.tokenizer, args.out, max_tokens=args.max_tokens,
                     val_tokens=args.val_tokens, seed=args.seed, overwrite=args.overwrite,
                     text_field=args.text_field, errors=args.errors, trust_remote_code=args.trust_remote_code)
    print(f"prepared {r.out}: train {r.train_tokens:,} tokens ({r.train_documents:,} docs), "
          f"val {r.val_tokens:,} tokens ({r.val_documents:,} docs), {r.dtype}, in {r.seconds:.1f}s")
    return 0
