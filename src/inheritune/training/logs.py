"""The run log: one row per logged step in RUN/log.jsonl and RUN/log.csv, plus TensorBoard if installed.

On resume, rows past the checkpoint being resumed are dropped (the killed run may have logged
steps it never checkpointed), so the log reads as one uninterrupted run.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from inheritune.atomic import atomic_write_text

COLUMNS = ("step", "tokens", "lr", "train_loss", "val_loss", "tokens_per_s", "mfu", "wall_time")


def _rows(path: Path) -> list[dict]:
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a kill
                break
    return rows


def _csv_line(row: dict) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(["" if row.get(c) is None else row[c] for c in COLUMNS])
    return buf.getvalue()


class RunLog:
    def __init__(self, run_dir: Path, keep_until: int | None = None, enabled: bool = True):
        """``keep_until``: the step a resumed run continues from (None = a fresh log)."""
        self.enabled = enabled
        self.jsonl, self.csv = run_dir / "log.jsonl", run_dir / "log.csv"
        self.tb = None
        if not enabled:
            return
        rows = [r for r in _rows(self.jsonl) if keep_until is not None and r["step"] <= keep_until]
        atomic_write_text(self.jsonl, "".join(json.dumps(r) + "\n" for r in rows))
        atomic_write_text(self.csv, ",".join(COLUMNS) + "\n" + "".join(_csv_line(r) for r in rows))
        try:
            from torch.utils.tensorboard import SummaryWriter  # tensorboard: optional, only when installed

            self.tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=keep_until)
        except ImportError:
            pass

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        row = {c: row.get(c) for c in COLUMNS} | {k: v for k, v in row.items() if k not in COLUMNS}
        with self.jsonl.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        with self.csv.open("a", encoding="utf-8") as f:
            f.write(_csv_line(row))
        if self.tb is not None:
            for key in COLUMNS[2:]:
                value = row.get(key)
                if isinstance(value, float) and math.isfinite(value):
                    self.tb.add_scalar(key, value, row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
