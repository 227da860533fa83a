"""Generation speed users feel: batch 1, a 128-token prompt, then 128 tokens generated greedily with a
KV cache (transformers ``generate``), for the reference, the default's 24-layer cut and a cut to 2/3
of the reference's non-embedding parameters (depth), in fp32 and bf16.

Speed depends on the shapes, not the weights, so the cuts are made from the reference without
healing (``inherit`` with the blocks angular keeps; the 2/3 cut keeps the first blocks that fit the
budget). Prompt processing (prefill) and generation (decode) are timed apart: prefill = one forward
pass over the prompt; decode = the 128 new tokens' time minus that prefill.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_generate.py [--reference smollm2-135m] [--reps 3]

Writes benchmarks/results/generate_REFERENCE.{json,md}. llama.cpp (llama-cpp-python) is not built
here: its wheels compile llama.cpp from source, minutes of two cores the suite cannot spare.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from inheritune.analysis.selection import scoring_windows, select
from inheritune.models.budget import cut_within, non_embedding
from inheritune.models.families import num_layers
from inheritune.models.loading import load_model
from inheritune.models.surgery import inherit

sys.path.insert(0, str(Path(__file__).parent))
from honest_gap import data_folder  # noqa: E402  (the development split's windows choose the blocks)

RESULTS = Path(__file__).parent / "results"
PROMPT, NEW = 128, 128


def timed(model, prompt: torch.Tensor, new: int) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        model.generate(prompt, max_new_tokens=new, min_new_tokens=new, do_sample=False, use_cache=True,
                       pad_token_id=0)
    return time.perf_counter() - start


def measure(model, dtype: torch.dtype, reps: int) -> dict:
    model = model.to(dtype).eval()
    prompt = torch.randint(5, model.config.vocab_size, (1, PROMPT), generator=torch.Generator().manual_seed(0))
    timed(model, prompt, 4)  # warm-up
    prefill = statistics.median(timed(model, prompt, 1) for _ in range(reps))
    total = statistics.median(timed(model, prompt, NEW) for _ in range(reps))
    return {"prefill_s": prefill, "prompt_tok_s": PROMPT / prefill, "decode_tok_s": (NEW - 1) / (total - prefill),
            "total_s": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default="smollm2-135m")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from inheritune.models.loading import load_tokenizer

    reference = load_model(args.reference)
    total = num_layers(reference.config)
    windows = scoring_windows(data_folder(args.reference, load_tokenizer(args.reference), 1_000_000))
    budget = cut_within(reference.config, 2 / 3, "depth")
    models = {
        f"reference ({total} layers)": reference,
        "24-layer cut (angular)": inherit(reference, select(reference, 24, "angular", windows).keep),
        f"2/3 parameters ({total - budget.drop_layers} layers)": inherit(reference, total - budget.drop_layers),
    }
    rows = []
    for name, model in models.items():
        for dtype in (torch.float32, torch.bfloat16):
            row = {"model": name, "layers": num_layers(model.config), "non_embedding": non_embedding(model.config),
                   "dtype": str(dtype).removeprefix("torch.")} | measure(model, dtype, args.reps)
            rows.append(row)
            print(json.dumps(row), flush=True)
    base = {r["dtype"]: r["decode_tok_s"] for r in rows if r["model"].startswith("reference")}
    lines = ["| model | layers | non-embedding params | dtype | prompt tok/s | decode tok/s | decode speed-up |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['layers']} | {r['non_embedding'] / 1e6:.1f}M | {r['dtype']} | {r['prompt_tok_s']:.0f} | "
              f"{r['decode_tok_s']:.1f} | {r['decode_tok_s'] / base[r['dtype']]:.2f}x |" for r in rows]
    text = (f"{args.reference}: batch 1, {PROMPT}-token prompt, {NEW} greedy tokens with a KV cache (transformers "
            f"generate), median of {args.reps}; {args.threads} threads, {platform.processor() or platform.machine()}, "
            f"load {os.getloadavg()[0]:.2f} (benchmarks/bench_generate.py).\n\n" + "\n".join(lines) + "\n")
    (RESULTS / f"generate_{args.reference}.json").write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    (RESULTS / f"generate_{args.reference}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
