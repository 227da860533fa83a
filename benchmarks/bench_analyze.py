"""Time of `analyze` against a plain forward pass over the same tokens, and what it finds.

The model is loaded once (load time reported apart); then, alternating to share out the load
of other processes, `analyze` at N x T (default 100 x 100) and a plain ``model(input_ids)``
forward over the same N x T tokens in the same batches (the model's default attention kernel,
full logits, no grad). Reports the medians and their ratio, the lazy layers and the recommended
depth, into benchmarks/results/analyze.json (one entry per model). For SmolLM2 it also copies
the rank and single-column-mass plots to docs/img/ for the README.

The text is a packaged OpenWebText sample (the `evals` package's schelling_point/owt_5.jsonl).

    .venv/bin/python benchmarks/bench_analyze.py [--model smollm2-135m] [--sequences 100] [--seq-len 100]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from inheritune.analysis.analyze_job import analyze
from inheritune.analysis.sampling import sequences_from
from inheritune.atomic import atomic_write_json
from inheritune.models.loading import load

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "analyze.json"
DOCS_IMG = ROOT / "docs" / "img"


def owt_text(path: Path, rows: int = 100) -> Path:
    """The first ``rows`` rows of the packaged OpenWebText sample as one UTF-8 file."""
    spec = importlib.util.find_spec("evals")
    if spec is None or spec.origin is None:
        raise SystemExit("needs the packaged corpus: pip install --no-deps evals==3.0.1.post1")
    source = Path(spec.origin).parent / "registry" / "data" / "schelling_point" / "owt_5.jsonl"
    with source.open(encoding="utf-8") as f:
        docs = [text for _, line in zip(range(rows), f) for text in json.loads(line).values()]
    path.write_text("\n\n".join(docs), encoding="utf-8")
    return path


@torch.no_grad()
def plain_forward(model, ids: torch.Tensor, batch_size: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(ids), batch_size):
        model(input_ids=ids[i:i + batch_size])
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--sequences", type=int, default=100)
    p.add_argument("--seq-len", type=int, default=100)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--bos", action="store_true", help="start every sequence with BOS (see `analyze --bos`)")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-analyze-"))
    text = owt_text(work / "owt.txt")
    start = time.perf_counter()
    model, tok = load(args.model)
    load_seconds = time.perf_counter() - start
    ids = sequences_from(None, text, tok, args.sequences, args.seq_len, seed=0)  # same count as analyzed

    analysis_times, forward_times = [], []
    for repeat in range(args.repeats):
        out = work / f"out-{repeat}"
        start = time.perf_counter()
        result = analyze(model, text=text, tokenizer=tok, out=out, sequences=args.sequences, seq_len=args.seq_len,
                         bos=args.bos)
        analysis_times.append(time.perf_counter() - start)
        forward_times.append(plain_forward(model, ids, batch_size=16))
    analysis, forward = statistics.median(analysis_times), statistics.median(forward_times)

    entry = {
        "model": args.model,
        "layers": result.num_layers,
        "heads": result.num_heads,
        "sequences": args.sequences,
        "seq_len": args.seq_len,
        "threads": torch.get_num_threads(),
        "load_seconds": round(load_seconds, 2),
        "analysis_seconds": round(analysis, 2),
        "forward_seconds": round(forward, 2),
        "ratio": round(analysis / forward, 2),
        "analysis_runs": [round(t, 2) for t in analysis_times],
        "forward_runs": [round(t, 2) for t in forward_times],
        "lazy_layers": result.lazy_layers,
        "recommended_layers": result.recommended_layers,
        "rule": result.rule,
        "by_block_influence": result.by_block_influence,
        "rank_max_per_layer": [row["rank_max"] for row in result.layers],
        "column_mass_mean_per_layer": [round(row["column_mass_mean"], 3) for row in result.layers],
        "block_influence_per_layer": [round(row["block_influence"], 4) for row in result.layers],
        "note": "analysis excludes the model load; forward = model(input_ids) in batches of 16, default kernel, full logits",
    }
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    entry["bos"] = args.bos
    results[args.model + ("+bos" if args.bos else "")] = entry
    atomic_write_json(RESULTS, results)
    if args.model == "smollm2-135m" and not args.bos:
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        for key in ("rank", "column_mass"):
            shutil.copyfile(out / result.plots[key], DOCS_IMG / f"smollm2_{result['plots'][key]}")
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({k: v for k, v in entry.items() if not k.endswith("per_layer")}, indent=2))


if __name__ == "__main__":
    main()
