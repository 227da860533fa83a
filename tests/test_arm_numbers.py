"""An arm's numbers: typed records that round-trip through JSON, and the val loss at a compute budget
read off an arm's curve (the report's equal-FLOPs comparison)."""
from __future__ import annotations

from pathlib import Path

import pytest

from inheritune.growth.grow_config import GrowConfig
from inheritune.growth.rounds import GrowResult, GrowRound
from inheritune.reporting.arm_numbers import ArmResult, Curve, TargetHit


def _arm(**extra) -> ArmResult:
    curve = Curve(tokens=[0, 100, 200], wall_time=[0.0, 1.0, 2.0], val_loss=[5.0, 4.0, 3.0])
    return ArmResult(layers=2, params=10, non_embedding=8, tokens=200, final_val_loss=3.0, ppl=20.1, wall_time=2.0,
                     curve=curve, flops_per_token=10.0, train_flops=2000.0, **extra)


def test_records_round_trip_through_json_with_nested_types():
    arm = _arm(time_to_target={"+1": TargetHit(100, 1.0), "+0.5": None}, blocks=[0, 2])
    again = ArmResult.from_json(arm.to_json())
    assert again == arm and isinstance(again.curve, Curve) and isinstance(again.time_to_target["+1"], TargetHit)
    grown = GrowResult(run_dir=Path("r"), model_dir=Path("r/model"), matched=True, layers=2, reference_val_loss=3.0,
                       target=3.1, tokens=5, wall_time=1.0, verdict="v",
                       rounds=[GrowRound(1, 2, Path("r/round-01-02"), 5, 3.0, 4.0, 1.0, True, [0, 1], Path("m"))])
    back = GrowResult.from_json(grown.to_json())
    assert back == grown and isinstance(back.rounds[0], GrowRound) and back.rounds[0].run_dir == Path("r/round-01-02")


def test_loss_at_flops_interpolates_along_the_curve_and_refuses_beyond_it():
    arm = _arm()
    assert arm.loss_at_flops(0.0) == 5.0 and arm.loss_at_flops(2000.0) == 3.0
    assert arm.loss_at_flops(1500.0) == pytest.approx(3.5)  # halfway from 100 to 200 tokens (10 FLOPs each)
    assert arm.loss_at_flops(2001.0) is None  # the arm never spent that much
    no_curve = ArmResult(layers=2, params=10, non_embedding=8, tokens=0, final_val_loss=3.0, ppl=20.1, wall_time=0.0)
    assert no_curve.loss_at_flops(1.0) is None


def test_a_teachers_forward_and_correction_count_as_spent():
    """Distilling costs the teacher's forward pass per token, and a corrected teacher its training
    before the first step: the same loss is reached only after more FLOPs."""
    arm = _arm(teacher_forward_flops=5.0, correction_flops=1000.0, teacher_flops=2000.0)
    assert arm.total_flops == 4000.0
    assert arm.loss_at_flops(999.0) is None  # still correcting the teacher
    assert arm.loss_at_flops(1000.0) == 5.0 and arm.loss_at_flops(4000.0) == 3.0
    assert arm.loss_at_flops(2500.0) == pytest.approx(4.0)  # 100 tokens at 15 FLOPs after the correction


@pytest.mark.parametrize(
    "growth,total,rounds",
    [
        (GrowConfig(start_layers=24, step_layers=3, max_layers=24), 30, 1),
        (GrowConfig(start_layers=15, step_layers=3), 30, 6),  # 15, 18, ..., 30
        (GrowConfig(start_layers=15, step_layers=4, max_layers=24), 30, 4),  # 15, 19, 23, 24 (capped)
        (GrowConfig(start_layers=12, step_layers=3, min_layers=6, direction="shrink"), 30, 3),  # 12, 9, 6
    ],
)
def test_max_rounds_counts_every_round_the_loop_can_take(growth, total, rounds):
    assert growth.max_rounds(total) == rounds
