"""`inheritune eval MODEL [--data DIR] [--tasks ...]`: validation loss and harness tasks, as JSON."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from inheritune.cli.args import count, csv_list
from inheritune.evaluation.harness import evaluate
from inheritune.evaluation.tasks import LOCAL_TASKS
from inheritune.errors import InherituneError
from inheritune.io import atomic_write_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="validation loss and lm-eval tasks of a model, as JSON")
    p.add_argument("model", help="alias (smollm2-135m, gemma3-270m), model folder, .gguf file or hub id")
    p.add_argument("--data", help="prepared data folder: val loss (the yardstick train/grow/run report) on its val split, "
                                  "and cloze-local's passages")
    p.add_argument("--tasks", type=csv_list, default=[], metavar="TASK,...", help=f"comma-separated: {', '.join(LOCAL_TASKS)} (offline) or lm-eval task "
                                               "names such as arc_easy,piqa,sciq,hellaswag,lambada_openai (need the hub)")
    p.add_argument("--num-fewshot", type=count, help="few-shot examples for every task (default: each task's own; mmlu-local 5)")
    p.add_argument("--limit", type=count, help="evaluate only the first N examples of each task")
    p.add_argument("--batch-size", type=count, default=8, help="sequences per forward pass")
    p.add_argument("--device", choices=["cpu", "cuda"], help="where to run (default: cpu)")
    p.add_argument("--out", help="also write the JSON here (atomically)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the model's own code to run")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import datasets

    datasets.disable_progress_bars()  # lm-eval's per-task progress is enough
    tasks = args.tasks
    if args.batch_size < 1:
        raise InherituneError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.out and Path(args.out).is_dir():  # fail now, not after a long evaluation
        raise InherituneError(f"--out {args.out} is a folder; give a file name such as {Path(args.out) / 'eval.json'}")
    result = evaluate(args.model, data=args.data, tasks=tasks, num_fewshot=args.num_fewshot, limit=args.limit,
                      batch_size=args.batch_size, device=args.device,
                      trust_remote_code=args.trust_remote_code)
    result = {"model": str(args.model), "data": args.data, **result}
    if args.out:
        atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2))
    return 0
