"""Depth vs width vs both at one parameter budget: cut the packaged reference to about the same
number of non-embedding parameters by dropping blocks, by cutting heads and FFN neurons out of
every block, or by both; measure size and speed, then heal every arm on the same tokens.

Per arm: non-embedding parameters, safetensors bytes, forward and training-step tokens/s (batch
4 x 512, fp32, the reference and the masked reference beside them), val loss untrained and after
healing (the product's trainer, same loss, lr, tokens and windows for every arm). The width arms'
units are ranked by activation (Minitron) and by gradient importance; the ranking whose cut has
the lower loss on the train-split scoring windows is healed (both are reported untrained on val). Everything on the development split (split seed 1).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/width_vs_depth.py --reference smollm2-135m --tokens 40960

Writes benchmarks/results/width_vs_depth_REFERENCE_TOKENS.{json,md}. The tokens/s columns are one
short measurement each (noisy here); benchmarks/bench_width.py measures speed carefully.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from inheritune.analysis.selection import scoring_windows
from inheritune.analysis.unit_importance import evaluate, lm_examples
from inheritune.analysis.width_ranking import RANKINGS, masked, unit_scores
from inheritune.data.shards import open_data
from inheritune.evaluation.val_loss import val_loss
from inheritune.models.loading import load_model, load_tokenizer
from inheritune.models.budget import cut_within
from inheritune.models.families import blocks, num_layers
from inheritune.models.surgery import inherit, spans
from inheritune.models.width_cut import cut, geometry, plan
from inheritune.commands.train import train
from inheritune.training import TrainConfig

sys.path.insert(0, str(Path(__file__).parent))
from selection_sweep import ROOT, RESULTS, data_folder  # noqa: E402  (the same development split)
from bench_width import disk_bytes, non_embedding  # noqa: E402

BATCH, SEQ = 4, 512


def speed(model, repeats: int = 3) -> dict:
    """Tokens/s of a forward pass (no grad) and of a training step (forward, backward, AdamW)."""
    ids = torch.randint(0, model.config.vocab_size, (BATCH, SEQ), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model(input_ids=ids, use_cache=False)  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            model(input_ids=ids, use_cache=False)
        forward = BATCH * SEQ * repeats / (time.perf_counter() - start)
    trainable = [p for p in model.parameters()]
    optimizer = torch.optim.AdamW(trainable, lr=0.0)  # lr 0: the timing does not change the weights
    model.train()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    model.eval()
    return {"forward_tok_s": forward, "train_tok_s": BATCH * SEQ / min(times[1:] or times)}


def best_width(model, windows, token_data, heads_pct: float, ffn_pct: float):
    """The cut by each ranking; the one whose masked model has the lower loss on the train-split
    ``windows`` is kept (chosen off the val split). Returns (cut model, ranking, plan, {ranking:
    untrained val loss})."""
    plans, on_train, on_val = {}, {}, {}
    for by in RANKINGS:
        plans[by] = plan(model.config, *unit_scores(model, windows, by), heads_pct, ffn_pct, "query")
        with masked(model, plans[by]):
            on_train[by] = evaluate(model, lm_examples(windows))["loss"]
            on_val[by] = val_loss(model, token_data)["loss"]
    best = min(on_train, key=on_train.get)
    return cut(model, plans[best]), best, plans[best], on_val


def arms_for(reference, name: str, windows, data, share: float) -> dict:
    """name -> a builder of (model, description, plan or None, {ranking: untrained val loss}); arms are
    built only when run."""
    sweep = json.loads((RESULTS / f"selection_sweep_{name}.json").read_text())["frontier"]
    token_data = open_data(data)

    def depth():
        keep = sweep["loss-greedy"]["20"]["keep"]
        return inherit(reference, keep), f"blocks {spans(keep)}", None, {}

    def width(heads_pct: float, ffn_pct: float, base=reference, prefix: str = ""):
        model, best, chosen, untrained = best_width(base, windows, token_data, heads_pct, ffn_pct)
        return model, f"{prefix}ranked by {best}", chosen, untrained

    def both_fixed():
        keep = sweep["angular"]["24"]["keep"]
        return width(100 / 3, 14, inherit(reference, keep), f"blocks {spans(keep)}, ")

    def both_budget():  # the product's --budget-by both: blocks to about sqrt(share), then FFN neurons
        cut = cut_within(reference.config, share, "both")
        keep = sweep["angular"][str(num_layers(reference.config) - cut.drop_layers)]["keep"]
        return width(0, cut.ffn_percent, inherit(reference, keep), f"blocks {spans(keep)}, FFN -{cut.ffn_percent:.1f}%, ")

    return {"depth: 20 of 30 blocks (loss-greedy)": depth,
            "width: FFN 1536 -> 860": lambda: width(0, 44),
            "width: heads 9 -> 6, FFN 1536 -> 983": lambda: width(100 / 3, 36),
            "both: 24 blocks (angular), heads 9 -> 6, FFN 1536 -> 1321": both_fixed,
            f"both (--params {share:g} --budget-by both): angular blocks, then FFN neurons": both_budget}


def heal(model, data: Path, tokenizer, tokens: int, lr: float, out: Path, teacher=None, name: str = "") -> dict:
    """The product's trainer on the arm: cross-entropy, or with ``teacher`` distillation from it
    (alpha 1, T 1, its hidden states cached: the exact KD of `train --distill-from`)."""
    kd = {"distill_from": name, "distill_alpha": 1.0} if teacher is not None else {}
    config = TrainConfig(seq_len=SEQ, batch_size=BATCH, tokens_per_step=BATCH * SEQ, tokens=tokens, lr=lr, min_lr=1e-5,
                         warmup_steps=6, eval_every=10_000, progress=False, **kd)
    result = train(model, data, out, config, tokenizer=tokenizer, overwrite=True, teacher=teacher)
    return {"untrained": result.val_history[0].val_loss, "healed": result.final_val_loss,
            "train_seconds": result.wall_time}


def table(stored: dict) -> str:
    ref = stored["reference"]
    lines = ["| arm | non-embedding params | share | safetensors MB | forward tok/s | train tok/s | untrained (activation / gradient) | healed | gap |",
             "|---|---|---|---|---|---|---|---|---|"]
    base = ref["non_embedding"]
    for name, r in stored["rows"].items():
        ranks = " / ".join(f"{r['rankings'][k]:.3f}" for k in ("activation", "gradient") if k in r["rankings"])
        healed = f"{r['healed']:.3f} | {r['healed'] - ref['val_loss']:+.3f}" if "healed" in r else "- | -"
        lines.append(f"| {name} ({r['detail']}) | {r['non_embedding']:,} | {r['non_embedding'] / base:.2f} | "
                     f"{r['disk'] / 1e6:.0f} | {r['forward_tok_s']:.0f} ({r['forward_tok_s'] / ref['forward_tok_s']:.2f}x) | "
                     f"{r['train_tok_s']:.0f} ({r['train_tok_s'] / ref['train_tok_s']:.2f}x) | "
                     f"{r['untrained']:.3f}{' (' + ranks + ')' if ranks else ''} | {healed} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default="smollm2-135m")
    parser.add_argument("--tokens", type=int, default=40960)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--split-seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--arms", default="", help="comma-separated arm numbers to run (0 depth, 1-2 width, 3-4 both; "
                                                   "default: all); rows already in the results file are kept")
    parser.add_argument("--loss", choices=("ce", "kd"), default="ce", help="healing loss (kd: from the reference)")
    parser.add_argument("--share", type=float, default=0.67, help="arm 4's budget: share of the non-embedding parameters")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer, reference = load_tokenizer(args.reference), load_model(args.reference)
    data = data_folder(args.reference, tokenizer, args.split_seed)
    token_data = open_data(data)
    windows = scoring_windows(data)
    stem = f"width_vs_depth_{args.reference}_{args.tokens}"
    path = RESULTS / f"{stem}.json"
    settings = {"split_seed": args.split_seed, "tokens": args.tokens, "lr": args.lr}
    stored = json.loads(path.read_text()) if path.is_file() else {}
    if any(stored.get(k) != v for k, v in settings.items()):  # another setting: start the table over
        stored = {}
    if "reference" not in stored:
        stored = {"reference": {"non_embedding": non_embedding(reference), "disk": disk_bytes(reference),
                                "val_loss": val_loss(reference, token_data)["loss"], **speed(reference)},
                  **settings, "rows": {}}
    ref = stored["reference"]
    print(f"reference: {ref}", flush=True)
    arms = arms_for(reference, args.reference, windows, data, args.share)
    chosen = {int(a) for a in args.arms.split(",")} if args.arms else set(range(len(arms)))
    for index, (name, build) in enumerate(arms.items()):
        if index not in chosen:
            continue
        model, detail, width_plan, rankings = build()
        if "masked_reference" not in stored and width_plan is not None:
            with masked(reference, width_plan):
                stored["masked_reference"] = speed(reference)  # what masks cost: the reference's size and time
        row = {"detail": detail, "non_embedding": non_embedding(model), "disk": disk_bytes(model),
               "geometry": dict(zip(("heads", "kv_heads", "head_width", "ffn_neurons"), geometry(model.config))),
               "layers": len(blocks(model)),
               "rankings": rankings, "untrained": val_loss(model, token_data)["loss"], **speed(model)}
        kd = args.loss == "kd"
        row |= heal(model, data, tokenizer, args.tokens, args.lr, ROOT / "runs" / "width" / f"{stem}-{index}{'-kd' * kd}",
                    teacher=reference if kd else None, name=args.reference)
        name = f"{name}, healed by distillation" if kd else name
        stored["rows"][name] = row
        path.write_text(json.dumps(stored, indent=1) + "\n")
        print(f"{name}: {row['untrained']:.3f} -> {row['healed']:.3f}, train {row['train_tok_s']:.0f} tok/s", flush=True)
    masked_speed = stored.get("masked_reference", {"forward_tok_s": float("nan"), "train_tok_s": float("nan")})
    text = (f"{args.reference}: one parameter budget (about 2/3 of the reference's non-embedding parameters) by "
            f"depth, width and both, development split (split seed {args.split_seed}); reference val loss "
            f"{ref['val_loss']:.3f}, {ref['non_embedding']:,} non-embedding parameters, {ref['disk'] / 1e6:.0f} MB, "
            f"forward {ref['forward_tok_s']:.0f} tok/s, training step {ref['train_tok_s']:.0f} tok/s (batch {BATCH} x "
            f"{SEQ}, fp32); the masked reference (zeroed units, hooks): forward {masked_speed['forward_tok_s']:.0f}, "
            f"training {masked_speed['train_tok_s']:.0f} tok/s, {ref['disk'] / 1e6:.0f} MB. Healed: cross-entropy (rows marked 'healed by distillation': KD from the reference, alpha 1, T 1), "
            f"{args.tokens:,} tokens, lr {args.lr:g}, 2,048 tokens per step, 6 warmup steps, cosine to 1e-5.\n\n"
            f"{table(stored)}\n")
    (RESULTS / f"{stem}.md").write_text(text)
    print(text, flush=True)


if __name__ == "__main__":
    sys.exit(main())
