"""The component study on the packaged SmolLM2-135M: analyze, importance (3 suite tasks x shots 0 and
3, plus LM windows) and induction joined per head and layer, with their correlations and findings.

LM windows and analyze's sequences come from the prepared data in runs/default/data when present,
else from the packaged `default` corpus prepared here (split seed 0, 8,192 validation tokens).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/study_smollm2.py [--examples 16]

Writes the study folder to runs/study_smollm2 and copies its findings to
benchmarks/results/study_smollm2.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from inheritune.commands.study import study
from inheritune.data.prepare import prepare_data
from inheritune.models.loading import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
WORK = ROOT / "runs" / "study_smollm2"
MODEL = "smollm2-135m"
TASKS = ["mmlu-stem", "mmlu-social-sciences", "bb-sports-understanding"]


def data_folder() -> Path:
    """The default run's prepared data, else the packaged `default` corpus prepared here."""
    prepared = ROOT / "runs" / "default" / "data"
    if (prepared / "manifest.json").is_file():
        return prepared
    out = ROOT / "runs" / "study_data"
    if not (out / "manifest.json").is_file():
        prepare_data(["default"], load_tokenizer(MODEL), out, max_tokens=200_000, val_tokens=8192, seed=0,
                     overwrite=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=16, help="LM windows and prompts per importance source")
    args = parser.parse_args()
    data = data_folder()
    result = study(MODEL, out=WORK / "out", data=data, tasks=TASKS, shots=(0, 3), examples=args.examples,
                   seq_len=128, sequences=32, overwrite=True)
    report = {"model": MODEL, "data": str(data.relative_to(ROOT)), "tasks": TASKS, "shots": [0, 3],
              "examples": args.examples, "seconds": round(result.seconds, 1), "threads": torch.get_num_threads(),
              "machine": platform.processor() or platform.machine(), **result.report()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "study_smollm2.json").write_text(json.dumps(report, indent=1) + "\n")
    md = (WORK / "out" / "study.md").read_text()
    (RESULTS / "study_smollm2.md").write_text(
        md + f"\nRun: `benchmarks/study_smollm2.py --examples {args.examples}` on {report['data']}, "
        f"{result.seconds:.0f} s on {torch.get_num_threads()} CPU thread(s).\n")
    print(md)


if __name__ == "__main__":
    main()
