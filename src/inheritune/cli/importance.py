"""`inheritune importance MODEL [--data DIR|--text FILE] [--tasks T1,T2] [--shots 0,1,5] --out OUT`: gradient
head importance and FFN knock-out importance per task x shot count, their overlaps, an aggregate
ranking and where it sits by depth (``inheritune.importance``)."""
from __future__ import annotations

import argparse

from inheritune.cli.args import csv_list, device_options
from inheritune.commands.importance import TASKS, importance
from inheritune.options import count


def model_options(p: argparse.ArgumentParser, out_help: str) -> None:
    """MODEL, --out and how the model is loaded: importance, prune and induction."""
    p.add_argument("model", help="alias (smollm2-135m, gemma3-270m), model folder, .gguf file or hub id")
    p.add_argument("--out", required=True, help=out_help)
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the model's own code to run")
    p.add_argument("--tokenizer", metavar="REF",
                   help="tokenizer to use (default: the model's; gives a weights-only model one, which prune saves)")


def shot_counts(text: str) -> list[int]:
    """``--shots 0,1,5``: comma-separated counts."""
    return [count(item) for item in csv_list(text)]


def source_options(p: argparse.ArgumentParser, several_shots: bool = False) -> None:
    """The scored examples: importance (``several_shots``: one source per task and shot count) and prune."""
    p.add_argument("--data", help="prepared data folder (its val split is used)")
    p.add_argument("--text", help="UTF-8 text file, tokenized here")
    p.add_argument("--tasks", type=csv_list, default=[], metavar="TASK,...",
                   help=f"few-shot multiple-choice tasks, comma-separated, loss on the answer only "
                        f"({', '.join(TASKS)}; or any multiple-choice lm-eval task, e.g. arc_easy)")
    p.add_argument("--examples", type=count, default=32, help="LM windows and task prompts per source")
    p.add_argument("--seq-len", type=count, default=256, help="tokens per LM window")
    if several_shots:
        p.add_argument("--shots", type=shot_counts, default=[0, 1, 5],
                       help="solved questions before each task query: one source per count, comma-separated")
    else:
        p.add_argument("--shots", type=count, default=3, help="solved questions before each task query")
    p.add_argument("--max-task-tokens", type=count, default=1024, help="task prompts keep their last N tokens")
    p.add_argument("--include-path", metavar="DIR",
                   help="a folder of your own lm-eval task YAMLs, usable as --tasks (default: lm-eval's tasks only)")
    p.add_argument("--seed", type=int, default=0, help="seed of the window and prompt sampling")


def arguments(args: argparse.Namespace, *names: str) -> dict:
    """The library function's keyword arguments: the options of the same names."""
    return {name: getattr(args, name) for name in names}


MODEL = ("out", "overwrite", "trust_remote_code", "tokenizer")
SOURCES = ("data", "text", "tasks", "examples", "seq_len", "shots", "max_task_tokens", "seed", "include_path")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("importance", help="head importance (gradient of a head mask) and FFN knock-out importance")
    model_options(p, "output folder (importance.json, heads.csv, ffn.csv, overlap matrices, heatmaps)")
    source_options(p, several_shots=True)
    device_options(p)
    p.set_defaults(func=run)


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def run(args: argparse.Namespace) -> int:
    r = importance(args.model, **arguments(args, *MODEL, *SOURCES, "device", "device_map"))
    for name, s in r.sources.items():
        c = s["clusters"]
        acc = f", accuracy {s['accuracy']:.3f}" if s["accuracy"] is not None else ""
        print(f"{name}: loss {s['loss']:.4f}{acc}; important heads cluster {c['heads']['peak']} "
              f"(top {c['heads']['top_units']}: {c['heads']['top_count']}), important FFNs {c['ffn']['peak']}")
    for kind, o in r.overlap.items():
        print(f"{kind} across {len(o['sources'])} sources: mean Spearman {_number(o['mean_spearman'])}, "
              f"mean top-{o['top_k']} Jaccard {_number(o['mean_jaccard'])}")
    for kind, c in r.aggregate["clusters"].items():
        mass = ", ".join(f"{third} {share:.0%}" for third, share in c["mass_share"].items())
        print(f"aggregate {kind} importance by depth: {mass} of the mass; top {c['top_units']} {c['top_count']}")
    print(f"-> {args.out} in {r.seconds:.1f}s")
    return 0
