"""Is a width-pruned model really faster and smaller? Tokens/s of a forward pass and of a training
step (forward, backward, AdamW), and safetensors bytes, for the packaged reference, the reference
with the same units masked (zeroed by hooks: what a global prune plan saves), and models cut to
about 2/3 of its non-embedding parameters by depth, by width and by both.

Speed depends on shapes, not on values, so every model here is built from the reference's config
with the cut applied (random weights). Models alternate in rounds so machine noise hits them
alike; each number is the median over rounds of the best step of a round (the first step of
every model in every round is warm-up, untimed). Batch 4 x 512, fp32.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_width.py [--rounds 3] [--steps 2]

Writes benchmarks/results/bench_width.{json,md}.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM

from inheritune.analysis.width_ranking import masked
from inheritune.models import budget
from inheritune.models.budget import cut_within
from inheritune.models.families import blocks, num_layers, set_num_layers
from inheritune.models.loading import load_model
from inheritune.models.width_cut import WidthPlan, geometry, plan, smaller_config

RESULTS = Path(__file__).parent / "results"
BATCH, SEQ = 4, 512
SHAPES = {  # name: (layers kept, heads %, FFN %): each about 2/3 of SmolLM2-135M's non-embedding parameters
    "depth 20 of 30": (20, 0, 0),
    "width FFN 1536 -> 860": (30, 0, 44),
    "width heads 9 -> 6, FFN -> 983": (30, 100 / 3, 36),
    "both 24 layers, heads 9 -> 6, FFN -> 1321": (24, 100 / 3, 14),
}
BOTH_SHARE = 0.67


def non_embedding(model) -> int:
    return budget.non_embedding(model.config)


def disk_bytes(model) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        return sum(f.stat().st_size for f in Path(tmp).glob("*.safetensors"))


def shaped(reference, layers: int, heads_pct: float, ffn_pct: float):
    """A random model of the cut's shape (the plan's units do not matter for speed)."""
    config = copy.deepcopy(reference.config)
    set_num_layers(config, layers)
    if heads_pct or ffn_pct:
        heads, _kv, _w, neurons = geometry(config)
        width = plan(config, np.zeros((layers, heads)), np.zeros((layers, neurons)), heads_pct, ffn_pct, "query")
        config = smaller_config(config, width)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


def random_width(model, heads_pct: float, ffn_pct: float) -> WidthPlan:
    heads, _kv, _w, neurons = geometry(model.config)
    rng = np.random.default_rng(0)
    layers = len(blocks(model))
    return plan(model.config, rng.random((layers, heads)), rng.random((layers, neurons)), heads_pct, ffn_pct, "query")


def forward_seconds(model, ids) -> float:
    with torch.no_grad():
        start = time.perf_counter()
        model(input_ids=ids, use_cache=False)
        return time.perf_counter() - start


def train_seconds(model, ids, optimizer) -> float:
    start = time.perf_counter()
    model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default="smollm2-135m")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per model per round (after one warm-up)")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    reference = load_model(args.reference)
    cut = cut_within(reference.config, BOTH_SHARE, "both")  # what `prune --params 0.67 --budget-by both` cuts
    shapes = SHAPES | {f"both {num_layers(reference.config) - cut.drop_layers} layers, FFN -{cut.ffn_percent:.1f}% "
                       f"(--budget-by both)": (num_layers(reference.config) - cut.drop_layers, 0, cut.ffn_percent)}
    models = {"reference": reference} | {name: shaped(reference, *s) for name, s in shapes.items()}
    mask = random_width(reference, 100 / 3, 36)
    ids = torch.randint(0, reference.config.vocab_size, (BATCH, SEQ), generator=torch.Generator().manual_seed(0))
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=0.0) for name, m in models.items()}  # lr 0: no change
    timings: dict[str, dict[str, list[float]]] = {n: {"forward": [], "train": []} for n in [*models, "reference, masked"]}
    load_before = os.getloadavg()[0]
    for _round in range(args.rounds):
        for name in timings:
            model = models["reference" if name.startswith("reference") else name]
            optimizer = optimizers["reference" if name.startswith("reference") else name]
            with masked(model, mask) if name == "reference, masked" else nullcontext():
                forward = [forward_seconds(model, ids) for _ in range(args.steps + 1)][1:]
                model.train()
                step = [train_seconds(model, ids, optimizer) for _ in range(args.steps + 1)][1:]
                model.eval()
            timings[name]["forward"].append(min(forward))
            timings[name]["train"].append(min(step))
            print(f"{name}: forward {BATCH * SEQ / min(forward):.0f} tok/s, train {BATCH * SEQ / min(step):.0f} tok/s",
                  flush=True)
    rows = {}
    for name, t in timings.items():
        model = models["reference" if name.startswith("reference") else name]
        rows[name] = {"non_embedding": non_embedding(model), "disk": disk_bytes(model),
                      "forward_tok_s": BATCH * SEQ / statistics.median(t["forward"]),
                      "train_tok_s": BATCH * SEQ / statistics.median(t["train"])}
    ref = rows["reference"]
    report = {"reference": args.reference, "batch": BATCH, "seq_len": SEQ, "rounds": args.rounds, "steps": args.steps,
              "threads": torch.get_num_threads(), "load_before": load_before, "load_after": os.getloadavg()[0],
              "rows": rows}
    (RESULTS / "bench_width.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [f"{args.reference}, batch {BATCH} x {SEQ}, fp32, {torch.get_num_threads()} threads, median over "
             f"{args.rounds} alternating rounds of the best of {args.steps} steps; load {load_before:.1f} -> "
             f"{report['load_after']:.1f}. The masked reference has 1/3 of its heads and 36% of its FFN neurons "
             "zeroed by hooks.\n",
             "| model | non-embedding params | safetensors MB | forward tok/s | training tok/s |", "|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['non_embedding']:,} ({r['non_embedding'] / ref['non_embedding']:.2f}) | "
                     f"{r['disk'] / 1e6:.0f} | {r['forward_tok_s']:.0f} ({r['forward_tok_s'] / ref['forward_tok_s']:.2f}x) | "
                     f"{r['train_tok_s']:.0f} ({r['train_tok_s'] / ref['train_tok_s']:.2f}x) |")
    text = "\n".join(lines) + "\n"
    (RESULTS / "bench_width.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
