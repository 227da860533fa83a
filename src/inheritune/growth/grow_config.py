"""How a grow run changes depth, as one dataclass: the arguments of ``grow``, the keys of a
recipe's ``grow`` section and the CLI's options, checked once (:meth:`GrowConfig.check`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from inheritune.errors import InherituneError
from inheritune.models.surgery import GROW_MODES

DIRECTIONS = ("grow", "shrink")


@dataclass
class GrowConfig:
    """``grow``: derive ``start_layers`` blocks, train, then add ``step_layers`` at a time until the
    val loss is within ``margin`` of the reference's (or ``max_layers`` is reached). ``shrink``:
    start at ``start_layers``, drop ``step_layers`` at a time (re-scored on the healed model) while
    the val loss stays within the margin, down to ``min_layers``; the answer is the smallest model
    within it. Which blocks come and go is the block selector's (``--by``)."""

    start_layers: int = 15
    step_layers: int = 3
    max_layers: int | None = None  # grow: stop here (None = the reference's depth)
    min_layers: int = 1  # shrink: stop here
    tokens_per_round: int = 100_000
    margin: float = 0.0  # matched when val loss <= the reference's + margin (the paper: 0)
    mode: str = "reference"  # new blocks: the reference's (the paper) or copies of the model's own ("duplicate")
    direction: str = "grow"  # grow (the paper) or shrink (IteRABRe / iterative Minitron)

    def check(self, name: Callable[[str], str] = lambda field: f"--{field.replace('_', '-')}") -> GrowConfig:
        """Value rules, each message naming the option as its caller spells it (``name``)."""
        for field in ("start_layers", "step_layers", "min_layers", "tokens_per_round"):
            if getattr(self, field) < 1:
                raise InherituneError(f"{name(field)} must be at least 1, not {getattr(self, field)}")
        if self.max_layers is not None and self.max_layers < self.start_layers:
            raise InherituneError(
                f"{name('max_layers')} ({self.max_layers}) is below {name('start_layers')} ({self.start_layers})"
            )
        if self.direction == "shrink" and self.min_layers > self.start_layers:
            raise InherituneError(
                f"{name('min_layers')} ({self.min_layers}) is above {name('start_layers')} ({self.start_layers})"
            )
        for field, allowed in (("mode", GROW_MODES), ("direction", DIRECTIONS)):
            if getattr(self, field) not in allowed:
                raise InherituneError(
                    f"{name(field)} must be one of {', '.join(allowed)}, not '{getattr(self, field)}'"
                )
        return self

    def check_depth(
        self, total: int, reference: str, name: Callable[[str], str] = lambda f: f"--{f.replace('_', '-')}"
    ) -> int:
        """The deepest round against the reference's ``total`` blocks; returns max_layers filled in."""
        deepest = self.start_layers if self.direction == "shrink" else (self.max_layers or total)
        if max(self.start_layers, deepest) > total:
            raise InherituneError(
                f"the reference {reference} has {total} layers: {name('start_layers')} "
                f"({self.start_layers}) and {name('max_layers')} ({self.max_layers}) must not exceed it"
            )
        return total if self.max_layers is None else self.max_layers

    def max_rounds(self, total: int) -> int:
        """How many rounds the run can take at most, from start to the depth limit (``total``: the
        reference's depth, when max_layers is not set)."""
        deepest = self.max_layers or total
        span = deepest - self.start_layers if self.direction == "grow" else self.start_layers - self.min_layers
        return 1 + max(0, -(-span // self.step_layers))
