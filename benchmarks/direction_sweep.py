"""Grow or shrink: which direction reaches a depth with the lower val loss for the same tokens, on the
development split (never the reported one).

Three ways to a ``--depth``-layer model of the packaged reference, each trained with the same total
tokens by distillation from the reference (the heal sweep's settings: 512-token windows, 2,048
tokens per step, 6 warmup steps, cosine to 1e-5 each round):

- ``one-shot``: the selector's blocks at the final depth, healed once on all the tokens;
- ``grow``: start ``--steps`` x ``--step`` layers below and add ``--step`` blocks a round (the
  selector's next ranked ones, at their places), the tokens split evenly over the rounds;
- ``shrink``: start ``--steps`` x ``--step`` layers above and drop ``--step`` blocks a round, re-scored
  on the healed model (IteRABRe / iterative Minitron), the tokens split the same way.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/direction_sweep.py --reference smollm2-135m --depth 24 \\
        --by angular --tokens 40960 --step 3 --steps 1

Writes benchmarks/results/direction_sweep_REFERENCE.{json,md}; each way is kept once measured, so
a rerun measures only what is missing.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from inheritune.data.shards import open_data
from inheritune.evaluation.val_loss import val_loss
from inheritune.growth.grow_config import GrowConfig
from inheritune.growth.rounds import grow_until_matched
from inheritune.models.loading import load_model, load_tokenizer
from inheritune.models.surgery import spans
from inheritune.training import TrainConfig

sys.path.insert(0, str(Path(__file__).parent))
from selection_sweep import ROOT, RESULTS, data_folder  # noqa: E402  (the same development split)


def growth_of(way: str, depth: int, step: int, steps: int, tokens: int) -> GrowConfig:
    rounds = 1 if way == "one-shot" else steps + 1
    per_round = tokens // rounds
    if way == "grow":
        return GrowConfig(start_layers=depth - steps * step, step_layers=step, max_layers=depth,
                          tokens_per_round=per_round, margin=-100.0)  # never matched early: every round runs
    if way == "shrink":
        return GrowConfig(start_layers=depth + steps * step, step_layers=step, min_layers=depth,
                          tokens_per_round=per_round, margin=100.0, direction="shrink")  # always within: down to depth
    return GrowConfig(start_layers=depth, step_layers=step, max_layers=depth, tokens_per_round=per_round, margin=-100.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default="smollm2-135m")
    parser.add_argument("--depth", type=int, default=24)
    parser.add_argument("--by", default="angular")
    parser.add_argument("--tokens", type=int, default=40960, help="total training tokens of each way")
    parser.add_argument("--step", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1, help="rounds before the last one")
    parser.add_argument("--teacher-states", default="top:64")
    parser.add_argument("--lr", type=float, default=3e-4)
    args = parser.parse_args()
    torch.set_num_threads(2)
    tokenizer, reference = load_tokenizer(args.reference), load_model(args.reference)
    data = data_folder(args.reference, tokenizer, 1)
    path = RESULTS / f"direction_sweep_{args.reference}.json"
    stored = json.loads(path.read_text()) if path.is_file() else {"rows": {}}
    stored.setdefault("reference_val_loss", val_loss(reference, open_data(data))["loss"])
    config = TrainConfig(seq_len=512, batch_size=4, tokens_per_step=2048, lr=args.lr, min_lr=1e-5, warmup_steps=6,
                         eval_every=10_000, distill_from="reference", teacher_states=args.teacher_states,
                         progress=False)
    for way in ("one-shot", "grow", "shrink"):
        key = f"{way}:{args.by}:{args.depth}:{args.tokens}:{args.step}x{args.steps}:{args.teacher_states}"
        if key in stored["rows"]:
            continue
        growth = growth_of(way, args.depth, args.step, args.steps, args.tokens)
        result = grow_until_matched(args.reference, data, ROOT / "runs" / "direction" / key.replace(":", "_"), growth,
                                    config, by=args.by, overwrite=True, reference_model=reference, tokenizer=tokenizer,
                                    log=lambda m: print(m, flush=True))
        final = next(r for r in result.rounds if r["layers"] == args.depth)
        stored["rows"][key] = {"way": way, "rounds": [{k: r[k] for k in ("layers", "tokens", "start_val_loss", "val_loss",
                                                                          "wall_time", "blocks")} for r in result.rounds],
                               "tokens": sum(r["tokens"] for r in result.rounds), "val_loss": final["val_loss"],
                               "blocks": final["blocks"], "wall_time": sum(r["wall_time"] for r in result.rounds)}
        path.write_text(json.dumps(stored, indent=1) + "\n")
    ref = stored["reference_val_loss"]
    lines = [f"{args.reference}: three ways to {args.depth} layers on the development split (reference val loss "
             f"{ref:.3f}); distillation ({args.teacher_states}), lr {args.lr:g}.", "",
             "| way | selector | rounds (layers: tokens -> val loss) | tokens | final blocks | val loss | gap | s |",
             "|---|---|---|---|---|---|---|---|"]
    for key, row in stored["rows"].items():
        rounds = ", ".join(f"{r['layers']}: {r['tokens']:,} -> {r['val_loss']:.3f}" for r in row["rounds"])
        lines.append(f"| {row['way']} | {key.split(':')[1]} | {rounds} | {row['tokens']:,} | {spans(row['blocks'])} | "
                     f"{row['val_loss']:.3f} | {row['val_loss'] - ref:+.3f} | {row['wall_time']:.0f} |")
    (RESULTS / f"direction_sweep_{args.reference}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
