"""A run's report: the numbers (``build_report``), and three renderings of them: report.json for
machines, report.md and a self-contained report.html.

Every number comes from the train runs' own results and logs; this module computes only what
is read off them (the verdict, time-to-target) and lays the same numbers out as tables, so the
three files cannot disagree. Every "val loss" is the one yardstick of ``evaluation/val_loss.py``,
whose definition heads the report.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from inheritune.atomic import atomic_write_json, atomic_write_text
from inheritune.evaluation.compare import comparison_table
from inheritune.evaluation.val_loss import YARDSTICK
from inheritune.models.surgery import spans
from inheritune.reporting.arm_numbers import ArmResult, Curve, TargetHit, Yardstick
from inheritune.reporting.plots import curves, strips

CURVES_PNG = "val_loss_vs_tokens.png"
BLOCKS_PNG = "blocks_kept.png"
ARM_COLUMNS = (
    "arm",
    "layers",
    "blocks",
    "params",
    "tokens",
    "final_val_loss",
    "gap",
    "gap_trained",
    "total_flops",
    "at_main_flops",
    "ppl",
    "wall_time",
)
ROUND_COLUMNS = ("round", "layers", "blocks", "tokens", "start_val_loss", "val_loss", "wall_time", "matched")
TARGET_LEVELS = (2.0, 1.0, 0.5)  # time-to-target: the yardstick's val loss + these many nats
TRAINED = "reference-trained"  # the arm that is the reference trained on the same tokens (yardstick.py)


def target_levels(margin: float) -> tuple[float, ...]:
    """The fixed levels plus the recipe's own margin (the level its verdict uses), loosest first."""
    return tuple(sorted(set(TARGET_LEVELS) | {margin}, reverse=True))


def time_to_target(curve: Curve, target_loss: float, levels=TARGET_LEVELS) -> dict[str, TargetHit | None]:
    """Per level: training tokens and seconds at the first evaluation at or below the yardstick +
    level (None when never reached)."""
    out: dict[str, TargetHit | None] = {}
    for level in levels:
        hit = next((i for i, v in enumerate(curve.val_loss) if v <= target_loss + level), None)
        out[f"{level:+g}"] = None if hit is None else TargetHit(curve.tokens[hit], curve.wall_time[hit])
    return out


def _verdict(main: str, arms: dict[str, ArmResult], grown, judged_by: Yardstick) -> str:
    ref, inh = arms["reference"], arms[main]
    suffix = main.removeprefix("inheritune")
    text = (
        f"{main} {'matched' if grown.matched else 'did not match'} {judged_by.name} "
        f"(val loss {judged_by.loss:.4f}): {inh.layers} layers reach {inh.final_val_loss:.4f} "
        f"({inh.final_val_loss - judged_by.loss:+.3f} nats) after {inh.tokens:,} tokens in "
        f"{len(grown.rounds)} round(s)"
    )
    if TRAINED in arms:
        text += (
            f"; the reference as it is ({ref.layers} layers, never trained on this data): "
            f"{ref.final_val_loss:.4f} ({inh.final_val_loss - ref.final_val_loss:+.3f})"
        )
    if f"scratch{suffix}" in arms:
        s = arms[f"scratch{suffix}"]
        better = "beat" if inh.final_val_loss < s.final_val_loss else "did not beat"
        text += f"; it {better} scratch{suffix} (same depth, tokens and loss: {s.final_val_loss:.4f})"
    if suffix and "inheritune" in arms and "scratch" in arms:
        text += (
            f". With cross-entropy alone: inheritune {arms['inheritune'].final_val_loss:.4f}, "
            f"scratch {arms['scratch'].final_val_loss:.4f}"
        )
    return text + "."


def _loss_sentence(recipe) -> str:
    d = recipe.distill
    if not d.enabled:
        return "Every arm trains on cross-entropy."
    teacher = (
        f"the reference corrected first (trained on {d.correction_tokens or 'the arms'} tokens of the train split)"
        if d.teacher == "corrected"
        else d.teacher
    )
    return f"Arms ending in -kd distil from {teacher} (alpha {d.alpha}, T {d.temperature})."


