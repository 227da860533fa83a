"""`inheritune eval MODEL [--data DIR] [--tasks ...]`: validation loss and harness tasks, as JSON
(``inheritune.evaluate``)."""
from __future__ import annotations

import argparse
import json

from inheritune.cli.args import csv_list, device_options
from inheritune.commands.eval import evaluate
from inheritune.evaluation.tasks import LOCAL_TASKS
from inheritune.options import count


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="validation loss and lm-eval tasks of a model, as JSON")
    p.add_argument("model", help="alias (smollm2-135m, gemma3-270m), model folder, .gguf file or hub id")
    p.add_argument("--data", help="prepared data folder: val loss (the yardstick train/grow/run report) on its val split, "
                                  "and cloze-local's passages")
    p.add_argument("--tasks", type=csv_list, default=[], metavar="TASK,...",
                   help=f"comma-separated: {', '.join(LOCAL_TASKS)} (offline) or lm-eval task names such as "
                        "arc_easy,piqa,sciq,hellaswag,lambada_openai (need the hub)")
    p.add_argument("--include-path", metavar="DIR",
                   help="a folder of your own lm-eval task YAMLs, usable as --tasks (default: lm-eval's tasks only)")
    p.add_argument("--num-fewshot", type=count, help="few-shot examples for every task (default: each task's own; the offline multiple-choice tasks 5, at most 5)")
    p.add_argument("--limit", type=count, help="evaluate only the first N examples of each task (default: all)")
    p.add_argument("--batch-size", type=count, default=8, help="sequences per forward pass")
    device_options(p)
    p.add_argument("--out", help="also write the JSON to this file (atomically)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the model's own code to run")
    p.add_argument("--tokenizer", metavar="REF", help="tokenizer to use (default: the model's)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import datasets

    datasets.disable_progress_bars()  # lm-eval's per-task progress is enough
    r = evaluate(args.model, **{k: v for k, v in vars(args).items() if k not in ("model", "func", "command", "debug")})
    print(json.dumps(r.report(), indent=2))
    return 0
