"""The teacher's cost: tokens/s of inheritune's trainer with cross-entropy vs with distillation
from the 30-layer SmolLM2-135M, on its 15- and 18-layer derivatives (seq 512, micro-batch 4,
bf16 autocast where native), arms alternated in rounds so that machine noise hits them alike.

    .venv/bin/python benchmarks/bench_distill.py [--steps 3] [--rounds 2] [--layers 15 18]

Writes benchmarks/results/distill.json. Run it on a quiet machine: the load average before and
after is recorded alongside.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from bench_train import BATCH, SEQ, make_data
from inheritune.models.loading import load_model, load_tokenizer
from inheritune.models.surgery import inherit
from inheritune.training import train

RESULTS = Path(__file__).parent / "results" / "distill.json"


def step_seconds(model, data: Path, tokenizer, teacher, steps: int, work: Path) -> list[float]:
    """Seconds per optimizer step from the trainer's own log (evaluations and checkpoints excluded)."""
    kd = dict(distill_from="smollm2-135m", teacher=teacher) if teacher is not None else {}
    train(model, data, work / "run", tokenizer=tokenizer, steps=steps + 1, seq_len=SEQ, batch_size=BATCH,
          eval_every=10_000, progress=False, overwrite=True, **kd)
    rows = [json.loads(line) for line in (work / "run" / "log.jsonl").read_text().splitlines()]
    return [SEQ * BATCH / r["tokens_per_s"] for r in rows if r["step"] >= 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per arm per round (plus one warm-up)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--layers", type=int, nargs="+", default=[15, 18])
    args = parser.parse_args()
    load_before = os.getloadavg()
    tokenizer = load_tokenizer("smollm2-135m")
    reference = load_model("smollm2-135m")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = make_data(Path(tmp), tokenizer)
        for layers in args.layers:
            times: dict[str, list[float]] = {"ce": [], "kd": []}
            for _ in range(args.rounds):
                for arm in times:
                    with tempfile.TemporaryDirectory(dir=tmp) as work:
                        times[arm] += step_seconds(inherit(reference, layers), data, tokenizer,
                                                   reference if arm == "kd" else None, args.steps, Path(work))
            tok_s = {arm: SEQ * BATCH / statistics.median(ts) for arm, ts in times.items()}
            results[f"{layers} layers"] = {"tokens_per_s": tok_s, "kd_cost": tok_s["ce"] / tok_s["kd"], "step_s": times}
            print(f"{layers} layers: CE {tok_s['ce']:.0f} tok/s, KD {tok_s['kd']:.0f} tok/s "
                  f"(x{tok_s['ce'] / tok_s['kd']:.2f} the time per token)", flush=True)
    RESULTS.write_text(json.dumps({"seq_len": SEQ, "batch_size": BATCH, "threads": torch.get_num_threads(),
                                   "load_before": load_before, "load_after": os.getloadavg(), "results": results},
                                  indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
