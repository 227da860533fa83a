"""Tokens/s of `data prepare` on the packaged `default` corpus vs a plain `datasets.map`.

Both start from the installed corpus files, use the same (SmolLM2) tokenizer, append EOS per
document and end with the ids on disk; the tokenizer load is outside both timings. Runs
alternate (ours, theirs, ours, ...) so that load from other processes hits both alike; the
median is reported. Writes benchmarks/results/data.json.

    .venv/bin/python benchmarks/bench_data.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from inheritune.data.corpora import expand
from inheritune.data.prepare_job import prepare_data
from inheritune.data.shards import open_data
from inheritune.data.sources import documents
from inheritune.atomic import atomic_write_json
from inheritune.models.loading import load_tokenizer

CORPUS = "default"
REFERENCE = "smollm2-135m"
RESULTS = Path(__file__).parent / "results" / "data.json"


def run_prepare(tok, work: Path) -> tuple[float, int]:
    start = time.perf_counter()
    out = prepare_data([CORPUS], tok, work / "prepared", overwrite=True).out
    seconds = time.perf_counter() - start
    return seconds, open_data(out).manifest["read"]["tokens"]


def run_datasets_map(tok, work: Path) -> tuple[float, int]:
    """The usual recipe: a Dataset of the texts, then map(batched=True, num_proc=2)."""
    import datasets

    eos = tok.eos_token_id

    def encode(batch: dict) -> dict:
        return {"input_ids": [ids + [eos] for ids in tok(batch["text"], add_special_tokens=False)["input_ids"]]}

    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # worker processes parallelise; threads would oversubscribe
    start = time.perf_counter()
    ds = datasets.Dataset.from_dict({"text": list(documents(CORPUS))})
    cache = work / "map-cache"
    cache.mkdir(exist_ok=True)
    ds = ds.map(encode, batched=True, num_proc=2, remove_columns=["text"],
                cache_file_name=str(cache / f"tokens-{time.monotonic_ns()}.arrow"))
    tokens = sum(len(ids) for ids in ds["input_ids"])
    seconds = time.perf_counter() - start
    return seconds, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import datasets

    datasets.disable_progress_bars()
    datasets.disable_caching()
    tok = load_tokenizer(REFERENCE)
    runs: dict[str, list[float]] = {"prepare": [], "datasets_map": []}
    tokens: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for name, fn in (("prepare", run_prepare), ("datasets_map", run_datasets_map)):
                seconds, n = fn(tok, Path(tmp))
                runs[name].append(round(seconds, 3))
                tokens[name] = n
                print(f"{name}: {n:,} tokens in {seconds:.2f}s = {n / seconds:,.0f} tokens/s", flush=True)
    rate = {name: tokens[name] / statistics.median(times) for name, times in runs.items()}
    result = {
        "what": f"tokens/s of `data prepare {CORPUS}` vs datasets.map(batched=True, num_proc=2), same tokenizer",
        "corpus": CORPUS,
        "corpora": list(expand(CORPUS)),
        "tokenizer": REFERENCE,
        "tokens": tokens,
        "seconds": runs,
        "tokens_per_s": {name: round(r) for name, r in rate.items()},
        "ratio": round(rate["prepare"] / rate["datasets_map"], 2),
        "note": "prepare's time includes the seeded train/val split and writing shards; map's the arrow cache",
        "cpu_count": os.cpu_count(),
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "datasets_version": datasets.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    atomic_write_json(RESULTS, result)
    print(f"ratio prepare / datasets.map = {result['ratio']}x -> {RESULTS}")


if __name__ == "__main__":
    main()
