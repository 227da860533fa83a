"""SmolLM2-135M (packaged): top induction heads, how many heads/FFNs can be masked before the
validation loss rises 5%, where important heads cluster, and wall times on this machine.

Runs the three CLI commands (``induction``, ``importance``, ``prune --sweep``) on a packaged
OpenWebText sample and writes ``benchmarks/results/importance.json``. ``--from DIR`` only
summarises earlier outputs (DIR/ind, DIR/imp, DIR/pruned, DIR/pruned_fine). Slow on CPU: the FFN knock-outs
are layers x examples forward passes.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CORPUS = "evals/registry/data/schelling_point/owt_5.jsonl"
LAZY = ROOT / "benchmarks" / "results" / "analyze.json"  # issue 6's lazy layers, when present


def corpus_text(out: Path, rows: int = 200) -> Path:
    import evals  # noqa: F401  (installed --no-deps: only its data files are used)

    path = Path(evals.__file__).parent / CORPUS.split("/", 1)[1]
    docs = [v for line in path.read_text().splitlines()[:rows] for v in json.loads(line).values()]
    out.write_text("\n\n".join(docs))
    return out


def cli(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "inheritune", *args, "--overwrite"], check=True)
    return round(time.perf_counter() - start, 1)


def summarise(work: Path, seconds: dict) -> dict:
    ind = json.loads((work / "ind" / "induction.json").read_text())
    lm = json.loads((work / "imp" / "importance.json").read_text())["sources"]["lm"]
    pruned = json.loads((work / "pruned" / "prune.json").read_text())
    heads = np.asarray(lm["head_importance"])
    per_layer = heads.sum(1)
    summary = {
        "model": "smollm2-135m", "seconds": seconds,
        "top_induction_heads": ind["top_heads"],
        "induction_settings": {k: ind[k] for k in ("seg_len", "repeats", "seeds", "exclude", "token_ids")},
        "importance_examples": lm["examples"], "loss": lm["loss"],
        "head_clusters": lm["clusters"]["heads"], "ffn_clusters": lm["clusters"]["ffn"],
        "head_importance_per_layer": per_layer.round(4).tolist(),
        "ffn_loss_increase": np.round(lm["ffn_loss_increase"], 4).tolist(),
        "prune": {k: pruned[k] for k in ("heads_percent", "ffn_percent", "before", "after")},
        "sweep": pruned["sweep"].get("lm"),
        "sweep_fine": json.loads((work / "pruned_fine" / "prune.json").read_text())["sweep"].get("lm"),
    }
    if LAZY.is_file():
        lazy = json.loads(LAZY.read_text()).get("smollm2-135m", {}).get("lazy_layers")
        if lazy:
            rank = np.argsort(np.argsort(-per_layer))  # 0 = the layer whose heads matter most
            summary["lazy_layers"] = lazy
            summary["lazy_layer_head_importance_rank"] = rank[lazy].tolist()
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="runs/bench_importance", help="where the command outputs go")
    parser.add_argument("--from", dest="existing", help="summarise outputs already in this folder")
    parser.add_argument("--examples", default="8")
    parser.add_argument("--seq-len", default="128")
    parser.add_argument("--seeds", default="40")
    args = parser.parse_args()
    seconds: dict = {}
    work = Path(args.existing or args.work)
    if not args.existing:
        work.mkdir(parents=True, exist_ok=True)
        text = str(corpus_text(work / "owt.txt"))
        common = ["--text", text, "--examples", args.examples, "--seq-len", args.seq_len]
        seconds["induction"] = cli("induction", "smollm2-135m", "--seeds", args.seeds, "--out", str(work / "ind"))
        seconds["importance"] = cli("importance", "smollm2-135m", *common, "--out", str(work / "imp"))
        seconds["prune_sweep"] = cli("prune", "smollm2-135m", *common, "--seed", "1", "--by",
                                     str(work / "imp" / "importance.json"), "--heads", "30", "--ffn", "10",
                                     "--sweep", "--out", str(work / "pruned"))
        seconds["prune_sweep_fine"] = cli("prune", "smollm2-135m", *common, "--seed", "1", "--by",
                                          str(work / "imp" / "importance.json"), "--heads", "10", "--sweep",
                                          "--steps", "0,2.5,5,7.5,10,12.5,15,17.5,20,25",
                                          "--out", str(work / "pruned_fine"))
    out = ROOT / "benchmarks" / "results" / "importance.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summarise(work, seconds), indent=2) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
