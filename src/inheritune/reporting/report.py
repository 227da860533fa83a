"""Render a run's results three ways: report.json for machines, report.md and a self-contained report.html.

The numbers are computed by the run (from the train runs' own results); this module only draws
the val-loss-vs-tokens curves and lays the same numbers out as tables, so the three files
cannot disagree.
"""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from inheritune.io import atomic_write_json, atomic_write_text
from inheritune.reporting.plots import curves

CURVES_PNG = "val_loss_vs_tokens.png"
ARM_COLUMNS = ("arm", "layers", "params", "tokens", "final_val_loss", "ppl", "wall_time")
ROUND_COLUMNS = ("round", "layers", "tokens", "start_val_loss", "val_loss", "wall_time", "matched")


def _fmt(value, column: str = "") -> str:
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "-"}[value]
    if column == "wall_time":
        return f"{value:.1f} s"
    if column == "ppl":
        return f"{value:.2f}"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int) and abs(value) >= 1000:
        return f"{value:,}"
    return str(value)


def arm_rows(report: dict) -> list[list[str]]:
    return [[name] + [_fmt(arm.get(c), c) for c in ARM_COLUMNS[1:]] for name, arm in report["arms"].items()]


def round_rows(report: dict) -> list[list[str]]:
    return [[_fmt(r.get(c), c) for c in ROUND_COLUMNS] for r in report.get("growth", {}).get("rounds", [])]


def draw_curves(report: dict, out: Path) -> Path:
    """All trained arms' val loss against training tokens on one plot; the reference as a line."""
    series = {name: (arm["curve"]["tokens"], arm["curve"]["val_loss"])
              for name, arm in report["arms"].items() if arm.get("curve") and arm["curve"]["tokens"]}
    ref = report["arms"].get("reference")
    hlines = {f"reference ({ref['layers']} layers) {ref['final_val_loss']:.3f}": ref["final_val_loss"]} if ref else {}
    return curves(series, out / CURVES_PNG, title="validation loss vs training tokens", xlabel="training tokens",
                  ylabel="val loss", hlines=hlines)


def _md_table(columns, rows) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def render_markdown(report: dict) -> str:
    parts = [f"# inheritune run: {report['title']}", "", f"**Verdict:** {report['verdict']}", "",
             report.get("setup", ""), "", f"![val loss vs tokens]({CURVES_PNG})", "", "## Arms", "",
             _md_table(ARM_COLUMNS, arm_rows(report)), ""]
    if report.get("growth"):
        parts += ["## Growth rounds", "", report["growth"]["verdict"], "", _md_table(ROUND_COLUMNS, round_rows(report)), ""]
    if report.get("eval_markdown"):
        parts += ["## Downstream evaluation", "", report["eval_markdown"], ""]
    if report.get("analysis"):
        parts += ["## Attention analysis of the reference", "", report["analysis"].get("summary", ""), ""]
        parts += [f"![{name}]({path})" for name, path in report["analysis"].get("plots", {}).items()] + [""]
    return "\n".join(parts)


def _inline(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _html_table(columns, rows) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _md_to_html(text: str) -> str:
    """Enough Markdown for what comparison_markdown and summaries emit: pipe tables and paragraphs."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if len(lines) >= 2 and all(line.lstrip().startswith("|") for line in lines):
        cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
        rows = [r for r in cells[1:] if not all(re.fullmatch(r":?-+:?", c) for c in r)]
        return _html_table(cells[0], rows)
    return "".join(f"<p>{html.escape(line)}</p>" for line in lines)


def render_html(report: dict, out: Path) -> str:
    """One file that opens anywhere: the plots are embedded as base64 PNGs."""
    parts = [f"<h1>inheritune run: {html.escape(report['title'])}</h1>",
             f"<p><b>Verdict:</b> {html.escape(report['verdict'])}</p>",
             _md_to_html(report.get("setup", "")),
             f'<img alt="val loss vs tokens" src="{_inline(out / CURVES_PNG)}">',
             "<h2>Arms</h2>", _html_table(ARM_COLUMNS, arm_rows(report))]
    if report.get("growth"):
        parts += ["<h2>Growth rounds</h2>", f"<p>{html.escape(report['growth']['verdict'])}</p>",
                  _html_table(ROUND_COLUMNS, round_rows(report))]
    if report.get("eval_markdown"):
        parts += ["<h2>Downstream evaluation</h2>", _md_to_html(report["eval_markdown"])]
    if report.get("analysis"):
        parts += ["<h2>Attention analysis of the reference</h2>", _md_to_html(report["analysis"].get("summary", ""))]
        parts += [f'<figure><img alt="{html.escape(name)}" src="{_inline(out / path)}">'
                  f"<figcaption>{html.escape(name)}</figcaption></figure>"
                  for name, path in report["analysis"].get("plots", {}).items() if (out / path).is_file()]
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}"
             "td:first-child,th:first-child{text-align:left}img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(report['title'])}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")


def write_report(report: dict, out: str | Path) -> dict[str, Path]:
    """Write report.json, the curves PNG, report.md and report.html into ``out``."""
    out = Path(out)
    files = {"json": out / "report.json", "png": draw_curves(report, out),
             "md": out / "report.md", "html": out / "report.html"}
    atomic_write_json(files["json"], report)
    atomic_write_text(files["md"], render_markdown(report))
    atomic_write_text(files["html"], render_html(report, out))
    return files
