"""`inheritune study MODEL --data DIR|--text FILE --out OUT`: analyze, importance and induction on one
loaded model, joined per head and per layer, correlated, with findings (``inheritune.study``)."""
from __future__ import annotations

import argparse

from inheritune.cli.args import csv_list, device_options
from inheritune.cli.importance import MODEL, arguments, model_options, shot_counts
from inheritune.commands.importance import TASKS as ALL_TASKS
from inheritune.commands.study import TASKS, study
from inheritune.options import count


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="analyze + importance + induction joined per head/layer, correlations, findings")
    model_options(p, "output folder (analysis/, importance/, induction/, heads.csv, layers.csv, study.json, study.md)")
    p.add_argument("--data", help="prepared data folder (its val split: analyze's sequences and LM windows)")
    p.add_argument("--text", help="UTF-8 text file, tokenized here")
    p.add_argument("--tasks", type=csv_list, default=list(TASKS), metavar="TASK,...",
                   help=f"multiple-choice tasks for importance, comma-separated ({', '.join(ALL_TASKS)}; or any "
                        "multiple-choice lm-eval task)")
    p.add_argument("--shots", type=shot_counts, default=[0, 3], help="shot counts, one importance source each")
    p.add_argument("--include-path", metavar="DIR",
                   help="a folder of your own lm-eval task YAMLs, usable as --tasks (default: lm-eval's tasks only)")
    p.add_argument("--examples", type=count, default=16, help="LM windows and task prompts per importance source")
    p.add_argument("--seq-len", type=count, default=128, help="tokens per analyze sequence and LM window")
    p.add_argument("--sequences", type=count, default=32, help="analyze's sequences")
    p.add_argument("--seeds", type=count, default=100, help="induction's random repeated sequences")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling and of the permutation tests")
    device_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    r = study(args.model, **arguments(args, *MODEL, "data", "text", "tasks", "shots", "examples", "seq_len",
                                      "sequences", "seeds", "seed", "include_path", "device", "device_map"))
    for name in ("depth", "induction", "lazy"):
        print(f"{name}: {r.findings[name]['text']}")
    print(f"-> {args.out} in {r.seconds:.1f}s")
    return 0
