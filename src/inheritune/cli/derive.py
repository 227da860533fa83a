"""`inheritune derive REFERENCE --layers N --out DIR`: the inherit step of the recipe."""
from __future__ import annotations

import argparse
import time

from inheritune.models.loading import load_model, load_tokenizer, parameter_count, save_model
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_output_dir(args.out, args.overwrite)  # fail before the slow load
    start = time.perf_counter()
    reference = load_model(args.reference, trust_remote_code=args.trust_remote_code)
    tokenizer = load_tokenizer(args.reference, trust_remote_code=args.trust_remote_code)
    model = derive(reference, args.layers, init=args.init, seed=args.seed)
    save_model(model, tokenizer, args.out, overwrite=args.overwrite)
    print(
        f"derived {model.config.num_hidden_layers}/{reference.config.num_hidden_layers} layers "
        f"({parameter_count(model) / 1e6:.1f}M parameters, init={args.init}) -> {args.out} "
        f"in {time.perf_counter() - start:.1f}s"
    )
    return 0
