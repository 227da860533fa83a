"""Training throughput: inheritune's trainer vs Hugging Face's Trainer vs a minimal PyTorch loop.

The model is the 15-layer SmolLM2-135M derivative (the recipe's first step), trained at
seq_len 512, micro-batch 4, with the same optimizer (fused AdamW, betas 0.9/0.95, wd 0.1,
clip 1.0) and precision in every arm. Arms alternate in rounds within one process so that
machine noise hits them alike; the first step of every arm in every round is warm-up and not
timed. MFU = FLOPs per token (6N + 12 L d T) x tokens/s against a square-matmul peak measured
here in bf16 and fp32.

    .venv/bin/python benchmarks/bench_train.py [--precision bf16 fp32] [--steps 3] [--rounds 2]

Writes benchmarks/results/train.json. Other processes on the machine skew the numbers: the
load average before and after is recorded alongside.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from inheritune.data.shards import FORMAT, MANIFEST, dtype_for_vocab, open_data
from inheritune.models.loading import load_tokenizer, tokenizer_fingerprint
from inheritune.models.surgery import inherit
from inheritune.commands.train import train
from inheritune.training.flops import flops_per_token, matmul_peak

RESULTS = Path(__file__).parent / "results" / "train.json"
SEQ, BATCH = 512, 4


def make_data(root: Path, tokenizer, n_tokens: int = 400_000) -> Path:
    """Random token ids in the shared data format: throughput does not depend on the text."""
    rng = np.random.default_rng(0)
    dtype = dtype_for_vocab(len(tokenizer))
    splits = {}
    for split, n in (("train", n_tokens), ("val", 4 * SEQ)):
        rng.integers(0, len(tokenizer), n, dtype=np.int64).astype(dtype).tofile(root / f"{split}.bin")
        splits[split] = {"shards": [f"{split}.bin"], "shard_tokens": [n], "tokens": n, "documents": 1}
    manifest = {"format": FORMAT, "dtype": dtype.name, "seed": 0, "sources": ["random"], "splits": splits,
                "tokenizer": {"name": "smollm2", "fingerprint": tokenizer_fingerprint(tokenizer),
                              "vocab_size": len(tokenizer), "eos_token_id": tokenizer.eos_token_id}}
    (root / MANIFEST).write_text(json.dumps(manifest))
    return root


def windows(data: Path, n: int, seed: int) -> torch.Tensor:
    tokens = open_data(data).shards("train")[0]
    starts = np.random.default_rng(seed).integers(0, len(tokens) - SEQ - 1, n)
    return torch.from_numpy(np.stack([tokens[s:s + SEQ + 1] for s in starts]).astype(np.int64))


def arm_trainer(model, data: Path, tokenizer, precision: str, steps: int, peak: float, work: Path) -> list[float]:
    """inheritune.train: seconds per step from its own log (which excludes evaluation and checkpoints)."""
    run = work / "run"
    train(model, data, run, tokenizer=tokenizer, steps=steps + 1, seq_len=SEQ, batch_size=BATCH, precision=precision,
          eval_every=10_000, peak_flops=peak, progress=False, overwrite=True)
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [SEQ * BATCH / r["tokens_per_s"] for r in rows if r["step"] >= 2]


def arm_hf(model, data: Path, tokenizer, precision: str, steps: int, peak: float, work: Path) -> list[float]:
    """transformers.Trainer with the same batch, optimizer, schedule shape and precision."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    batch = windows(data, (steps + 1) * BATCH, seed=1)[:, :SEQ]

    class Windows(torch.utils.data.Dataset):
        def __len__(self):
            return len(batch)

        def __getitem__(self, i):
            return {"input_ids": batch[i], "labels": batch[i]}

    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.start)

    args = TrainingArguments(
        output_dir=str(work / "hf"), per_device_train_batch_size=BATCH, max_steps=steps + 1, learning_rate=2e-4,
        weight_decay=0.1, adam_beta1=0.9, adam_beta2=0.95, max_grad_norm=1.0, lr_scheduler_type="cosine",
        bf16=precision == "bf16", use_cpu=not torch.cuda.is_available(), optim="adamw_torch_fused", report_to=[],
        save_strategy="no", logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0, seed=0,
    )
    Trainer(model=model, args=args, train_dataset=Windows(), callbacks=[Clock()]).train()
    return times[1:]


