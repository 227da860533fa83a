"""Which blocks to keep, before healing: val loss of a packaged reference cut to each depth by every
block selector of the registry (analysis/selection.py), no training.

The blocks are chosen on the registry's scoring windows (16 x 256 tokens of the train split) and
every cut model is scored with the one val-loss yardstick on the 8,192-token validation split of
the packaged `default` corpus. ``--split-seed 1`` (the default) is the development split the
default recipe was chosen on; seed 0 is the split the default run reports.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/selection_sweep.py --reference smollm2-135m --depths 24,20,16
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/selection_sweep.py --reference gemma3-270m --depths 14,12,10

Writes benchmarks/results/selection_sweep_REFERENCE.{json,md,png}; the json is rewritten after every
number, and a rerun skips what it holds (``--selectors`` adds selectors to it).
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
from inheritune.analysis.selection import Scoring, choose, scoring_windows
from inheritune.data.prepare_job import prepare_data
from inheritune.data.shards import open_data
from inheritune.evaluation.val_loss import val_loss
from inheritune.models.families import num_layers
from inheritune.models.loading import load_model, load_tokenizer
from inheritune.models.surgery import drop_blocks, spans
from inheritune.reporting.plots import curves

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"


def data_folder(reference: str, tokenizer, seed: int) -> Path:
    """The `default` corpus in the reference's tokens, split ``seed``, 8,192 val tokens (the split does
    not depend on max_tokens; 200K training tokens are plenty to draw windows and short runs from)."""
    out = ROOT / "runs" / "selection" / f"{reference}-split{seed}" / "data"
    if not (out / "manifest.json").is_file():
        prepare_data(["default"], tokenizer, out, max_tokens=200_000, val_tokens=8192, seed=seed, overwrite=True)
    return out


def frontier(model, data, depths: list[int], selectors: list[str], stored: dict, save) -> dict:
    """Per selector and depth: the blocks kept and the val loss of the cut model. ``stored`` holds what
    an earlier, interrupted invocation measured (skipped here); ``save`` is called after each number."""
    scoring = Scoring(model, scoring_windows(data))
    for by in selectors:
        for n in depths:
            row = stored.setdefault(by, {}).setdefault(str(n), {})
            if "keep" not in row:
                start = time.perf_counter()
                row["keep"] = choose(scoring, n, by).keep
                row["seconds"] = round(time.perf_counter() - start, 1)
                print(f"{by} at {n}: keep {spans(row['keep'])} ({row['seconds']:.0f} s)", flush=True)
                save()
    losses = {tuple(r["keep"]): r["val_loss"] for per in stored.values() for r in per.values() if "val_loss" in r}
    for by in selectors:
        for n in depths:
            row = stored[by][str(n)]
            if tuple(row["keep"]) not in losses:
                dropped = [i for i in range(num_layers(model.config)) if i not in row["keep"]]
                losses[tuple(row["keep"])] = val_loss(drop_blocks(model, dropped), data)["loss"]
            row["val_loss"] = losses[tuple(row["keep"])]
            save()
    return stored


def table(result: dict) -> str:
    depths = result["depths"]
    lines = ["| selector | " + " | ".join(f"{n} layers" for n in depths) + " |", "|---" * (len(depths) + 1) + "|"]
    for by, per in result["frontier"].items():
        cells = []
        for n in depths:
            loss = per[str(n)]["val_loss"]
            best = loss == min(p[str(n)]["val_loss"] for p in result["frontier"].values())
            cells.append(f"**{loss:.3f}**" if best else f"{loss:.3f}")
        lines.append(f"| {by} | " + " | ".join(cells) + " |")
    lines += ["", "Blocks kept:", "", "| selector | " + " | ".join(f"{n} layers" for n in depths) + " |",
              "|---" * (len(depths) + 1) + "|"]
    lines += [f"| {by} | " + " | ".join(spans(per[str(n)]["keep"]) for n in depths) + " |"
              for by, per in result["frontier"].items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default="smollm2-135m")
    parser.add_argument("--depths", default="24,20,16")
    parser.add_argument("--selectors", default=",".join(lp.SWEEP))
    parser.add_argument("--split-seed", type=int, default=1, help="1: the development split; 0: the reported one")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    tokenizer, model = load_tokenizer(args.reference), load_model(args.reference)
    data = open_data(data_folder(args.reference, tokenizer, args.split_seed))
    depths = [int(d) for d in args.depths.split(",")]
    name = f"selection_sweep_{args.reference}"
    path = RESULTS / f"{name}.json"
    result = json.loads(path.read_text()) if path.is_file() else {}
    if result.get("split_seed") != args.split_seed:
        result = {"reference": args.reference, "layers": num_layers(model.config), "split_seed": args.split_seed,
                  "reference_val_loss": val_loss(model, data)["loss"], "frontier": {}, "healing": "none"}
    if result.get("reference_val_loss") is None:
        result["reference_val_loss"] = val_loss(model, data)["loss"]
    result.update(depths=depths, torch_threads=args.threads, machine=platform.processor() or platform.machine())
    RESULTS.mkdir(exist_ok=True)
    save = lambda: path.write_text(json.dumps(result, indent=1) + "\n")  # noqa: E731
    frontier(model, data, depths, args.selectors.split(","), result["frontier"], save)
    result["seconds"] = round(result.get("seconds", 0) + time.perf_counter() - start, 1)
    save()
    series = {by: (depths, [per[str(n)]["val_loss"] for n in depths]) for by, per in result["frontier"].items()}
    ref = result["reference_val_loss"]
    curves(series, RESULTS / f"{name}.png", f"{args.reference}: val loss of the cut model, no healing",
           "layers kept", "val loss (nats)", hlines={f"reference, {result['layers']} layers ({ref:.2f})": ref},
           ylim=(ref - 0.25, ref + lp.PLOT_CLIP))
    text = (f"{args.reference} ({result['layers']} layers, val loss {ref:.3f}), val loss (yardstick, 8,192-token "
            f"val split {args.split_seed} of the default corpus) of the model cut to each depth by each selector, "
            f"no healing; blocks chosen on 16 x 256 train-split windows. Best per column in bold. "
            f"{result['seconds']:.0f} s.\n\n{table(result)}\n")
    (RESULTS / f"{name}.md").write_text(text)
    print(text, flush=True)


if __name__ == "__main__":
    sys.exit(main())
