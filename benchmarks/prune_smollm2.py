"""How much of SmolLM2-135M can be pruned: heads and FFNs by importance, induction score and at random,
on a task the model does better than chance at, scored on held-out examples.

1. **Choosing the task** on the rank split only: every suite task's accuracy on
   ``--select-examples`` rank-split questions (``--shots``), with its 95% Wilson interval; the task whose lower
   bound clears chance by the most is kept (none clearing chance is reported as such, and the
   sweep still runs on the best one). The score split, where pruning is measured, is not looked at.
2. **The sweep** (`inheritune prune --sweep`): importance ranked on that task's rank split, every
   criterion scored on its score split and on held-out LM windows of the default run's data, with
   the share of heads and FFNs prunable within 5% (relative) of the unpruned accuracy, and of the
   unpruned answer loss and LM loss.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/prune_smollm2.py [--examples 64] [--shots 1]
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/prune_smollm2.py --model gemma3-270m --select-examples 16 --examples 16

Writes benchmarks/results/prune_smollm2.{json,md} (other models: prune_MODEL) and the sweep's plots
to runs/prune_smollm2 (runs/prune_MODEL).
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from inheritune.analysis import unit_importance as imp
from inheritune.analysis import unit_pruning as pr
from inheritune.pruning.prune_job import prune
from inheritune.pruning.prune_results import TOLERANCE
from inheritune.evaluation import suite
from inheritune.atomic import atomic_write_json, atomic_write_text
from inheritune.models.loading import load_model, load_tokenizer

from study_smollm2 import MODEL, data_folder  # noqa: E402  (benchmarks/ is the script's folder)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
HEAD_STEPS = (0, 10, 20, 30, 40, 50, 70, 90)
FFN_STEPS = (0, 10, 20, 30, 50)


def selection(model, tok, n: int, shots: int) -> list[dict]:
    """Every suite task's ``shots``-shot accuracy on ``n`` rank-split questions, best margin first."""
    rows = []
    for task in suite.SUITE:
        examples = imp.task_examples(tok, suite.prompts(task, n, shots, seed=0, split="rank"), max_len=1024)
        losses, correct = imp.per_example(model, examples)
        hits = [c for c in correct if c is not None]
        low, high = pr.wilson(sum(hits), len(hits))
        chance = sum(1 / len(ex.choices) for ex in examples if ex.choices) / max(1, len(hits))
        rows.append({"task": task, "n": len(hits), "accuracy": sum(hits) / max(1, len(hits)), "ci": [low, high],
                     "chance": chance, "margin": low - chance, "answer_loss": sum(losses) / len(losses)})
        print(f"{task}: accuracy {rows[-1]['accuracy']:.3f} [{low:.3f}, {high:.3f}], chance {chance:.3f}", flush=True)
    return sorted(rows, key=lambda r: -r["margin"])


def prunable_by_loss(curves: dict, before: dict) -> dict:
    """Per source and criterion: % of heads / FFNs prunable within 5% of the unpruned loss."""
    return {name: {by: {kind: pr.tolerated_percent(c["percent"], [p["loss"] for p in c["points"]],
                                                   before[name]["loss"], TOLERANCE)
                        for kind, c in kinds.items()} for by, kinds in per_by.items()}
            for name, per_by in curves.items()}


