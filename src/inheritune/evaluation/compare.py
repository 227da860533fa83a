"""Side-by-side results of several models (reference, scratch, Inheritune): markdown and JSON rows.

Input is ``{arm: {metric: value}}`` with flat metric names (``val_loss``, ``val_ppl``,
``mmlu-local/acc``, ...); an arm may also be a whole ``evaluate()`` result, flattened by ``flat_metrics``.
"""

from __future__ import annotations

from collections.abc import Mapping

Metrics = Mapping[str, float | int | str]
# Columns that are bookkeeping rather than quality: kept in JSON rows, shown after the scores.
_COUNTS = ("tokens", "samples", "num_fewshot")


def flat_metrics(result: Mapping) -> dict[str, float | int]:
    """One arm's ``evaluate()`` result as flat ``{metric: value}`` (stderr and counts included)."""
    flat: dict[str, float | int] = {}
    if result.get("val"):  # the yardstick's definition is the report header's, not a column
        flat.update({f"val_{k}": v for k, v in result["val"].items() if isinstance(v, (int, float))})
    for task, metrics in result.get("tasks", {}).items():
        flat.update({f"{task}/{k}": v for k, v in metrics.items()})
    return flat


def _flatten(results: Mapping[str, Metrics | Mapping]) -> dict[str, Metrics]:
    return {arm: flat_metrics(m) if isinstance(m.get("tasks"), Mapping) else m for arm, m in results.items()}


def _columns(results: Mapping[str, Metrics]) -> list[str]:
    """Every metric any arm has, in first-seen order; stderr folded into its metric's cell."""
    seen: dict[str, None] = {}
    for metrics in results.values():
        for key in metrics:
            if not key.endswith("_stderr"):
                seen.setdefault(key, None)
    scores = [c for c in seen if c.rsplit("/", 1)[-1].removeprefix("val_") not in _COUNTS]
    return scores + [c for c in seen if c not in scores]


def comparison_rows(results: Mapping[str, Metrics | Mapping]) -> list[dict]:
    """JSON form: one dict per arm, ``{"model": arm, metric: value, ...}``, metrics in table order."""
    results = _flatten(results)
    columns = _columns(results)
    rows = []
    for arm, metrics in results.items():
        row: dict = {"model": arm}
        for column in columns:
            for key in (column, f"{column}_stderr"):
                if key in metrics:
                    row[key] = metrics[key]
        rows.append(row)
    return rows


def _cell(value: float | int | str | None, stderr: float | int | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, (bool, int, str)):
        return str(value)
    text = f"{value:.4f}" if abs(value) < 1000 else f"{value:.4g}"
    return f"{text} ± {stderr:.4f}" if isinstance(stderr, float) and abs(stderr) < 1000 else text


def comparison_table(results: Mapping[str, Metrics | Mapping]) -> tuple[list[str], list[list[str]]]:
    """Header and formatted cells: one row per arm, one column per metric (missing ones as "-")."""
    results = _flatten(results)
    columns = _columns(results)
    rows = [
        [arm] + [_cell(metrics.get(c), metrics.get(f"{c}_stderr")) for c in columns] for arm, metrics in results.items()
    ]
    return ["model", *columns], rows


def comparison_markdown(results: Mapping[str, Metrics | Mapping]) -> str:
    """The comparison table as markdown."""
    header, rows = comparison_table(results)
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---|" * (len(header) - 1)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"
