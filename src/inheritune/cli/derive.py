"""`inheritune derive REFERENCE --layers N --out DIR`: the inherit step of the recipe."""
from __future__ import annotations

import argparse
import time

from inheritune.models.loading import check_tokenizer_fits, load_model, load_tokenizer, parameter_count, save_model
from inheritune.models.families import num_layers
from inheritune.models.surgery import INIT_CHOICES, derive
from inheritune.io import check_output_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("derive", help="copy a reference's first N blocks into a smaller model")
    p.add_argument("reference", help="alias (smollm2-135m, gemma3-270m), model folder, .gguf file or hub id")
    p.add_argument("--layers", required=True, help="N (the first N blocks) or indices like 0-11,15")
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
    check_output_dir(args.out, args.overwrite)  # fail before the slow load
    start = time.perf_counter()
    reference = load_model(args.reference, trust_remote_code=args.trust_remote_code)
    tokenizer = _tokenizer(args, reference)
    model = derive(reference, args.layers, init=args.init, seed=args.seed)
    save_model(model, tokenizer, args.out, overwrite=args.overwrite)
    if tokenizer is None:
        print(f"{args.reference} has no tokenizer: {args.out} holds weights only (attach one with --tokenizer REF)")
    print(
        f"derived {num_layers(model.config)}/{num_layers(reference.config)} layers "
        f"({parameter_count(model) / 1e6:.1f}M parameters, init={args.init}) -> {args.out} "
        f"in {time.perf_counter() - start:.1f}s"
    )
    return 0


def _tokenizer(args: argparse.Namespace, reference) -> object | None:
    """The output's tokenizer: --tokenizer's (checked against the embedding), else the reference's;
    a weights-only reference derives a weights-only model (derive needs no tokenizer), said in one
    line by ``run``."""
    source = args.tokenizer or args.reference
    tokenizer = load_tokenizer(source, trust_remote_code=args.trust_remote_code, required=bool(args.tokenizer))
    if args.tokenizer:
        check_tokenizer_fits(reference, tokenizer, source)
    return tokenizer
