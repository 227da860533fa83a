"""The teacher's cost: tokens/s of inheritune's trainer with cross-entropy, with distillation from
the 30-layer SmolLM2-135M running the teacher every step, and with distillation reading the
teacher's states from its cache (training/teacher_cache.py), on 15- and 24-layer derivatives
(seq 512, micro-batch 4, bf16 autocast where native). The cache is filled once first (its build
time and disk per token are recorded); then the three arms alternate in rounds in one process,
so that machine noise hits them alike.

    .venv/bin/python benchmarks/bench_distill.py [--steps 3] [--rounds 2] [--layers 15 24]

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
from inheritune.commands.train import train

RESULTS = Path(__file__).parent / "results" / "distill.json"


# kd: the teacher runs every step; kd-cached: its hidden states read from the cache (exact);
# kd-top64: its 64 most likely tokens read from the cache (approximate: training/objective.py's TopK).
ARMS = {"ce": {}, "kd": {"teacher_cache": "off"}, "kd-cached": {}, "kd-top64": {"teacher_states": "top:64"}}
CACHED = ("kd-cached", "kd-top64")


def step_seconds(model, data: Path, tokenizer, teacher, arm: str, steps: int, work: Path, cache: Path):
    """Seconds per optimizer step from the trainer's own log (evaluations and checkpoints excluded),
    and the run's teacher cache statistics."""
    kd = dict(distill_from="smollm2-135m", teacher=teacher, teacher_cache=str(cache)) if arm != "ce" else {}
    result = train(model, data, work / "run", tokenizer=tokenizer, steps=steps + 1, seq_len=SEQ, batch_size=BATCH,
                   eval_every=10_000, progress=False, overwrite=True, **kd | ARMS[arm])
    rows = [json.loads(line) for line in (work / "run" / "log.jsonl").read_text().splitlines()]
    return [SEQ * BATCH / r["tokens_per_s"] for r in rows if r["step"] >= 2], result.teacher_cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per arm per round (plus one warm-up)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--layers", type=int, nargs="+", default=[15, 24])
    args = parser.parse_args()
    load_before = os.getloadavg()
    tokenizer = load_tokenizer("smollm2-135m")
    reference = load_model("smollm2-135m")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data, cache = make_data(Path(tmp), tokenizer), Path(tmp) / "teacher-cache"
        build = {}
        for arm in CACHED:  # fill the caches: every arm trains these windows
            with tempfile.TemporaryDirectory(dir=tmp) as work:
                build[arm] = step_seconds(inherit(reference, args.layers[0]), data, tokenizer, reference, arm,
                                          args.steps, Path(work), cache)[1]
            disk = sum(f.stat().st_size for f in Path(build[arm]["folder"]).glob("seg-*.bin"))
            build[arm] |= {"disk_bytes": disk, "disk_bytes_per_token": disk / ((args.steps + 1) * SEQ * BATCH)}
            print(f"{arm} cache: {build[arm]['windows_computed']} windows in {build[arm]['compute_seconds']:.1f} s, "
                  f"{build[arm]['disk_bytes_per_token']:.0f} bytes per token", flush=True)
        for layers in args.layers:
            times: dict[str, list[float]] = {arm: [] for arm in ARMS}
            for _ in range(args.rounds):
                for arm in times:
                    with tempfile.TemporaryDirectory(dir=tmp) as work:
                        seconds, stats = step_seconds(inherit(reference, layers), data, tokenizer, reference,
                                                      arm, args.steps, Path(work), cache)
                    assert arm not in CACHED or stats["windows_computed"] == 0, stats
                    times[arm] += seconds
            tok_s = {arm: SEQ * BATCH / statistics.median(ts) for arm, ts in times.items()}
            cost = {arm: tok_s["ce"] / tok_s[arm] for arm in ARMS if arm != "ce"}
            results[f"{layers} layers"] = {"tokens_per_s": tok_s, "cost_per_token_vs_ce": cost, "step_s": times}
            print(f"{layers} layers: CE {tok_s['ce']:.0f} tok/s; " + "; ".join(
                f"{arm} {tok_s[arm]:.0f} (x{cost[arm]:.2f} the time per token)" for arm in cost), flush=True)
    RESULTS.write_text(json.dumps({"seq_len": SEQ, "batch_size": BATCH, "threads": torch.get_num_threads(),
                                   "load_before": load_before, "load_after": os.getloadavg(), "cache_build": build,
                                   "results": results},
                                  indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
