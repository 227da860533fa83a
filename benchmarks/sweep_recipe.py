"""The sweep behind the default recipe: CE vs distillation, peak lr, warmup, and which blocks to
inherit, on the packaged SmolLM2-135M and the `default` corpus, at equal tokens and equal wall time.

Hyper-parameters are picked on a *development* split, not on the validation split the default
run reports: the data here is prepared with split seed 1 (`runs/sweep/data`), whose validation
documents differ from those of the default run's seed-0 split (they are in its train split).
Every setting trains the derived 15-layer model (round 1 of the recipe) for the same tokens,
with the product's own trainer, and is scored with the product's one val-loss yardstick.

    .venv/bin/python benchmarks/sweep_recipe.py [--steps 40] [--threads 1] [--only NAME ...]

Writes benchmarks/results/sweep_recipe.{json,md,png}. A finished setting is reused on a rerun
(its run folder under runs/sweep/ holds its result), so the sweep can be stopped and resumed.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch

from inheritune.data.prepare_job import prepare_data
from inheritune.data.shards import open_data
from inheritune.evaluation.val_loss import YARDSTICK
from inheritune.evaluation.reference_loss import reference_val_loss
from inheritune.models.loading import load_model, load_tokenizer
from inheritune.analysis.selection import select
from inheritune.models.surgery import inherit
from inheritune.commands.train import train

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
WORK = ROOT / "runs" / "sweep"
BASE = dict(seq_len=512, batch_size=4, tokens_per_step=2048, min_lr=1e-5, precision="auto", progress=False)

KD = dict(distill_alpha=1.0, distill_temperature=1.0)
# name: (layers, of which kept from the reference's end, overrides of BASE); round 1 of the recipe
# (15 layers) first, ordered by what the decision needs first; then deeper starts (the later rounds)
SETTINGS: dict[str, tuple[int, int, dict]] = {
    "ce lr1e-3": (15, 0, dict(lr=1e-3)),
    "kd a1 T1 lr3e-3": (15, 0, dict(lr=3e-3, **KD)),
    "ce lr3e-3": (15, 0, dict(lr=3e-3)),
    "kd a1 T1 lr3e-3 last3": (15, 3, dict(lr=3e-3, **KD)),
    "kd a0.5 T1 lr3e-3": (15, 0, dict(lr=3e-3, distill_alpha=0.5, distill_temperature=1.0)),
    "kd a1 T2 lr3e-3": (15, 0, dict(lr=3e-3, distill_alpha=1.0, distill_temperature=2.0)),
    "kd a1 T1 lr1e-2": (15, 0, dict(lr=1e-2, **KD)),
    "kd a1 T1 lr1e-3": (15, 0, dict(lr=1e-3, **KD)),
    "ce lr3e-3 last3": (15, 3, dict(lr=3e-3)),
    "kd a1 T1 lr3e-3 warmup12": (15, 0, dict(lr=3e-3, warmup_steps=12, **KD)),
    "24L last3 kd lr3e-3": (24, 3, dict(lr=3e-3, **KD)),
    "24L last3 kd lr1e-3": (24, 3, dict(lr=1e-3, **KD)),
}


def dev_data(tokenizer) -> Path:
    """The development split: the default corpus with split seed 1 (the default run uses seed 0)."""
    out = WORK / "data"
    if not (out / "manifest.json").is_file():
        prepare_data(["default"], tokenizer, out, max_tokens=1_000_000, val_tokens=8192, seed=1, overwrite=True)
    return out


def at(curve: list[dict], key: str, x: float) -> float:
    """Val loss at ``x`` (tokens or wall seconds), linearly interpolated between evaluations."""
    xs, ys = [h[key] for h in curve], [h["val_loss"] for h in curve]
    return float(np.interp(x, xs, ys))


def run_setting(name: str, layers: int, keep_last: int, overrides: dict, reference, tokenizer, data: Path,
                steps: int) -> None:
    config = {**BASE, **overrides, "steps": steps, "eval_every": max(1, steps // 2)}
    if "distill_alpha" in config:
        config["distill_from"] = "smollm2-135m"
    model = inherit(reference, select(reference, layers, f"first-last:{keep_last}").keep)
    out = WORK / name.replace(" ", "_")
    started = (out / "result.json").is_file() or (out / "checkpoints").is_dir()
    print(f"[sweep] {name}: {steps} steps -> {out}", flush=True)
    train(model, data, out, tokenizer=tokenizer, resume=started, overwrite=not started,
          teacher=reference if "distill_from" in config else None, **config)


def finished_rows() -> list[dict]:
    """Every finished setting, read back from its run folder (several sweep processes may share the work)."""
    rows = []
    for name, (layers, keep_last, overrides) in SETTINGS.items():
        path = WORK / name.replace(" ", "_") / "result.json"
        if path.is_file():
            result = json.loads(path.read_text())
            rows.append({"name": name, "layers": layers, "keep_last": keep_last, **overrides, "tokens": result["tokens"],
                         "wall_time": result["wall_time"], "final_val_loss": result["final_val_loss"],
                         "tokens_per_s": result["tokens"] / result["wall_time"], "curve": result["val_history"]})
    return rows


def cost_per_token(row: dict) -> float:
    """Training time per token relative to cross-entropy at the same depth, as measured on a quiet
    machine by bench_distill.py (the sweep's own seconds ran two or three settings at a time)."""
    if "distill_alpha" not in row:
        return 1.0
    measured = json.loads((RESULTS / "distill.json").read_text())["results"]
    return measured[f"{row['layers']} layers"]["kd_cost"]


def table(rows: list[dict], ref_loss: float) -> tuple[str, float]:
    """One table per (layers, tokens) group: val at equal tokens, and at equal training time, i.e. at
    the tokens each setting trains in the time the group's cheapest loss takes for the whole budget
    (interpolated between evaluations)."""
    parts = []
    for key in sorted({(r["layers"], r["tokens"]) for r in rows}):
        group = [r for r in rows if (r["layers"], r["tokens"]) == key]
        cheapest = min(cost_per_token(r) for r in group)
        lines = [f"**{key[0]} layers, {key[1]:,} tokens**", "",
                 f"| setting | val @ {key[1]:,} tokens | val @ equal time (tokens) | gap to reference |",
                 "|---|---|---|---|"]
        for r in sorted(group, key=lambda r: r["final_val_loss"]):
            tokens = key[1] * cheapest / cost_per_token(r)
            lines.append(f"| {r['name']} | {r['final_val_loss']:.3f} | {at(r['curve'], 'tokens', tokens):.3f} "
                         f"({tokens:,.0f}) | {r['final_val_loss'] - ref_loss:+.3f} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts), 0.0


def plot(rows: list[dict], ref_loss: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, key, label in ((axes[0], "tokens", "training tokens"), (axes[1], "wall_time", "training seconds")):
        for r in rows:
            curve = r["curve"][1:]  # step 0 (val ~22 for every setting) would flatten the rest
            ax.plot([h[key] for h in curve], [h["val_loss"] for h in curve], marker="o", ms=3, label=r["name"])
        ax.axhline(ref_loss, color="k", ls="--", lw=1)
        ax.annotate(f"reference {ref_loss:.2f}", (0.01, ref_loss), xycoords=("axes fraction", "data"), va="bottom")
        ax.set_xlabel(label)
        ax.set_ylabel("val loss (dev split)")
    axes[1].legend(fontsize=7)
    fig.suptitle("SmolLM2 derivatives on the dev split: round 1 (15 layers) and a 24-layer start (step 0 not shown)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: robust to a second job on 2 cores)")
    parser.add_argument("--only", nargs="*", help="run only these settings (others finished earlier are still tabled)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer = load_tokenizer("smollm2-135m")
    reference = load_model("smollm2-135m")
    data = dev_data(tokenizer)
    ref = reference_val_loss(reference, "smollm2-135m", open_data(data), WORK / "reference.json")
    for name, (layers, keep_last, overrides) in SETTINGS.items():
        if args.only is None or name in args.only:
            run_setting(name, layers, keep_last, overrides, reference, tokenizer, data, args.steps)
        write_results(finished_rows(), ref["loss"], args)


def write_results(rows: list[dict], ref_loss: float, args) -> None:
    if not rows:
        return
    text, wall = table(rows, ref_loss)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sweep_recipe.json").write_text(json.dumps({
        "what": "round 1 of the recipe (15 of 30 SmolLM2 layers) and deeper starts, dev split (seed 1), equal tokens",
        "base": BASE, "steps": args.steps, "yardstick": YARDSTICK, "reference_val_loss": ref_loss,
        "equal_time": "tokens each setting trains in the time the cheapest loss takes for the budget (distill.json)", "machine": platform.processor() or platform.machine(),
        "torch_threads": args.threads, "rows": rows}, indent=1) + "\n")
    (RESULTS / "sweep_recipe.md").write_text(
        f"Reference SmolLM2-135M (30 layers) on the dev split: val {ref_loss:.3f}.\n\n{text}\n")
    plot(rows, ref_loss, RESULTS / "sweep_recipe.png")
    print(text, flush=True)


if __name__ == "__main__":
    sys.exit(main())