def judge(arms: dict[str, ArmResult], main: str, judged_by: Yardstick, margin: float) -> None:
    """Each arm's gaps to both references, time to the yardstick's levels, and val loss at the
    main arm's compute (filled into the arms)."""
    ref, trained = arms["reference"], arms.get(TRAINED)
    budget = arms[main].total_flops
    for arm in arms.values():
        arm.gap = arm.final_val_loss - ref.final_val_loss
        arm.gap_trained = arm.final_val_loss - trained.final_val_loss if trained is not None else None
        if arm.curve is not None:
            arm.time_to_target = time_to_target(arm.curve, judged_by.loss, target_levels(margin))
            arm.at_main_flops = arm.loss_at_flops(budget)


def build_report(
    recipe,
    data,
    grown: dict,
    main_suffix: str,
    arms: dict[str, ArmResult],
    judged_by: Yardstick,
    analysis: dict | None,
    evals: dict | None,
    elapsed: float,
) -> dict:
    """The report's numbers: arms (with gaps, time-to-target and equal compute), growth, verdict."""
    main = f"inheritune{main_suffix}"
    judge(arms, main, judged_by, recipe.grow.margin)
    g = recipe.grow
    step = (
        f"+{g.step_layers} per round ({g.mode}), at most {g.max_layers or arms['reference'].layers}"
        if g.direction == "grow"
        else f"-{g.step_layers} per round (shrink), at least {g.min_layers}"
    )
    setup = (
        f"Reference `{recipe.reference}`, data `{data.root}`. Val loss: {YARDSTICK['definition']}; the same "
        f"number for every arm, the reference, and `inheritune eval --data`. Judged against {judged_by.name} "
        f"(val loss {judged_by.loss:.4f}). Blocks: selector "
        f"`{recipe.inherit.by}` (`inheritune derive --help` says what each selector keeps), scored on the "
        f"train split; trained blocks: `{recipe.train.get('train_blocks', 'all')}`. "
        f"Depth: start {g.start_layers} layers, "
        f"{step}, {g.tokens_per_round:,} tokens per round, margin {g.margin}. {_loss_sentence(recipe)} wall_time: "
        f"seconds of optimizer steps (teacher included, evaluations not), over all resumes. "
        f"This invocation of the run took {elapsed:.0f} s."
    )
    return {
        "title": f"{recipe.reference} -> {arms[main].layers} layers",
        "main_arm": main,
        "verdict": _verdict(main, arms, grown[main_suffix], judged_by),
        "judged_by": judged_by.to_json(),
        "setup": setup,
        "yardstick": YARDSTICK,
        "recipe": recipe.to_dict(),
        "data": str(data.root),
        "arms": {name: arm.to_json() for name, arm in arms.items()},
        "growth": {f"inheritune{s}": r.to_json() for s, r in grown.items()},
        "analysis": analysis,
        "eval": evals,
        "wall_time": elapsed,
    }


def _fmt(value, column: str = "") -> str:
    if column == "blocks":
        return spans(value) if value else "-"
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "-"}[value]
    if column == "wall_time":
        return f"{value:.1f} s"
    if column == "ppl":
        return f"{value:.2f}"
    if column in ("gap", "gap_trained"):
        return f"{value:+.3f}"
    if column.endswith("flops") and column != "at_main_flops":
        return f"{value / 1e12:.1f} T" if value else "0"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int) and abs(value) >= 1000:
        return f"{value:,}"
    return str(value)


def arm_rows(report: dict) -> list[list[str]]:
    rows = []
    for name, arm in report["arms"].items():
        total = arm.get("train_flops", 0.0) + arm.get("teacher_flops", 0.0)
        rows.append([name] + [_fmt(total if c == "total_flops" else arm.get(c), c) for c in ARM_COLUMNS[1:]])
    return rows


