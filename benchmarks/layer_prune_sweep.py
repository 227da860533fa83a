"""Layer pruning on the packaged SmolLM2-135M: val loss after dropping K of its 30 blocks, by
Block Influence (ShortGPT), angular distance (Gromov et al.), laziness (analyze's sink measure)
and "keep the first n" (Inheritune), with no healing.

The blocks are chosen on ``--sequences`` x ``--seq-len`` windows of the train split of the packaged
`default` corpus (split seed 0, as the default run) and every pruned model is scored with the one
val-loss yardstick on its 8,192-token validation split, where the unpruned model scores 2.961.
One extra arm, "first-n + last 3", drops the K blocks just before the last 3: the blocks the
default recipe (first 12 + last 3) leaves out.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/layer_prune_sweep.py [--max-drop 14] [--step 2]

Writes benchmarks/results/layer_prune_sweep.{json,md,png}.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from inheritune.analysis import layers as lp
from inheritune.data.prepare import prepare_data
from inheritune.data.shards import open_data
from inheritune.evaluation.loss import val_loss
from inheritune.models.families import num_layers
from inheritune.models.loading import load_model, load_tokenizer
from inheritune.models.surgery import drop_blocks

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
WORK = ROOT / "runs" / "layer_prune"
KEEP_LAST = 3  # the default recipe's kept tail (recipes/default.yaml, grow.keep_last)


def data_folder(tokenizer) -> Path:
    """The `default` corpus, split seed 0 with the default run's 8,192-token validation split (the
    split does not depend on --max-tokens; 200K training tokens are plenty to draw windows from)."""
    out = WORK / "data"
    if not (out / "manifest.json").is_file():
        prepare_data(["default"], tokenizer, out, max_tokens=200_000, val_tokens=8192, seed=0, overwrite=True)
    return out


def keep_last_arm(model, data, drops: list[int]) -> dict:
    """Val loss after dropping the K blocks just before the last ``KEEP_LAST`` (the recipe's choice)."""
    total = num_layers(model.config)
    plans = [list(range(total - KEEP_LAST - k, total - KEEP_LAST)) for k in drops]
    losses = [val_loss(drop_blocks(model, plan) if plan else model, data)["loss"] for plan in plans]
    return {"dropped": plans, "val_loss": losses}


def table(result: dict) -> str:
    names = list(result["val_loss"])
    lines = ["| K dropped | layers left | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
    for row, k in enumerate(result["drops"]):
        cells = []
        for name in names:
            loss = result["val_loss"][name][row]
            best = loss == min(result["val_loss"][n][row] for n in names)
            cells.append(f"**{loss:.3f}**" if best else f"{loss:.3f}")
        lines.append(f"| {k} | {result['layers'] - k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def dropped_table(result: dict) -> str:
    lines = ["| K | " + " | ".join(result["dropped"]) + " |", "|---" * (len(result["dropped"]) + 1) + "|"]
    for row, k in enumerate(result["drops"][1:], start=1):
        lines.append(f"| {k} | " + " | ".join(",".join(map(str, plans[row])) for plans in result["dropped"].values()) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-drop", type=int, default=14)
    parser.add_argument("--step", type=int, default=2)
    parser.add_argument("--sequences", type=int, default=32, help="windows the blocks are chosen on")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    tokenizer = load_tokenizer("smollm2-135m")
    model = load_model("smollm2-135m")
    data = data_folder(tokenizer)
    windows = lp.scoring_windows(data, args.sequences, args.seq_len)
    result = lp.sweep(model, data, windows, max_drop=args.max_drop, step=args.step)
    extra = keep_last_arm(model, open_data(data), result["drops"])
    result["val_loss"][f"first-n + last {KEEP_LAST}"] = extra["val_loss"]
    result["dropped"][f"first-n + last {KEEP_LAST}"] = extra["dropped"]
    result.update(model="smollm2-135m", layers=num_layers(model.config), data="default corpus, split seed 0",
                  scoring_windows={"split": "train", "sequences": args.sequences, "seq_len": args.seq_len, "seed": 0},
                  healing="none", torch_threads=args.threads, machine=platform.processor() or platform.machine(),
                  seconds=round(time.perf_counter() - start, 1))

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "layer_prune_sweep.json").write_text(json.dumps(result, indent=1) + "\n")
    lp.plot_sweep(result, RESULTS / "layer_prune_sweep.png",
                  "SmolLM2-135M: val loss after dropping K of 30 blocks (no healing)")
    text = (f"SmolLM2-135M ({result['layers']} layers), val loss (yardstick, 8,192-token val split of the "
            f"default corpus) after dropping K blocks, no healing; blocks chosen on {args.sequences} x "
            f"{args.seq_len} train-split windows. Best per row in bold. {result['seconds']:.0f} s.\n\n"
            f"{table(result)}\n\nBlocks dropped:\n\n{dropped_table(result)}\n")
    (RESULTS / "layer_prune_sweep.md").write_text(text)
    print(text, flush=True)


if __name__ == "__main__":
    sys.exit(main())