def markdown(r: dict) -> str:
    lines = [f"# Pruning {r['model']}: heads and FFNs, held-out scores", "",
             f"{r['threads']} threads, {r['seconds']:.0f} s, {r['date']}. Task chosen on the rank split ({r['shots']}-shot, "
             f"{r['select_examples']} questions each); importance ranked on `{r['source']}`'s rank split; every "
             f"number below on the score split ({r['examples']} questions) and {r['examples']} held-out LM windows "
             f"of {r['seq_len']} tokens.", "",
             "## Choosing the task (rank split)", "", "| task | accuracy | 95% CI | chance |", "|---|---|---|---|"]
    lines += [f"| {s['task']} | {s['accuracy']:.3f} | [{s['ci'][0]:.3f}, {s['ci'][1]:.3f}] | {s['chance']:.3f} |"
              for s in r["selection"]]
    lines += ["", "## Prunable within 5% (relative) of the unpruned model", "",
              "| source | criterion | metric | heads % | FFNs % |", "|---|---|---|---|---|"]
    for name, per_by in r["prunable"].items():
        for by, row in per_by.items():
            lines.append(f"| {name} | {by} | {row['metric']} | {row['heads']:g} | {row.get('ffn', '-')} |")
            if row["metric"] == "accuracy":
                loss = r["prunable_by_loss"][name][by]
                lines.append(f"| {name} | {by} | answer loss | {loss['heads']:g} | {loss.get('ffn', '-')} |")
    for kind, steps in (("heads", HEAD_STEPS), ("ffn", FFN_STEPS)):
        lines += ["", f"## Loss on the score split vs % of {'heads' if kind == 'heads' else 'FFNs'} pruned", "",
                  "| source | criterion | " + " | ".join(f"{p:g}%" for p in steps) + " |",
                  "|---|---|" + "---|" * len(steps)]
        for name, per_by in r["sweep"].items():
            lines += [f"| {name} | {by} | " + " | ".join(f"{p['loss']:.2f}" for p in curves[kind]["points"]) + " |"
                      for by, curves in per_by.items() if kind in curves]
    lines += ["", "## Before pruning (score split)", "", "| source | loss | 95% CI | accuracy | 95% CI | chance |",
              "|---|---|---|---|---|---|"]
    for name, b in r["before"].items():
        acc = "- | - | -" if b["accuracy"] is None else \
            f"{b['accuracy']:.3f} | [{b['accuracy_ci'][0]:.3f}, {b['accuracy_ci'][1]:.3f}] | {b['chance']:.3f}"
        lines.append(f"| {name} | {b['loss']:.3f} | [{b['loss_ci'][0]:.3f}, {b['loss_ci'][1]:.3f}] | {acc} |")
    lines += ["", f"Head steps {list(HEAD_STEPS)}, FFN steps {list(FFN_STEPS)}: a share is the largest step up to "
              "which the curve never left the 5% band. Curves with 95% intervals: benchmarks/results/prune_MODEL_sweep_*.png.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=MODEL, help="a packaged reference alias")
    parser.add_argument("--select-examples", type=int, default=48, help="rank-split questions per task when choosing")
    parser.add_argument("--examples", type=int, default=64, help="held-out questions and LM windows in the sweep")
    parser.add_argument("--shots", type=int, default=1, help="solved questions before each query")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per LM window")
    args = parser.parse_args()
    start = time.perf_counter()
    name = "prune_smollm2" if args.model == MODEL else f"prune_{args.model}"
    work = ROOT / "runs" / name
    model, tok = load_model(args.model).eval(), load_tokenizer(args.model)
    chosen = selection(model, tok, args.select_examples, args.shots)
    task = chosen[0]["task"]
    print(f"chosen: {task}", flush=True)
    result = prune(model, out=work / "out", data=data_folder(args.model), tasks=[task], examples=args.examples,
                   seq_len=args.seq_len, shots=args.shots, source=f"{task}/{args.shots}shot", sweep=True, steps=HEAD_STEPS,
                   ffn_steps=FFN_STEPS, tokenizer=tok, overwrite=True)
    report = result.report()
    out = {"model": args.model, "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "select_examples": args.select_examples, "examples": args.examples, "seq_len": args.seq_len,
           "shots": args.shots, "source": f"{task}/{args.shots}shot", "selection": chosen, "before": report["before"], "prunable": report["prunable"],
           "prunable_by_loss": prunable_by_loss(report["sweep"], report["before"]), "sweep": report["sweep"],
           "seconds": time.perf_counter() - start}
    RESULTS.mkdir(exist_ok=True)
    atomic_write_json(RESULTS / f"{name}.json", out)
    atomic_write_text(RESULTS / f"{name}.md", markdown(out))
    for plot in (work / "out").glob("sweep_*.png"):
        shutil.copy(plot, RESULTS / f"{name}_{plot.name}")
    print(markdown(out))
    print(json.dumps(out["prunable"], indent=1))


if __name__ == "__main__":
    main()