def target_table(report: dict) -> tuple[list[str], list[list[str]]]:
    """Tokens and seconds to first reach reference + level, per trained arm."""
    trained = {name: arm for name, arm in report["arms"].items() if arm.get("time_to_target")}
    levels = next(iter(trained.values()))["time_to_target"] if trained else {}
    header = ["arm"] + [f"ref {level}" for level in levels]
    rows = [
        [name]
        + [
            f"{hit['tokens']:,} tok / {hit['wall_time']:.0f} s" if hit else "not reached"
            for hit in arm["time_to_target"].values()
        ]
        for name, arm in trained.items()
    ]
    return header, rows


def budget_table(report: dict) -> tuple[list[str], list[list[str]]] | None:
    """The budget arms beside the reference and the main arm: non-embedding parameters (and their
    share of the reference's), tokens, val loss before training and after; None without budget arms."""
    arms = report["arms"]
    names = [n for n in arms if n.startswith("budget-")]
    if not names:
        return None
    total = arms["reference"].get("non_embedding")
    header = ["arm", "layers", "non-embedding params", "share", "tokens", "untrained", "final_val_loss", "gap"]
    rows = []
    for name in ["reference", report["main_arm"], *names]:
        arm, own = arms[name], arms[name].get("non_embedding")
        untrained = arm["curve"]["val_loss"][0] if arm.get("curve") else None
        rows.append(
            [
                name,
                _fmt(arm["layers"]),
                _fmt(own),
                f"{own / total:.3f}" if own and total else "-",
                _fmt(arm["tokens"]),
                _fmt(untrained),
                _fmt(arm["final_val_loss"]),
                _fmt(arm["gap"], "gap"),
            ]
        )
    return header, rows


def round_rows(growth: dict) -> list[list[str]]:
    return [[_fmt(r.get(c), c) for c in ROUND_COLUMNS] for r in growth.get("rounds", [])]


def draw_curves(report: dict, out: Path) -> Path:
    """All trained arms' val loss against training tokens; the reference as a labelled line. The
    y axis is clipped just above the lowest arm's start, so one far-off point (an untrained derived
    model's step 0) does not squash every curve into the bottom of the plot."""
    series = {
        name: (arm["curve"]["tokens"], arm["curve"]["val_loss"])
        for name, arm in report["arms"].items()
        if arm.get("curve") and arm["curve"]["tokens"]
    }
    ref = report["arms"]["reference"]
    hlines = {f"reference ({ref['layers']} layers): {ref['final_val_loss']:.3f}": ref["final_val_loss"]}
    values = [v for _, ys in series.values() for v in ys]
    after_start = [v for _, ys in series.values() for v in ys[1:]] or values
    ylim = (min([*values, ref["final_val_loss"]]) - 0.3, max(after_start) + 0.5) if values else None  # bottom, top
    return curves(
        series,
        out / CURVES_PNG,
        title="validation loss vs training tokens",
        xlabel="training tokens",
        ylabel="val loss (nats)",
        hlines=hlines,
        ylim=ylim,
    )


def draw_blocks(report: dict, out: Path) -> Path | None:
    """Which reference blocks each inherited arm holds: one strip per arm (None when no arm holds any)."""
    rows = {name: arm["blocks"] for name, arm in report["arms"].items() if arm.get("blocks")}
    if not rows:
        return None
    total = report["arms"]["reference"]["layers"]
    return strips({"reference": range(total)} | rows, total, out / BLOCKS_PNG, "reference blocks each arm holds")