def arm_plain(model, data: Path, tokenizer, precision: str, steps: int, peak: float, work: Path) -> list[float]:
    """The shortest honest loop: autocast forward, fp32 cross-entropy on the logits, clip, fused AdamW."""
    device = next(model.parameters()).device
    model.train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=2e-4, betas=(0.9, 0.95), fused=True)
    batch = windows(data, (steps + 1) * BATCH, seed=2).to(device)
    ctx = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    times = []
    for i in range(steps + 1):
        x = batch[i * BATCH:(i + 1) * BATCH]
        start = time.perf_counter()
        with ctx:
            logits = model(input_ids=x[:, :-1]).logits
        loss = F.cross_entropy(logits.flatten(0, 1).float(), x[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        times.append(time.perf_counter() - start)
    return times[1:]


ARMS = {"inheritune": arm_trainer, "hf_trainer": arm_hf, "plain_loop": arm_plain}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", nargs="+", default=["bf16"], choices=["bf16", "fp32"])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per arm per round (plus one warm-up)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--layers", type=int, default=15)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    load_before = os.getloadavg()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    peaks = {name: matmul_peak(device, dtype, seconds=2.0) for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32))}
    print(f"matmul peak: bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s, fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s "
          f"({torch.get_num_threads()} threads, load {load_before[0]:.2f})", flush=True)
    tokenizer = load_tokenizer("smollm2-135m")
    base = inherit("smollm2-135m", args.layers).to(device)
    fpt = flops_per_token(base, SEQ)
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = make_data(Path(tmp), tokenizer)
        for precision in args.precision:
            times: dict[str, list[float]] = {arm: [] for arm in ARMS}
            for r in range(args.rounds):
                for arm, fn in ARMS.items():
                    torch.manual_seed(0)
                    with tempfile.TemporaryDirectory(dir=tmp) as work:
                        times[arm] += fn(copy.deepcopy(base), data, tokenizer, precision, args.steps,
                                         peaks[precision], Path(work))
                    tok_s = SEQ * BATCH / statistics.median(times[arm][-args.steps:])
                    print(f"[{precision} round {r + 1}] {arm:11s} {tok_s:7.1f} tok/s", flush=True)
            summary = {}
            for arm, ts in times.items():
                tok_s = SEQ * BATCH / statistics.median(ts)
                summary[arm] = {"tokens_per_s": tok_s, "step_s_median": statistics.median(ts), "step_s": ts,
                                "mfu_vs_bf16_peak": fpt * tok_s / peaks["bf16"],
                                "mfu_vs_fp32_peak": fpt * tok_s / peaks["fp32"]}
            ours = summary["inheritune"]["tokens_per_s"]
            summary["ratio_vs_hf_trainer"] = ours / summary["hf_trainer"]["tokens_per_s"]
            summary["ratio_vs_plain_loop"] = ours / summary["plain_loop"]["tokens_per_s"]
            results[precision] = summary
            print(f"{precision}: inheritune {ours:.1f} tok/s = {summary['ratio_vs_hf_trainer']:.2f}x HF Trainer, "
                  f"{summary['ratio_vs_plain_loop']:.2f}x plain loop; MFU {summary['inheritune']['mfu_vs_bf16_peak']:.1%} "
                  f"of the bf16 peak, {summary['inheritune']['mfu_vs_fp32_peak']:.1%} of the fp32 peak", flush=True)
    report = {
        "model": f"inherit('smollm2-135m', {args.layers})", "seq_len": SEQ, "batch_size": BATCH,
        "flops_per_token": fpt, "matmul_peak_flops": peaks, "device": str(device), "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "steps_per_round": args.steps,
        "rounds": args.rounds, "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    sys.exit(main())
