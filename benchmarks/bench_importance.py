"""Time of head + FFN importance against one forward+backward pass over the same tokens.

Issue 12's target: importance of the packaged SmolLM2-135M on 32 x 256 LM windows in at most 5x
the time of one forward+backward over the same tokens. The model is loaded once; then, on the
same windows and in the batches the memory budget gives head importance:

- ``forward+backward``: a training step's work, mean next-token loss, ``backward()`` into every
  weight (no optimizer step);
- ``head importance``: ``analysis.unit_importance.head_importance`` (one backward per batch, one mask
  row per example, no weight gradients);
- ``FFN knock-outs``: ``analysis.unit_importance.ffn_importance`` (one branching pass per example);
- ``before`` (extrapolated): the unbatched method this replaced, one backward per example and one
  forward per layer per example, timed on ``--before-windows`` windows and scaled to all of them;
  its scores are checked against the batched ones on those windows.

Each batched measurement is the median of ``--repeats`` runs. Writes
benchmarks/results/bench_importance.{json,md}. The text is the packaged OpenWebText sample (the
``evals`` package's schelling_point/owt_5.jsonl), as in bench_analyze.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_importance.py [--windows 32] [--seq-len 256]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import inheritune
from inheritune.analysis import unit_importance as imp
from inheritune.analysis.hooks import ffn_knockout, head_mask
from inheritune.analysis.sampling import sequences_from
from inheritune.atomic import atomic_write_json, atomic_write_text
from inheritune.models.families import blocks, num_heads, num_layers

from bench_analyze import owt_text  # the same packaged text (benchmarks run as scripts from this folder)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
TARGET = 5.0


def timed(fn, what: str) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - start
    print(f"{what}: {seconds:.1f}s", flush=True)
    return seconds, value


def arithmetic(model) -> dict:
    """Multiply-adds per token of each step, in units of one training step's (forward + backward
    into activations and weights = 3 forwards): what the exact method costs before any overhead.

    A forward is L blocks plus the LM head. Head importance is a forward and a backward into
    activations only (2 forwards). The knock-outs are the intact row plus, for each layer l, a
    row that runs blocks l..L-1 and the LM head: L(L+1)/2 blocks and L heads more. Weights only:
    attention scores add a few percent at 256 tokens.
    """
    layers = num_layers(model.config)
    block = sum(p.numel() for p in blocks(model)[0].parameters() if p.dim() == 2)
    head = model.get_output_embeddings().weight.numel()
    forward = layers * block + head
    knockouts = forward + block * layers * (layers + 1) // 2 + layers * head
    step = 3 * forward
    return {"heads": round(2 * forward / step, 2), "ffn": round(knockouts / step, 2),
            "importance": round((2 * forward + knockouts) / step, 2), "head_share_of_forward": round(head / forward, 3)}


def forward_backward(model, windows: torch.Tensor) -> None:
    """A training step's forward and backward (weight gradients included), in the same batches."""
    model.zero_grad(set_to_none=True)
    rows = max(1, imp.batch_tokens(model, imp.lm_examples(windows), backward=True) // windows.shape[1])
    for i in range(0, len(windows), rows):
        batch = windows[i:i + rows]
        logits = model(input_ids=batch, use_cache=False).logits
        F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), batch[:, 1:].flatten()).backward()
    model.zero_grad(set_to_none=True)


def unbatched(model, examples: list[imp.Example]) -> tuple[np.ndarray, np.ndarray]:
    """The replaced method: one backward per example, one forward per layer per example."""
    def loss(ex):
        logits = model(input_ids=ex.ids[None], use_cache=False).logits[0].float()
        return F.cross_entropy(logits[ex.start - 1:-1], ex.ids[ex.start:])

    mask = torch.ones(num_layers(model.config), num_heads(model.config), requires_grad=True)
    with imp.frozen_weights(model), head_mask(model, mask):
        heads = torch.stack([torch.autograd.grad(loss(ex), mask)[0].abs() for ex in examples]).mean(0)
    with torch.no_grad():
        base = np.mean([loss(ex).item() for ex in examples])
        ffn = []
        for layer in range(num_layers(model.config)):
            with ffn_knockout(model, [layer]):
                ffn.append(np.mean([loss(ex).item() for ex in examples]) - base)
    return heads.numpy(), np.asarray(ffn)