def _md_table(columns, rows) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _sections(report: dict) -> list[tuple[str, str | None, tuple | None]]:
    """(heading, paragraph, table) in report order: one list that markdown and HTML both render."""
    sections: list[tuple[str, str | None, tuple | None]] = [
        (
            "Arms",
            "gap = final val loss minus the reference's as it is; gap_trained = minus the reference's trained "
            "on the same tokens (the reference-trained arm); total_flops = training FLOPs, the teacher's "
            "forward passes and correction included; at_main_flops = val loss after as many FLOPs as the "
            f"main arm ({report['main_arm']}) spent in all, read off the arm's curve (- : the arm never "
            "spent that much).",
            (ARM_COLUMNS, arm_rows(report)),
        ),
        (
            "Time to target",
            "Training tokens and seconds at the first evaluation at or below the val loss of "
            f"{report.get('judged_by', {}).get('name', 'the reference')} plus the level.",
            target_table(report),
        ),
    ]
    budget = budget_table(report)
    if budget is not None:
        b = report["recipe"].get("budget", {})
        sections.append(
            (
                "Equal parameters: depth, width, both",
                f"The reference cut to at most {b.get('params')} of its non-embedding parameters (`prune "
                f"--params`; depth by `{report['recipe']['inherit']['by']}`, width ranked by "
                f"{b.get('width_by')}), each healed with the main arm's loss on its tokens; untrained = the "
                "cut model's val loss before any training.",
                budget,
            )
        )
    for name, growth in report.get("growth", {}).items():
        sections.append((f"Growth rounds: {name}", growth["verdict"], (ROUND_COLUMNS, round_rows(growth))))
    if report.get("eval"):
        sections.append(
            (
                "Downstream evaluation",
                "lm-eval tasks; val_loss is the same yardstick as above.",
                comparison_table(report["eval"]),
            )
        )
    if report.get("analysis"):
        sections.append(("Attention analysis of the reference", report["analysis"].get("summary", ""), None))
    return sections


def render_markdown(report: dict) -> str:
    parts = [
        f"# inheritune run: {report['title']}",
        "",
        f"**Verdict:** {report['verdict']}",
        "",
        report.get("setup", ""),
        "",
        f"![val loss vs tokens]({CURVES_PNG})",
        "",
    ]
    if any(arm.get("blocks") for arm in report["arms"].values()):
        parts += [f"![reference blocks each arm holds]({BLOCKS_PNG})", ""]
    for heading, text, table in _sections(report):
        parts += [f"## {heading}", ""] + ([text, ""] if text else []) + ([_md_table(*table), ""] if table else [])
    if report.get("analysis"):
        parts += [f"![{name}]({path})" for name, path in report["analysis"].get("plots", {}).items()] + [""]
    return "\n".join(parts)


def _inline(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _html_table(columns, rows) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: dict, out: Path) -> str:
    """One file that opens anywhere: the plots are embedded as base64 PNGs."""
    parts = [
        f"<h1>inheritune run: {html.escape(report['title'])}</h1>",
        f"<p><b>Verdict:</b> {html.escape(report['verdict'])}</p>",
        f"<p>{html.escape(report.get('setup', ''))}</p>",
        f'<img alt="val loss vs tokens" src="{_inline(out / CURVES_PNG)}">',
    ]
    if (out / BLOCKS_PNG).is_file():
        parts.append(f'<img alt="reference blocks each arm holds" src="{_inline(out / BLOCKS_PNG)}">')
    for heading, text, table in _sections(report):
        parts += [f"<h2>{html.escape(heading)}</h2>"] + ([f"<p>{html.escape(text)}</p>"] if text else [])
        parts += [_html_table(*table)] if table else []
    if report.get("analysis"):
        parts += [
            f'<figure><img alt="{html.escape(name)}" src="{_inline(out / path)}">'
            f"<figcaption>{html.escape(name)}</figcaption></figure>"
            for name, path in report["analysis"].get("plots", {}).items()
            if (out / path).is_file()
        ]
    style = (
        "body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(report['title'])}</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n"
    )


def write_report(report: dict, out: str | Path) -> dict[str, Path | None]:
    """Write report.json, the curves PNG, report.md and report.html into ``out``."""
    out = Path(out)
    json_file, md_file, html_file = out / "report.json", out / "report.md", out / "report.html"
    files = {
        "json": json_file,
        "png": draw_curves(report, out),
        "blocks": draw_blocks(report, out),  # None: no blocks to draw
        "md": md_file,
        "html": html_file,
    }
    atomic_write_json(json_file, report)
    atomic_write_text(md_file, render_markdown(report))
    atomic_write_text(html_file, render_html(report, out))
    return files
