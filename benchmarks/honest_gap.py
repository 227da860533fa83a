"""The honest gap: a cut model against the reference trained on the same tokens, on the development split.

The reference as it is never saw the corpus, so a cut model that matches it may only have adapted to
the domain. This sweep trains, on the development split (split seed 1, never the split the default run
reports), the reference itself and the cut models on the same windows, and reports each cut model's gap
to both. An arm is METHOD:DEPTH:TOKENS:LR:

- ``ref``: the reference itself trained with cross-entropy (the yardstick; DEPTH is its own depth);
- ``ce``: the blocks the selector keeps (``--by``), healed with cross-entropy;
- ``kdc``: the same cut, distilled (top-64 logits) from the reference trained on the same tokens (Minitron's
  teacher correction; that ``ref`` arm must have run);
- ``cutc``: the blocks cut out of the reference trained on the same tokens, then cross-entropy (correct, cut, heal);
- ``cutc-kdc``: both (Minitron's order: correct, prune, distil);
- ``laco``: the cut initialised by merging each dropped slice into the kept block before it (LaCo:
  that block's weights plus the sum of the slice's differences from them), then cross-entropy;
- ``lastK``: the cut healed with cross-entropy in its last K blocks only (train --train-blocks last:K);
- ``loraR``: the cut healed with cross-entropy through LoRA adapters of rank R (train --lora R), the
  weights frozen: the row also records the trainable parameters and their bytes (weights, gradients
  and AdamW's two moments, fp32: 16 per parameter).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/honest_gap.py --reference smollm2-135m --by angular \\
        --arms ref:30:81920:3e-4 ce:24:81920:3e-4 kdc:24:81920:3e-4

2,048 tokens per step (4 x 512), 6 warmup steps, cosine to 1e-5, the product's own trainer. FLOPs: the
trainer's FLOPs per token x tokens, plus for distillation the teacher's forward passes (a third of its
training FLOPs per token) and its correction (the ``ref`` run's FLOPs). The data folder holds the first
``--data-tokens`` train tokens of the default corpus, so runs of up to that many tokens see each window once.
Writes benchmarks/results/honest_gap_REFERENCE.{json,md}; rewritten after each arm, a rerun skips what it holds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from inheritune.analysis.selection import scoring_windows, select
from inheritune.commands.train import train
from inheritune.data.prepare_job import prepare_data
from inheritune.data.shards import open_data
from inheritune.evaluation.val_loss import val_loss
from inheritune.models.families import blocks, num_layers
from inheritune.models.loading import load_model, load_tokenizer
from inheritune.models.surgery import inherit, spans
from inheritune.reporting.plots import curves
from inheritune.training import TrainConfig
from inheritune.training.flops import flops_per_token

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
METHODS = ("ref", "ce", "kdc", "cutc", "cutc-kdc", "laco")


def data_folder(reference: str, tokenizer, max_tokens: int) -> Path:
    out = ROOT / "runs" / "honest" / f"{reference}-split1-{max_tokens}" / "data"
    if not (out / "manifest.json").is_file():
        prepare_data(["default"], tokenizer, out, max_tokens=max_tokens, val_tokens=8192, seed=1, overwrite=True)
    return out


def parse_arm(spec: str) -> dict:
    method, depth, tokens, lr = spec.split(":")
    if method not in METHODS and not any(method.startswith(p) and method[len(p):].isdigit() for p in ("lora", "last")):
        raise SystemExit(f"{spec}: method must be one of {', '.join(METHODS)}")
    return {"name": spec, "method": method, "layers": int(depth), "tokens": int(tokens), "lr": float(lr), "lr_text": lr}


def run_dir(reference: str, arm: dict) -> Path:
    return ROOT / "runs" / "honest" / reference / arm["name"].replace(":", "_")


def trained_reference(reference: str, arm: dict, total: int) -> Path:
    """The final model of the ``ref`` arm on the same tokens and lr (it must have run)."""
    ref = {"name": f"ref:{total}:{arm['tokens']}:{arm['lr_text']}"}
    final = run_dir(reference, ref) / "final"
    if not (final / "model.safetensors").is_file():
        raise SystemExit(f"{arm['name']} needs the arm {ref['name']} first")
    return final


def laco(model, keep: list[int], cut_from) -> None:
    """Merge each dropped slice into the kept block before it: theta_k += sum_j (theta_j - theta_k)."""
    source = blocks(cut_from)
    merged = blocks(model)
    for position, k in enumerate(keep):
        nxt = keep[position + 1] if position + 1 < len(keep) else num_layers(cut_from.config)
        dropped = range(k + 1, nxt)
        if not dropped:
            continue
        base = source[k].state_dict()
        state = {name: value.clone() for name, value in base.items()}
        for j in dropped:
            for name, value in source[j].state_dict().items():
                state[name] += value - base[name]
        merged[position].load_state_dict(state)


def build(arm: dict, reference, name: str, data: Path, by: str) -> tuple[torch.nn.Module, list[int], object]:
    """The arm's model, the reference blocks it holds and its teacher (None: cross-entropy)."""
    total = num_layers(reference.config)
    if arm["method"] == "ref":
        return inherit(reference, list(range(total))), list(range(total)), None
    corrected = load_model(trained_reference(name, arm, total)) if arm["method"] in ("kdc", "cutc", "cutc-kdc") else None
    source = corrected if arm["method"].startswith("cutc") else reference
    keep = select(source, arm["layers"], by, scoring_windows(data)).keep
    model = inherit(source, keep)
    if arm["method"] == "laco":
        laco(model, keep, reference)
    teacher = corrected if arm["method"].endswith("kdc") else None
    return model, keep, teacher


