"""`inheritune grow`: the grow options read into a GrowConfig, a block selector and a TrainConfig per
round, then ``growth.rounds.grow_until_matched`` (derive -> train -> (grow -> train)* -> verdict)."""

from __future__ import annotations

from pathlib import Path

from inheritune.analysis.selection import HELP as SELECTOR_HELP
from inheritune.analysis.selection import as_selector
from inheritune.growth.grow_config import DIRECTIONS, GROW_MODES, GrowConfig
from inheritune.growth.rounds import GrowResult, grow_until_matched
from inheritune.training import TrainConfig
from inheritune.training.train_config import make_config, read_recipe

HELP = {  # the CLI's help for this command's own parameters (shared ones: inheritune.commands.HELP)
    "by": f"which reference blocks each round holds: {SELECTOR_HELP}",
    "start_layers": "N: layers of the first round",
    "step_layers": "K: layers added (shrink: dropped) per round",
    "max_layers": "M: stop growing here (default: the reference's depth)",
    "min_layers": "shrink: stop here",
    "tokens_per_round": "T: training tokens per round",
    "margin": "E: matched when val loss <= reference + E",
    "direction": "grow (add blocks until matched) or shrink (drop blocks of the healed model while within the margin)",
    "mode": "new blocks: the reference's or copies of the model's own blocks just before them",
}
CHOICES = {"direction": DIRECTIONS, "mode": GROW_MODES}


def grow(
    reference: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    start_layers: int,
    step_layers: int = 3,
    max_layers: int | None = None,
    min_layers: int = 1,
    tokens_per_round: int = 100_000,
    margin: float = 0.0,
    by: str = "first-n",
    direction: str = "grow",
    mode: str = "reference",
    overwrite: bool = False,
    config: TrainConfig | dict | str | Path | None = None,
    **options,
) -> GrowResult:
    """``inheritune grow REFERENCE --data DIR --out RUN --start-layers N [...]``, same arguments:
    ``by`` chooses the blocks (a selector of ``analysis.selection``), ``direction`` grows (the
    paper) or shrinks; ``config`` (a TrainConfig, a dict of its fields or a YAML recipe) and the
    TrainConfig fields as keywords set how every round trains (``tokens_per_round`` tokens each)."""
    growth = GrowConfig(
        start_layers=start_layers,
        step_layers=step_layers,
        max_layers=max_layers,
        min_layers=min_layers,
        tokens_per_round=tokens_per_round,
        margin=margin,
        mode=mode,
        direction=direction,
    )
    recipe = read_recipe(config) if isinstance(config, (str, Path)) else config
    per_round = make_config(recipe, **options, steps=None, tokens=tokens_per_round)
    return grow_until_matched(
        reference, data, out=out, growth=growth, config=per_round, by=as_selector(by, "by"), overwrite=overwrite
    )