def markdown(r: dict) -> str:
    s, a = r["seconds"], r["arithmetic"]
    return "\n".join([
        f"# importance speed: {r['model']}, {r['windows']} x {r['seq_len']} LM windows",
        "",
        f"{r['threads']} threads, median of {r['repeats']} runs ({r['date']}).",
        "",
        "| step | seconds | x forward+backward |",
        "|---|---|---|",
        f"| forward+backward (training step, weight gradients) | {s['forward_backward']:.1f} | 1.00 |",
        f"| head importance (batched per-example mask gradients) | {s['heads']:.1f} | {s['heads'] / s['forward_backward']:.2f} |",
        f"| FFN knock-outs (branching pass per example) | {s['ffn']:.1f} | {s['ffn'] / s['forward_backward']:.2f} |",
        f"| **importance, both** | **{s['importance']:.1f}** | **{r['ratio']:.2f}** (target <= {TARGET:g}) |",
        f"| before: unbatched (extrapolated from {r['before_windows']} windows) | {s['before_extrapolated']:.1f} | "
        f"{s['before_extrapolated'] / s['forward_backward']:.2f} |",
        "",
        f"**Why {TARGET:g}x is out of reach for exact knock-outs.** Counting multiply-adds per token (weights "
        f"only), a training step is 3 forwards; head importance costs {a['heads']:.2f} of it and the knock-outs "
        f"{a['ffn']:.2f} (each of the {r['layers']} layers' rows runs the blocks from its layer on and the LM head, "
        f"which is {a['head_share_of_forward']:.0%} of a forward here): **{a['importance']:.2f}x** before any "
        f"overhead. The measured {r['ratio']:.2f}x is {r['ratio'] / a['importance']:.0%} of that count, so no "
        f"batching can bring it to {TARGET:g}x; that would need a cheaper definition (a first-order estimate "
        f"instead of a knock-out, or bf16), which would change the numbers the study reports.",
        "",
        f"Speed-up over the unbatched method: {s['before_extrapolated'] / s['importance']:.1f}x. On the "
        f"{r['before_windows']} windows both were run on, the largest differences are "
        f"{r['max_abs_diff']['heads']:.2e} (head importance) and {r['max_abs_diff']['ffn']:.2e} (FFN loss increase).",
        "",
    ])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--windows", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--before-windows", type=int, default=2)
    args = p.parse_args()

    model = inheritune.load_model(args.model).eval()
    tok = inheritune.load_tokenizer(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        windows = sequences_from(None, owt_text(Path(tmp) / "owt.txt"), tok, args.windows, args.seq_len, seed=0)
    examples = imp.lm_examples(windows)

    fb, heads_s, ffn_s = [], [], []
    for _ in range(args.repeats):  # alternating, to share out the load of other processes
        fb.append(timed(lambda: forward_backward(model, windows), "forward+backward")[0])
        seconds, heads = timed(lambda: imp.head_importance(model, examples), "head importance")
        heads_s.append(seconds)
        seconds, ffn = timed(lambda: imp.ffn_importance(model, examples), "FFN knock-outs")
        ffn_s.append(seconds)
    few = examples[:args.before_windows]
    before_s, (old_heads, old_ffn) = timed(lambda: unbatched(model, few), f"unbatched on {len(few)} windows")
    new_heads, new_ffn = imp.head_importance(model, few), imp.ffn_importance(model, few)["loss_increase"]

    seconds = {"forward_backward": statistics.median(fb), "heads": statistics.median(heads_s),
               "ffn": statistics.median(ffn_s), "before_extrapolated": before_s * args.windows / len(few)}
    seconds["importance"] = seconds["heads"] + seconds["ffn"]
    result = {
        "model": args.model, "windows": args.windows, "seq_len": args.seq_len, "repeats": args.repeats,
        "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "runs": {"forward_backward": fb, "heads": heads_s, "ffn": ffn_s},
        "ratio": round(seconds["importance"] / seconds["forward_backward"], 2), "target": TARGET,
        "arithmetic": arithmetic(model), "layers": num_layers(model.config),
        "before_windows": len(few),
        "max_abs_diff": {"heads": float(np.abs(new_heads - old_heads).max()),
                         "ffn": float(np.abs(np.asarray(new_ffn) - old_ffn).max())},
        "loss": imp.evaluate(model, examples)["loss"],
        "ffn_loss_increase": [round(v, 4) for v in ffn["loss_increase"]],
        "head_importance_per_layer": heads.sum(1).round(5).tolist(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULTS / "bench_importance.json", result)
    atomic_write_text(RESULTS / "bench_importance.md", markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
