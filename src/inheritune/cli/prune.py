"""`inheritune prune MODEL --heads P --ffn Q --out DIR [--by importance|induction|random] [--scores importance.json]
[--iterative N] [--sweep]`: remove the P% / Q% lowest-ranked heads / FFNs (ranked on one split, scored on
another), save the pruned model, report loss and accuracy with 95% intervals (``inheritune.prune``)."""
from __future__ import annotations

import argparse

from inheritune.cli.args import device_options
from inheritune.cli.importance import MODEL, SOURCES, arguments, model_options, source_options
from inheritune.analysis import selection
from inheritune.commands.prune import FFN_STEPS, STEPS, prune
from inheritune.options import count

OPTIONS = ("heads", "ffn", "drop_layers", "by", "scores", "source", "allow_overlap", "iterative", "physical", "sweep", "steps",
           "ffn_steps", "device", "device_map")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prune", help="remove the least important heads and FFNs and save the pruned model")
    model_options(p, "output model folder (loads with transformers; prune.json and plots inside)")
    source_options(p)
    p.add_argument("--heads", type=float, default=0.0, help="percent of heads to prune, globally (0-100)")
    p.add_argument("--ffn", type=float, default=0.0, help="percent of FFN layers to prune, globally (0-100)")
    p.add_argument("--drop-layers", type=count, default=0, metavar="K",
                   help="drop K whole blocks instead (chosen on --data's train split, val loss on its val split)")
    p.add_argument("--by",
                   help="criterion (default: importance; block-influence with --drop-layers): importance (least "
                        "important first), induction (highest prefix-matching score first: induction heads go "
                        "first; FFNs by importance) or random (seeded by --seed); with --drop-layers, a block "
                        "selector: " + selection.HELP)
    p.add_argument("--scores", metavar="FILE",
                   help="importance.json from `inheritune importance` (default: rank on the rank split here); "
                        "examples it was ranked on must not be among the scoring ones")
    p.add_argument("--source", help="which source ranks the units (default: lm, else the first)")
    p.add_argument("--allow-overlap", action="store_true",
                   help="accept --scores ranked on scoring examples: warn and count them in prune.json")
    p.add_argument("--iterative", type=count, default=1, metavar="STEPS",
                   help="reach --heads/--ffn in STEPS steps, re-scoring importance after each (1: one-shot); "
                        "with --sweep, the importance curve re-scores at every point")
    p.add_argument("--physical", action="store_true",
                   help="cut the pruned units out of the weights where the family allows (else say why, keep masks)")
    p.add_argument("--sweep", action="store_true",
                   help="also score every criterion over --steps (heads) and --ffn-steps, with 95%% intervals")
    p.add_argument("--steps", default=STEPS, help="head sweep percentages, comma-separated")
    p.add_argument("--ffn-steps", default=FFN_STEPS, help="FFN sweep percentages, comma-separated")
    device_options(p)
    p.set_defaults(func=run)


def _line(name: str, before: dict, after: dict) -> str:
    text = f"{name}: loss {before['loss']:.4f} -> {after['loss']:.4f}"
    if before["accuracy"] is not None:
        text += f", accuracy {before['accuracy']:.3f} -> {after['accuracy']:.3f} (chance {before['chance']:.3f})"
    return text


def run(args: argparse.Namespace) -> int:
    r = prune(args.model, **arguments(args, *MODEL, *SOURCES, *OPTIONS))
    if r.drop_layers:
        print(f"dropped blocks {r.dropped_layers} (by {r.by}): val loss {r.before['val']['loss']:.4f} -> "
              f"{r.after['val']['loss']:.4f} -> {args.out} in {r.seconds:.1f}s")
        return 0
    for name, before in r.before.items():
        print(_line(name, before, r.after[name]))
        for by, row in r.prunable.get(name, {}).items():
            ffn = f", {row['ffn']:g}% of FFNs" if "ffn" in row else ""
            print(f"  by {by}: within 5% {row['metric']}: up to {row['heads']:g}% of heads{ffn}")
    print(f"pruned {len(r.pruned_heads)}/{r.heads_total} heads, {len(r.pruned_ffn)}/{r.ffn_total} FFNs "
          f"(by {r.by}, ranked on {r.source}{', overlap ' + str(r.overlap) if r.overlap else ''}) "
          f"-> {args.out} in {r.seconds:.1f}s")
    return 0
