"""`inheritune prune MODEL --heads P --ffn Q --out DIR [--by importance.json] [--sweep]`: mask the P% / Q%
least important heads / FFNs, save the pruned model, report loss (and accuracy) before/after
(``inheritune.prune``)."""
from __future__ import annotations

import argparse

from inheritune.cli.importance import MODEL, SOURCES, arguments, model_options, source_options
from inheritune.commands.prune import STEPS, prune


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prune", help="mask the least important heads and FFNs and save the pruned model")
    model_options(p, "output model folder (loads with transformers; prune.json and plots inside)")
    source_options(p)
    p.add_argument("--heads", type=float, default=0.0, help="percent of heads to prune, globally (0-100)")
    p.add_argument("--ffn", type=float, default=0.0, help="percent of FFN layers to prune, globally (0-100)")
    p.add_argument("--by", help="importance.json from `inheritune importance` (default: compute it on the LM data)")
    p.add_argument("--source", help="which source of --by ranks the units (default: lm, else the first)")
    p.add_argument("--sweep", action="store_true", help="also plot degradation curves over --steps")
    p.add_argument("--steps", default=STEPS, help="sweep percentages, comma-separated")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    r = prune(args.model, **arguments(args, *MODEL, *SOURCES, "heads", "ffn", "by", "source", "sweep", "steps"))
    for name, before in r.before.items():
        after = r.after[name]
        acc = (f", accuracy {before['accuracy']:.3f} -> {after['accuracy']:.3f}"
               if before["accuracy"] is not None else "")
        print(f"{name}: loss {before['loss']:.4f} -> {after['loss']:.4f}{acc}")
        if name in r.sweep:
            t = r.sweep[name]["tolerated_5pct"]
            print(f"  within +5% loss: up to {t['heads']:g}% of heads, {t['ffn']:g}% of FFNs")
    print(f"pruned {len(r.pruned_heads)}/{r.heads_total} heads, {len(r.pruned_ffn)}/{r.ffn_total} FFNs "
          f"-> {args.out} in {r.seconds:.1f}s")
    return 0
