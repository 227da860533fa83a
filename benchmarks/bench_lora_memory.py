"""What healing holds in memory: full fine-tuning vs LoRA ranks vs the last K blocks, measured.

Each method trains the default's 24-layer SmolLM2 cut for 2 steps of 4 x 512 tokens in its own process
(so the peak resident set is its own), through the product's trainer, which reads the bytes of the
weights, gradients and AdamW state off the tensors (``TrainResult.memory``). Then the bytes per
parameter it measured size an 8B reference (Llama-3-8B's shapes) on one 80 GB GPU.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_lora_memory.py

Writes benchmarks/results/lora_memory.{json,md}. The losses of the same methods at equal tokens are
the honest-gap sweep's rows (benchmarks/honest_gap.py, arms loraR and lastK).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parents[1]
KEEP = [*range(13), *range(19, 30)]  # the default run's 24 blocks (angular, dev split)
METHODS = {"full": {}, "lora4": {"lora": 4}, "lora16": {"lora": 16}, "lora64": {"lora": 64},
           "last6": {"train_blocks": "last:6"}}
# Llama-3-8B: hidden 4096, 32 layers, 32 heads of 128, 8 KV heads, FFN 14336, vocab 128256, untied head
LLAMA_8B = {"hidden": 4096, "layers": 32, "q": 4096, "kv": 1024, "ffn": 14336, "vocab": 128256}


def one(method: str, out: Path) -> dict:
    """Runs in its own process: the method's 2 steps, and what the trainer measured."""
    import torch

    from inheritune.commands.train import train
    from inheritune.models.loading import load_model, load_tokenizer
    from inheritune.models.surgery import inherit

    torch.set_num_threads(2)
    sys.path.insert(0, str(Path(__file__).parent))
    from honest_gap import data_folder

    tokenizer = load_tokenizer("smollm2-135m")
    model = inherit(load_model("smollm2-135m"), KEEP)
    data = data_folder("smollm2-135m", tokenizer, 1_000_000)
    result = train(model, data, out, steps=2, seq_len=512, batch_size=4, lr=1e-4, eval_every=1000,
                   progress=False, tokenizer=tokenizer, **METHODS[method])
    parameters = sum(p.numel() for p in model.parameters())
    return {"method": method, "parameters": parameters, "tokens_per_s": result.tokens / result.wall_time,
            **result.memory.to_json()}


def linear_shapes(g: dict) -> list[tuple[int, int]]:
    """(in, out) of every linear layer in a block of the 8B geometry."""
    h = g["hidden"]
    return [(h, g["q"]), (h, g["kv"]), (h, g["kv"]), (g["q"], h), (h, g["ffn"]), (h, g["ffn"]), (g["ffn"], h)]


def eight_b(rows: list[dict]) -> list[str]:
    g = LLAMA_8B
    block = sum(i * o for i, o in linear_shapes(g)) + 2 * g["hidden"]
    total = g["layers"] * block + 2 * g["vocab"] * g["hidden"] + g["hidden"]
    full = next(r for r in rows if r["method"] == "full")
    weight_per = full["weight_bytes"] / full["parameters"]
    train_per = full["training_bytes"] / full["trainable_parameters"]  # gradients + AdamW, per trainable parameter
    lines = [f"An 8B reference (Llama-3-8B shapes, {total / 1e9:.2f}B parameters) at the measured bytes: weights "
             f"{weight_per:.0f} B/parameter (fp32), gradients + AdamW {train_per:.2f} B per trainable parameter "
             "(activations not included: they grow with the batch, and checkpointing trades them for time).", "",
             "| method | trainable | weights GB | gradients + optimizer GB | total GB | fits one 80 GB GPU |",
             "|---|---|---|---|---|---|"]
    for method, trainable in (("full fine-tuning", total),
                              *((f"LoRA rank {r}", r * g["layers"] * sum(i + o for i, o in linear_shapes(g)))
                                for r in (4, 16, 64)),
                              ("last 8 of 32 blocks", 8 * block)):
        weights, state = total * weight_per / 1e9, trainable * train_per / 1e9
        lines.append(f"| {method} | {trainable / 1e6:,.0f}M | {weights:.1f} | {state:.1f} | {weights + state:.1f} | "
                     f"{'yes' if weights + state < 80 else 'no'} |")
    rank16 = 16 * g["layers"] * sum(i + o for i, o in linear_shapes(g))
    lines += ["", "With the frozen weights in bf16 (half the bytes; the trainer keeps fp32 today), LoRA's total "
              f"drops to about {(total * 2 + rank16 * train_per) / 1e9:.0f} GB at rank 16."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.out)))
        return
    rows = []
    for method in METHODS:
        with tempfile.TemporaryDirectory(dir=ROOT / "runs") as tmp:
            r = subprocess.run([sys.executable, __file__, "--one", method, "--out", str(Path(tmp) / "run")],
                               capture_output=True, text=True, check=True)
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
        rows[-1]["training_bytes"] = rows[-1]["gradient_bytes"] + rows[-1]["optimizer_bytes"]
        print(json.dumps(rows[-1]), flush=True)
    full = rows[0]
    mib = 2**20
    lines = ["SmolLM2-135M (instruction-tuned, 4-bit reference, dequantized), the default's 24-layer cut, 2 steps of "
             "4 x 512 tokens, fp32 weights, AdamW; bytes read off the tensors by the trainer; peak = the process's "
             "peak resident set (benchmarks/bench_lora_memory.py).", "",
             "| method | trainable | weights MiB | gradients MiB | AdamW MiB | gradients + AdamW | vs full "
             "| peak RSS MiB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        share = r["trainable_parameters"] / r["parameters"]
        lines.append(f"| {r['method']} | {r['trainable_parameters'] / 1e6:.2f}M ({share:.1%}) "
                     f"| {r['weight_bytes'] / mib:.0f} | {r['gradient_bytes'] / mib:.1f} | "
                     f"{r['optimizer_bytes'] / mib:.1f} | {r['training_bytes'] / mib:.1f} MiB | "
                     f"{r['training_bytes'] / full['training_bytes']:.1%} | "
                     f"{r['peak_bytes'] / mib:.0f} |")
    text = "\n".join([*lines, "", *eight_b(rows)]) + "\n"
    (RESULTS / "lora_memory.json").write_text(json.dumps({"rows": rows, "llama_8b": LLAMA_8B}, indent=1) + "\n")
    (RESULTS / "lora_memory.md").write_text(text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
