"""Evaluate SmolLM2-135M (packaged) and its 15-layer derivative before training, with timings.

val loss/ppl on a prepared slice of the packaged corpus, cloze-local on the first --limit of its
validation documents' passages, mmlu-local 0-shot and 5-shot on the first --limit shuffled questions.
Timings are wall seconds and this process's CPU seconds (the second is robust to a busy machine).
Writes benchmarks/results/eval_smollm2.json and .md (the side-by-side table).

    .venv/bin/python benchmarks/bench_eval.py [--limit 100]
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from inheritune import evaluate, inherit, load, prepare_data
from inheritune.evaluation.compare import comparison_markdown, flat_metrics
from inheritune.atomic import atomic_write_json, atomic_write_text

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=40, help="examples per task (cloze-local passages, mmlu-local questions)")
    parser.add_argument("--val-tokens", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    start = time.perf_counter()
    reference, tokenizer = load("smollm2-135m")
    load_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        data = prepare_data(["default"], tokenizer, Path(tmp) / "data", max_tokens=200_000, val_tokens=args.val_tokens).out
        arms = {"smollm2-135m (30 layers)": reference, "derived 15 layers, untrained": inherit(reference, 15)}
        results, times = {}, {}
        for arm, model in arms.items():
            results[arm], times[arm] = {}, {}
            runs = [("val+cloze-local", dict(data=data, tasks=["cloze-local"], limit=args.limit)),
                    ("mmlu-local-0shot", dict(tasks=["mmlu-local"], num_fewshot=0, limit=args.limit)),
                    ("mmlu-local-5shot", dict(tasks=["mmlu-local"], num_fewshot=5, limit=args.limit))]
            for name, kwargs in runs:
                cpu = time.process_time()
                result = evaluate(model, tokenizer=tokenizer, batch_size=args.batch_size, **kwargs).report()
                label = name.split("+")[-1]
                results[arm].update({k.replace("mmlu-local/", f"{label}/"): v for k, v in flat_metrics(result).items()
                                     if not k.endswith("num_fewshot")})
                times[arm].update({f"{k.replace('mmlu-local', label)} s": v for k, v in result["time_s"].items()})
                times[arm][f"{name} cpu s"] = round(time.process_time() - cpu, 1)
                print(arm, name, json.dumps(results[arm]), json.dumps(times[arm]), flush=True)
    machine = f"{platform.machine()}, {torch.get_num_threads()} torch threads, CPU (shared, timings noisy)"
    atomic_write_json(RESULTS / "eval_smollm2.json", {
        "machine": machine, "reference_load_s": round(load_s, 1), "limit": args.limit,
        "data": f"packaged 'default' corpus, {results[next(iter(results))]['val_tokens']} val tokens",
        "results": results, "time_s": times,
    })
    atomic_write_text(RESULTS / "eval_smollm2.md",
                      f"# SmolLM2-135M vs its 15-layer derivative (untrained)\n\n{machine}; --limit {args.limit} examples per task.\n\n"
                      + comparison_markdown(results) + "\n## seconds\n\n" + comparison_markdown(times))


if __name__ == "__main__":
    main()
