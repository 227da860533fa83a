"""`inheritune induction MODEL --out OUT`: prefix-matching and copying score per head on repeated
random tokens (``inheritune.induction``)."""
from __future__ import annotations

import argparse

from inheritune.cli.args import device_options
from inheritune.cli.importance import MODEL, arguments, model_options
from inheritune.commands.induction import induction
from inheritune.options import count


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("induction", help="prefix-matching and copying score per head on repeated random tokens")
    model_options(p, "output folder (induction.json, induction.csv, heatmaps)")
    p.add_argument("--seg-len", type=count, default=25, help="distinct random tokens per segment")
    p.add_argument("--repeats", type=count, default=4, help="times the segment is repeated")
    p.add_argument("--seeds", type=count, default=100, help="random sequences (one per seed) to average over")
    p.add_argument("--exclude", type=float, default=0.04, help="share of lowest and of highest token ids left out")
    p.add_argument("--top", type=count, default=10, help="how many top induction heads to list")
    p.add_argument("--batch-size", type=count, default=None,
                   help="random sequences per forward pass (default: as many as a quarter of the free memory holds)")
    device_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    r = induction(args.model, **arguments(args, *MODEL, "seg_len", "repeats", "seeds", "exclude", "top", "batch_size",
                                        "device", "device_map"))
    print("top induction heads (layer.head prefix copying): "
          + ", ".join(f"{h['layer']}.{h['head']} {h['prefix']:.2f} {h['copying']:+.2f}" for h in r.top_heads[:5]))
    print(f"-> {args.out} in {r.seconds:.1f}s")
    return 0
