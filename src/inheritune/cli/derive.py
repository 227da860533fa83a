"""`inheritune derive REFERENCE --layers N --out DIR`: the inherit step of the recipe (``inheritune.derive``)."""
from __future__ import annotations

import argparse

from inheritune.analysis import selection
from inheritune.commands.derive import derive
from inheritune.models.surgery import spans
from inheritune.models.surgery import INIT_CHOICES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("derive", help="copy N of a reference's blocks (chosen by --by) into a smaller model")
    p.add_argument("reference", help="alias (smollm2-135m, gemma3-270m), model folder, .gguf file or hub id")
    p.add_argument("--layers", required=True, help="N (the N blocks --by keeps) or indices like 0-11,15")
    p.add_argument("--by", default="first-n", metavar="SELECTOR", help=f"which blocks to keep: {selection.HELP}")
    p.add_argument("--data", help="prepared data folder: selectors that score blocks read windows of its train split")
    p.add_argument("--out", required=True, help="output model folder")
    p.add_argument("--init", default="all", choices=INIT_CHOICES, help="which block parts to inherit")
    p.add_argument("--seed", type=int, default=0, help="seed of the fresh initialisation")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the model's own code to run")
    p.add_argument("--tokenizer", metavar="REF",
                   help="take the output's tokenizer from REF (default: the reference's; needed to attach one "
                        "to a weights-only reference)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    r = derive(args.reference, layers=args.layers, out=args.out, by=args.by, data=args.data, init=args.init, seed=args.seed,
               overwrite=args.overwrite, trust_remote_code=args.trust_remote_code, tokenizer=args.tokenizer)
    print(f"derived {len(r.blocks)}/{r.reference_layers} layers (blocks {spans(r.blocks)} by {r.by}; "
          f"{r.parameters / 1e6:.1f}M parameters, init={r.init}) -> {r.out} in {r.seconds:.1f}s")
    return 0
