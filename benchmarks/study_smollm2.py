"""The component study on a packaged reference (SmolLM2-135M by default, or Gemma-3-270M):
analyze, importance (3 suite tasks x the shot counts, plus LM windows) and induction joined per
head and layer, with their correlations and findings.

LM windows and analyze's sequences come from the `default` corpus in the model's tokens: for
SmolLM2 the default run's prepared data (runs/default/data) when present, else the corpus prepared
here (split seed 0, 8,192 validation tokens).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/study_smollm2.py [--examples 16]
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/study_smollm2.py --model gemma3-270m --examples 16 --shots 0

Writes the study folder to runs/study_MODEL and copies its findings to
benchmarks/results/study_smollm2.{json,md} (other models: study_MODEL.{json,md}).
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from inheritune.commands.study import study
from inheritune.data.prepare_job import prepare_data
from inheritune.models.loading import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
MODEL = "smollm2-135m"
TASKS = ["mmlu-stem", "mmlu-social-sciences", "bb-sports-understanding"]


def data_folder(model: str) -> Path:
    """The default run's prepared data (SmolLM2's tokens), else the packaged `default` corpus
    prepared here in ``model``'s tokens."""
    prepared = ROOT / "runs" / "default" / "data"
    if model == MODEL and (prepared / "manifest.json").is_file():
        return prepared
    out = ROOT / "runs" / ("study_data" if model == MODEL else f"study_data_{model}")
    if not (out / "manifest.json").is_file():
        prepare_data(["default"], load_tokenizer(model), out, max_tokens=200_000, val_tokens=8192, seed=0,
                     overwrite=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=MODEL, help="a packaged reference alias")
    parser.add_argument("--examples", type=int, default=16, help="LM windows and prompts per importance source")
    parser.add_argument("--shots", default="0,3", help="shot counts, comma-separated")
    args = parser.parse_args()
    shots = [int(s) for s in args.shots.split(",")]
    name = "smollm2" if args.model == MODEL else args.model
    work = ROOT / "runs" / f"study_{name}"
    data = data_folder(args.model)
    result = study(args.model, out=work / "out", data=data, tasks=TASKS, shots=shots, examples=args.examples,
                   seq_len=128, sequences=32, overwrite=True)
    report = {"model": args.model, "data": str(data.relative_to(ROOT)), "tasks": TASKS, "shots": shots,
              "examples": args.examples, "seconds": round(result.seconds, 1), "threads": torch.get_num_threads(),
              "machine": platform.processor() or platform.machine(), **result.report()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"study_{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    md = (work / "out" / "study.md").read_text()
    (RESULTS / f"study_{name}.md").write_text(
        md + f"\nRun: `benchmarks/study_smollm2.py --model {args.model} --examples {args.examples} --shots "
        f"{args.shots}` on {report['data']}, "
        f"{result.seconds:.0f} s on {torch.get_num_threads()} CPU thread(s).\n")
    print(md)


if __name__ == "__main__":
    main()