def run_arm(arm: dict, reference, name: str, tokenizer, data: Path, by: str, eval_every: int) -> dict:
    model, keep, teacher = build(arm, reference, name, data, by)
    total = num_layers(reference.config)
    config = TrainConfig(seq_len=512, batch_size=4, tokens_per_step=2048, tokens=arm["tokens"], lr=arm["lr"],
                         min_lr=1e-5, warmup_steps=6, eval_every=eval_every, progress=False,
                         distill_from=str(trained_reference(name, arm, total)) if teacher is not None else None,
                         teacher_states="top:64" if teacher is not None else "hidden",
                         lora=int(arm["method"][4:]) if arm["method"].startswith("lora") else 0,
                         train_blocks=f"last:{arm['method'][4:]}" if arm["method"].startswith("last") else "all")
    out = run_dir(name, arm)
    result = train(model, data, out, config, tokenizer=tokenizer, overwrite=True, teacher=teacher)
    per_token = json.loads((out / "config.json").read_text())["flops_per_token"]
    teacher_flops = 0.0
    if teacher is not None:
        ref_run = trained_reference(name, arm, total).parent
        correction = json.loads((ref_run / "config.json").read_text())["flops_per_token"] * arm["tokens"]
        teacher_flops = flops_per_token(teacher, 512) / 3 * arm["tokens"] + correction
    return arm | {"by": by if arm["method"] != "ref" else "-", "keep": keep,
                  "start_val_loss": result.val_history[0].val_loss, "val_loss": result.final_val_loss,
                  "wall_time": result.wall_time, "train_flops": per_token * arm["tokens"], "teacher_flops": teacher_flops,
                  "history": [[h.tokens, h.val_loss] for h in result.val_history],
                  "trainable": json.loads((out / "config.json").read_text())["trainable_parameters"],
                  "parameters": json.loads((out / "config.json").read_text())["parameters"],
                  "memory": result.memory.to_json() if result.memory else None}


def share(row: dict) -> str:
    """Trainable parameters: their count and share, and the bytes AdamW training holds for them (16 each)."""
    if "trainable" not in row or row["trainable"] == row["parameters"]:
        return "all"
    return f"{row['trainable'] / 1e6:.1f}M ({row['trainable'] / row['parameters']:.1%}; {16 * row['trainable'] / 2**20:.0f} MiB)"


