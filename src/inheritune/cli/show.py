"""What each command prints of its typed result (the files hold the rest), and `run`'s two switches."""
from __future__ import annotations

import argparse
import json

from inheritune import (AnalyzeResult, DeriveResult, EvalResult, GrowResult, ImportanceResult, InductionResult,
                        LayerPruneResult, PrepareResult, PruneResult, StudyResult, TrainResult, WidthPruneResult)
from inheritune.models.surgery import spans
from inheritune.pipeline import check_inputs
from inheritune.recipe import default_recipe_text, load_recipe


def derived(r: DeriveResult) -> None:
    print(f"derived {len(r.blocks)}/{r.reference_layers} layers (blocks {spans(r.blocks)} by {r.by}; "
          f"{r.parameters / 1e6:.1f}M parameters, init={r.init}) -> {r.out} in {r.seconds:.1f}s")


def prepared(r: PrepareResult) -> None:
    print(f"prepared {r.out}: train {r.train_tokens:,} tokens ({r.train_documents:,} docs), "
          f"val {r.val_tokens:,} tokens ({r.val_documents:,} docs), {r.dtype}, in {r.seconds:.1f}s")


def analyzed(r: AnalyzeResult) -> None:
    print(f"{r.num_layers} layers x {r.num_heads} heads on {r.sequences} x {r.seq_len} tokens in {r.seconds:.1f}s; "
          f"lazy layers: {', '.join(map(str, r.lazy_layers)) or 'none'}")
    print(f"recommended: inherit {r.recommended_layers} layers ({r.rule}); "
          f"by Block Influence: {r.by_block_influence} -> {r.out}")


def evaluated(r: EvalResult) -> None:
    print(json.dumps(r.report(), indent=2))


def trained(r: TrainResult) -> None:
    print(f"trained {r.steps} steps ({r.tokens} tokens) in {r.wall_time:.1f}s: val loss "
          f"{r.val_history[0]['val_loss']:.4f} -> {r.final_val_loss:.4f}; model -> {r.model_dir}")


def grown(r: GrowResult) -> None:
    print(f"model -> {r.model_dir}; summary -> {r.run_dir / 'summary.json'}")


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def ranked(r: ImportanceResult) -> None:
    for name, s in r.sources.items():
        c, acc = s["clusters"], f", accuracy {s['accuracy']:.3f}" if s["accuracy"] is not None else ""
        print(f"{name}: loss {s['loss']:.4f}{acc}; important heads cluster {c['heads']['peak']} "
              f"(top {c['heads']['top_units']}: {c['heads']['top_count']}), important FFNs {c['ffn']['peak']}")
    for kind, o in r.overlap.items():
        print(f"{kind} across {len(o['sources'])} sources: mean Spearman {_number(o['mean_spearman'])}, "
              f"mean top-{o['top_k']} Jaccard {_number(o['mean_jaccard'])}")
    for kind, c in r.aggregate["clusters"].items():
        mass = ", ".join(f"{third} {share:.0%}" for third, share in c["mass_share"].items())
        print(f"aggregate {kind} importance by depth: {mass} of the mass; top {c['top_units']} {c['top_count']}")
    print(f"-> {r.out} in {r.seconds:.1f}s")


def pruned(r: PruneResult | LayerPruneResult | WidthPruneResult) -> None:
    if isinstance(r, WidthPruneResult):
        a, b = r.geometry["before"], r.geometry["after"]
        print(f"cut width (by {r.by}): heads {a['heads']} -> {b['heads']} (key/value {a['kv_heads']} -> "
              f"{b['kv_heads']}), FFN neurons {a['ffn_neurons']} -> {b['ffn_neurons']} in every block; params "
              f"{r.params['before']:,} -> {r.params['after']:,}")
        print(f"val loss {r.before['val']['loss']:.4f} -> {r.after['val']['loss']:.4f} (masked reference "
              f"{r.masked['val']['loss']:.4f}) -> {r.out} in {r.seconds:.1f}s")
        return
    if isinstance(r, LayerPruneResult):
        print(f"dropped blocks {r.dropped_layers} (by {r.by}): val loss {r.before['val']['loss']:.4f} -> "
              f"{r.after['val']['loss']:.4f} -> {r.out} in {r.seconds:.1f}s")
        return
    for name, before in r.before.items():
        after = r.after[name]
        text = f"{name}: loss {before['loss']:.4f} -> {after['loss']:.4f}"
        if before["accuracy"] is not None:
            text += f", accuracy {before['accuracy']:.3f} -> {after['accuracy']:.3f} (chance {before['chance']:.3f})"
        print(text)
        for by, row in r.prunable.get(name, {}).items():
            ffn = f", {row['ffn']:g}% of FFNs" if "ffn" in row else ""
            print(f"  by {by}: within 5% {row['metric']}: up to {row['heads']:g}% of heads{ffn}")
    print(f"pruned {len(r.pruned_heads)}/{r.heads_total} heads, {len(r.pruned_ffn)}/{r.ffn_total} FFNs "
          f"(by {r.by}, ranked on {r.source}{', overlap ' + str(r.overlap) if r.overlap else ''}) "
          f"-> {r.out} in {r.seconds:.1f}s")


def inducted(r: InductionResult) -> None:
    print("top induction heads (layer.head prefix copying): "
          + ", ".join(f"{h['layer']}.{h['head']} {h['prefix']:.2f} {h['copying']:+.2f}" for h in r.top_heads[:5]))
    print(f"-> {r.out} in {r.seconds:.1f}s")


def studied(r: StudyResult) -> None:
    for name in ("depth", "induction", "lazy"):
        print(f"{name}: {r.findings[name]['text']}")
    print(f"-> {r.out} in {r.seconds:.1f}s")


def show_default(args: argparse.Namespace) -> None:
    """print the embedded default recipe and exit"""
    print(default_recipe_text(), end="")


def check(args: argparse.Namespace) -> None:
    """only check the recipe (the checks a run makes first: tokenizers, not weights) and exit"""
    recipe = load_recipe(args.recipe)
    if args.trust_remote_code:
        recipe.train["trust_remote_code"] = True
    checked = check_inputs(recipe)
    print(f"recipe {args.recipe or '(default)'} is valid: reference {recipe.reference}")
    print("".join(f"  checked {line}\n" for line in checked), end="")
