"""One arm's numbers in a run's report: what its train runs measured (``arms.py`` fills these in) and
what the report reads off them against the yardsticks (``report.py``: gaps, time to target, the
val loss at the main arm's compute)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from inheritune.result import Record


@dataclass
class Yardstick(Record):
    """The val loss a grow run must reach (plus its margin): the reference's as it is, unless a
    stronger one is given (``inheritune run``: the reference trained on the same tokens)."""

    name: str  # says which, in the verdict and the report
    loss: float


@dataclass
class Curve(Record):
    """An arm's val loss at each evaluation, against training tokens and seconds (rounds laid end to end)."""

    tokens: list[int]
    wall_time: list[float]
    val_loss: list[float]


@dataclass
class TargetHit(Record):
    """The first evaluation at or below a target: its training tokens and seconds."""

    tokens: int
    wall_time: float


@dataclass
class ArmResult(Record):
    """One arm; the reference as it is is an arm too (not trained: no curve)."""

    layers: int
    params: int
    non_embedding: int
    tokens: int
    final_val_loss: float
    ppl: float
    wall_time: float  # training seconds (teacher included)
    curve: Curve | None = None
    flops_per_token: float = 0.0  # training FLOPs per token (training/flops.py)
    train_flops: float = 0.0  # flops_per_token x tokens
    teacher_forward_flops: float = 0.0  # per token: the teacher's forward pass (0: no teacher)
    correction_flops: float = 0.0  # training FLOPs spent correcting the teacher (0: none)
    teacher_flops: float = 0.0  # teacher_forward_flops x tokens + correction_flops
    model_dir: str | None = None
    run_dir: str | None = None
    blocks: list[int] | None = None  # the reference blocks it holds
    matched: bool | None = None  # a grown arm: whether its grow run matched the yardstick
    # read off the numbers above by the report:
    gap: float | None = None  # final val loss minus the reference's as it is
    gap_trained: float | None = None  # ... minus the reference's trained on the same tokens
    at_main_flops: float | None = None  # val loss after the main arm's total FLOPs (None: never spent that)
    time_to_target: dict[str, TargetHit | None] | None = None  # per level above the yardstick

    @property
    def total_flops(self) -> float:
        return self.train_flops + self.teacher_flops

    def loss_at_flops(self, budget: float) -> float | None:
        """The val loss after ``budget`` FLOPs, interpolated between evaluations (the teacher's
        correction counts as spent before the first step); None when the arm stopped short of it."""
        if self.curve is None or not self.curve.tokens:
            return None
        per_token = self.flops_per_token + self.teacher_forward_flops
        spent = [self.correction_flops + per_token * t for t in self.curve.tokens]
        if budget < spent[0] or budget > spent[-1] * (1 + 1e-9):
            return None
        points = list(zip(spent, self.curve.val_loss, strict=True))
        for (x0, y0), (x1, y1) in itertools.pairwise(points):
            if x0 <= budget <= x1:
                return y0 + (y1 - y0) * (budget - x0) / (x1 - x0) if x1 > x0 else y1
        return points[-1][1]