def table(stored: dict) -> str:
    rows, ref_loss = stored["rows"], stored["reference_val_loss"]
    trained: dict[int, float] = {}  # per token count: the best reference trained on them (any method and lr)
    depth = max(r["layers"] for r in rows)
    for r in rows:
        if r["layers"] == depth:  # every block of the reference: `ref`, or its LoRA / last-K healing
            trained[r["tokens"]] = min(r["val_loss"], trained.get(r["tokens"], float("inf")))
    lines = ["| method | layers | blocks | tokens | lr | untrained | final | gap (as is) | gap (trained) | trained params "
             "| TFLOP | s |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["tokens"], -r["layers"], r["method"], r["lr"])):
        twin = trained.get(r["tokens"])
        gap = f"{r['val_loss'] - twin:+.3f}" if twin is not None else "-"
        lines.append(f"| {r['method']} | {r['layers']} | {spans(r['keep'])} | {r['tokens']:,} | {r['lr']:g} | "
                     f"{r['start_val_loss']:.3f} | {r['val_loss']:.3f} | {r['val_loss'] - ref_loss:+.3f} | {gap} | "
                     f"{share(r)} | "
                     f"{(r['train_flops'] + r['teacher_flops']) / 1e12:.0f} | {r['wall_time']:.0f} |")
    return "\n".join(lines)


def gap_curve(stored: dict, path: Path) -> str:
    """The gap along the longest runs: each cut method's val loss minus the reference's at every
    evaluation of runs of the same length (one cosine schedule each), plus the end of every shorter run."""
    rows = stored["rows"]
    longest = max((r["tokens"] for r in rows if len(r.get("history", [])) > 2), default=None)
    if longest is None:
        return ""
    ref = next((r for r in rows if r["method"] == "ref" and r["tokens"] == longest), None)
    cuts = [r for r in rows if r["method"] != "ref" and r["tokens"] == longest and len(r.get("history", [])) > 2]
    if ref is None or not cuts:
        return ""
    at = dict((tokens, loss) for tokens, loss in ref["history"])
    lines = [f"Along the {longest:,}-token runs (one schedule each; the ends of the shorter runs in the table above):\n",
             "| tokens | reference trained | " + " | ".join(f"{c['method']} {c['layers']}L (gap)" for c in cuts) + " |",
             "|---|---|" + "---|" * len(cuts)]
    series = {}
    for c in cuts:
        points = [(tokens, loss - at[tokens]) for tokens, loss in c["history"] if tokens in at and tokens > 0]
        series[f"{c['method']} {c['layers']} layers"] = ([x for x, _ in points], [y for _, y in points])
    for tokens, loss in ref["history"]:
        if tokens == 0:
            continue
        cells = [f"{dict(c['history']).get(tokens, float('nan')):.3f} ({dict(c['history']).get(tokens, float('nan')) - loss:+.3f})"
                 for c in cuts]
        lines.append(f"| {tokens:,} | {loss:.3f} | " + " | ".join(cells) + " |")
    curves(series, path, title="gap to the reference trained on the same tokens", xlabel="training tokens",
           ylabel="val loss gap (nats)")
    return "\n".join(lines) + f"\n\n![gap vs tokens]({path.name})\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default="smollm2-135m")
    parser.add_argument("--by", default="angular", help="the block selector of the cut arms")
    parser.add_argument("--arms", nargs="+", required=True)
    parser.add_argument("--data-tokens", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-every", type=int, default=10_000, help="steps between evaluations (the curve)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer, reference = load_tokenizer(args.reference), load_model(args.reference)
    data = data_folder(args.reference, tokenizer, args.data_tokens)
    path = RESULTS / f"honest_gap_{args.reference}.json"
    stored = json.loads(path.read_text()) if path.is_file() else {}
    if "reference_val_loss" not in stored:
        stored = {"reference": args.reference, "split_seed": 1, "data_tokens": args.data_tokens, "rows": [],
                  "reference_val_loss": val_loss(reference, open_data(data))["loss"]}
    for spec in args.arms:
        arm = parse_arm(spec)
        if any(r["name"] == spec for r in stored["rows"]):
            continue
        start = time.perf_counter()
        row = run_arm(arm, reference, args.reference, tokenizer, data, args.by, args.eval_every)
        stored["rows"].append(row | {"seconds": round(time.perf_counter() - start, 1)})
        path.write_text(json.dumps(stored, indent=1) + "\n")
        print(f"{spec}: {row['start_val_loss']:.3f} -> {row['val_loss']:.3f} in {row['wall_time']:.0f} s", flush=True)
    text = (f"{args.reference}: the honest gap on the development split (split seed 1, {args.data_tokens:,} train "
            f"tokens, the 8,192-token val split); val loss of the reference as it is {stored['reference_val_loss']:.3f}; "
            f"gap (trained) = final minus the best reference trained on the same tokens (every block kept: `ref`, "
            "or the reference healed by LoRA; over the lrs run); "
            f"TFLOP = training FLOPs, the teacher's forward passes and correction included; s = training seconds "
            f"(benchmarks/honest_gap.py).\n\n{table(stored)}\n\n"
            f"{gap_curve(stored, RESULTS / f'honest_gap_{args.reference}.png')}")
    (RESULTS / f"honest_gap_{args.reference}.md").write_text(text)
    print(text, flush=True)


if __name__ == "__main__":
    sys.exit(main())
