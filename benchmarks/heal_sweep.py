"""How to heal a cut model on a small budget: train arms of (selector, depth, trained blocks, loss,
tokens, lr) on the development split and compare their val losses at equal tokens.

Each arm cuts the packaged reference with a block selector (analysis/selection.py), then trains it
with the product's own trainer: distillation from the reference ("kd", alpha 1, T 1) or
cross-entropy ("ce"), all blocks or only some (``train_blocks``: cuts:K, last:K), 512-token windows,
2,048 tokens per step, 6 warmup steps then cosine; "kd-top64" distils from the teacher's 64 most likely
tokens (teacher_states top:64, approximate) instead of its exact distribution. Arms run one after another and the results file
is rewritten after each, so an interrupted sweep keeps what it measured and a rerun skips it.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/heal_sweep.py --reference smollm2-135m \\
        --arms angular:24:all:kd:40960:3e-4 loss-greedy:24:all:kd:40960:3e-4 angular:24:cuts:2:kd:40960:3e-4

An arm is SELECTOR:DEPTH:TRAIN_BLOCKS:LOSS:TOKENS:LR (TRAIN_BLOCKS may hold a colon: cuts:2).
Writes benchmarks/results/heal_sweep_REFERENCE.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from inheritune.analysis.selection import scoring_windows, select
from inheritune.data.shards import open_data
from inheritune.evaluation.val_loss import val_loss
from inheritune.models.loading import load_model, load_tokenizer
from inheritune.models.surgery import inherit, spans
from inheritune.commands.train import train
from inheritune.training import TrainConfig

sys.path.insert(0, str(Path(__file__).parent))
from selection_sweep import ROOT, RESULTS, data_folder  # noqa: E402  (the same development split)


def parse_arm(spec: str) -> dict:
    parts = spec.split(":")
    by, depth, *blocks, loss, tokens, lr = parts
    if by in ("first-last", "list"):  # a selector with a parameter: by:arg
        by, depth, blocks = f"{by}:{depth}", blocks[0], blocks[1:]
    return {"name": spec, "by": by, "layers": int(depth), "train_blocks": ":".join(blocks), "loss": loss,
            "tokens": int(tokens), "lr": float(lr)}


def kept(arm: dict, reference, name: str, windows) -> list[int]:
    """The blocks the selector keeps: from selection_sweep's results when it chose them there (same
    split, same windows: the same choice, without re-running a slow selector), else chosen here."""
    path = RESULTS / f"selection_sweep_{name}.json"
    swept = json.loads(path.read_text())["frontier"] if path.is_file() else {}
    row = swept.get(arm["by"], {}).get(str(arm["layers"]))
    return row["keep"] if row else select(reference, arm["layers"], arm["by"], windows).keep


def run_arm(arm: dict, reference, name: str, tokenizer, data: Path, windows) -> dict:
    keep = kept(arm, reference, name, windows)
    model = inherit(reference, keep)
    kd = arm["loss"].startswith("kd")
    config = TrainConfig(seq_len=512, batch_size=4, tokens_per_step=2048, tokens=arm["tokens"], lr=arm["lr"],
                         min_lr=1e-5, warmup_steps=6, eval_every=10_000, train_blocks=arm["train_blocks"],
                         distill_from=name if kd else None, progress=False,
                         teacher_states=f"top:{arm['loss'][6:]}" if arm["loss"].startswith("kd-top") else "hidden")
    out = ROOT / "runs" / "heal" / name / arm["name"].replace(":", "_")
    result = train(model, data, out, config, tokenizer=tokenizer, overwrite=True,
                   teacher=reference if kd else None)
    return arm | {"keep": keep, "start_val_loss": result.val_history[0].val_loss,
                  "val_loss": result.final_val_loss, "wall_time": result.wall_time,
                  "tokens_per_s": result.tokens / max(result.wall_time, 1e-9)}


def table(rows: list[dict], reference_loss: float) -> str:
    lines = ["| selector | layers | blocks kept | trained | loss | tokens | lr | untrained | healed | gap | s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['by']} | {r['layers']} | {spans(r['keep'])} | {r['train_blocks']} | {r['loss']} | {r['tokens']:,} | "
              f"{r['lr']:g} | {r['start_val_loss']:.3f} | {r['val_loss']:.3f} | {r['val_loss'] - reference_loss:+.3f} | "
              f"{r['wall_time']:.0f} |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default="smollm2-135m")
    parser.add_argument("--arms", nargs="+", required=True)
    parser.add_argument("--split-seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer, reference = load_tokenizer(args.reference), load_model(args.reference)
    data = data_folder(args.reference, tokenizer, args.split_seed)
    path = RESULTS / f"heal_sweep_{args.reference}.json"
    stored = json.loads(path.read_text()) if path.is_file() else {}
    if "reference_val_loss" not in stored:
        stored = {"reference": args.reference, "split_seed": args.split_seed, "rows": [],
                  "reference_val_loss": val_loss(reference, open_data(data))["loss"]}
    windows = scoring_windows(data)
    for spec in args.arms:
        if any(r["name"] == spec for r in stored["rows"]):
            continue
        start = time.perf_counter()
        row = run_arm(parse_arm(spec), reference, args.reference, tokenizer, data, windows)
        stored["rows"].append(row | {"seconds": round(time.perf_counter() - start, 1)})
        path.write_text(json.dumps(stored, indent=1) + "\n")
        print(f"{spec}: {row['start_val_loss']:.3f} -> {row['val_loss']:.3f} in {row['wall_time']:.0f} s", flush=True)
    text = (f"{args.reference}: cut models healed on the development split (split seed {args.split_seed}); val loss "
            f"(yardstick) of the reference {stored['reference_val_loss']:.3f}; 2,048 tokens per step, 6 warmup steps, "
            f"cosine to 1e-5; s = training seconds (teacher included).\n\n"
            f"{table(stored['rows'], stored['reference_val_loss'])}\n")
    (RESULTS / f"heal_sweep_{args.reference}.md").write_text(text)
    print(text, flush=True)


if __name__ == "__main__":
    sys.exit(main())
