"""Which of a reference's blocks to keep: one registry of block selectors.

derive, grow (both directions), prune --drop-layers, the recipe and the reports all choose
blocks through :func:`select`, and their ``--by`` choices and help text come from ``SELECTORS``.
A new criterion is one entry here plus its test.

A selector answers one question: *which k blocks to drop*, among the blocks it may drop
(``droppable``). Keeping n of L blocks is dropping L - n; growing a model that holds the blocks
S back to n' blocks is dropping L - n' of the blocks it does not hold (so a grown model stays an
order-preserving subsequence of the reference, new blocks at their original positions);
shrinking a healed model is dropping more of its own blocks, re-scored on the healed model.

| name | rule (lower score = dropped first unless said) |
|---|---|
| ``first-n`` | the paper: keep the first n (drop the last blocks) |
| ``first-last:K`` | keep the last K blocks always, then the first ones (growth inserts before the tail) |
| ``block-influence`` | ShortGPT: drop the blocks of lowest 1 - cos(input, output) |
| ``angular`` | Gromov et al.: drop the contiguous slice [l, l+k) of least angular distance, never the last block |
| ``lazy`` | the seeds' sink measure: drop the blocks whose heads put most mass on one column, never block 0 |
| ``importance`` | drop the blocks of lowest summed head importance (|dL/dxi|) + FFN knock-out loss increase |
| ``loss`` | Shortened LLaMA, contiguous: drop the slice whose removal gives the lowest loss on the windows |
| ``loss-greedy`` | IteRABRe-style: drop one block at a time, each time the one whose removal costs least loss |
| ``list:SPEC`` | keep exactly the blocks SPEC (``0-11,27-29``) |

``angular``'s distance is arccos(cos(x_l, x_l+k)) / pi; ``lazy``'s measure is the seeds' attention-degeneration
sink measure.

Every score is computed on ``windows``: token windows of the data's *train* split (never the
validation split that later scores the model), ``WINDOWS`` x ``WINDOW_LEN`` tokens by default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import cast

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from inheritune.analysis.block_scores import block_importance, column_mass, mean_cosines, window_loss
from inheritune.analysis.depth import angular_distance, block_influence
from inheritune.analysis.sampling import sample_sequences
from inheritune.data.shards import TokenData, open_data
from inheritune.errors import InherituneError
from inheritune.models.families import num_layers
from inheritune.models.surgery import parse_layers
from inheritune.options import closest, shown
from inheritune.specs import Spec, block_indices, within

WINDOWS, WINDOW_LEN = 16, 256  # scoring windows of the train split: 4,096 tokens


LOSS_WINDOWS = 4  # the loss selectors score each candidate on the first 4 windows (1,024 tokens, the same for


@dataclasses.dataclass(frozen=True)
class Selection:
    """The blocks a selector keeps, what it dropped and the per-block scores it read (if any)."""

    by: str
    keep: list[int]  # sorted indices of the model's blocks that stay
    dropped: list[int]
    scores: list[float] | None  # one number per block (see the selector's meaning)
    meaning: str

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


class Scoring:
    """What selectors read about one model: its blocks' scores on ``windows``, each computed once."""

    def __init__(self, model: PreTrainedModel, windows: torch.Tensor | None):
        self.model, self.windows = model, windows
        self.layers = num_layers(model.config)
        self.greedy: dict[tuple[int, ...], list[int]] = {}  # loss-greedy's removal order per droppable set

    @property
    def _windows(self) -> torch.Tensor:
        """The windows: :func:`choose` runs a selector that reads them only when they are given."""
        return cast(torch.Tensor, self.windows)

    @cached_property
    def cosines(self) -> torch.Tensor:
        return mean_cosines(self.model, self._windows)

    @cached_property
    def column_mass(self) -> list[float]:
        return column_mass(self.model, self._windows)

    @cached_property
    def importance(self) -> list[float]:
        return block_importance(self.model, self._windows)

    def loss_without(self, dropped: Sequence[int]) -> float:
        """Mean next-token loss on the first ``LOSS_WINDOWS`` windows with ``dropped`` blocks skipped (= removed)."""
        return window_loss(self.model, self._windows[:LOSS_WINDOWS], dropped)


@dataclasses.dataclass(frozen=True)
class Selector:
    """One registry entry: ``drop(scoring, k, droppable, spec)`` returns the k blocks to drop."""

    name: str
    meaning: str
    drop: Callable[[Scoring, int, list[int], BlockSelector], list[int]]
    needs_windows: bool = True
    arg: str | None = None  # the parameter after ':' (e.g. K of first-last:K), None = takes none
    scores: Callable[[Scoring], list[float]] | None = None  # per-block numbers for reports


def _lowest(
    score: Callable[[Scoring], Sequence[float]], sign: float = 1.0, spare: Callable[[Scoring], set] = lambda s: set()
):
    """A rule: drop the k droppable blocks of lowest ``sign * score`` (``spare``: never dropped)."""

    def drop(s: Scoring, k: int, droppable: list[int], _spec: BlockSelector) -> list[int]:
        values = score(s)
        pool = [i for i in droppable if i not in spare(s)]
        _enough(pool, k)
        return sorted(sorted(pool, key=lambda i: (sign * values[i], i))[:k])

    return drop


def _enough(pool: Sequence[int], k: int) -> None:
    if len(pool) < k:
        raise InherituneError(f"cannot drop {k} blocks: only {len(pool)} may go under this selector")


def _runs(droppable: Sequence[int], k: int, last: int | None = None) -> list[int]:
    """Starts l of contiguous slices [l, l+k) inside ``droppable`` (not holding block ``last``)."""
    allowed = set(droppable) - ({last} if last is not None else set())
    return [first for first in sorted(allowed) if all(i in allowed for i in range(first, first + k))]


def _angular(s: Scoring, k: int, droppable: list[int], _spec: BlockSelector) -> list[int]:
    starts = _runs(droppable, k, last=s.layers - 1)
    if not starts:
        raise InherituneError(f"angular: no contiguous slice of {k} droppable blocks before the last block")
    distance = angular_distance(s.cosines)
    start = min(starts, key=lambda first: (float(distance[first, first + k]), first))
    return list(range(start, start + k))


def _loss_slice(s: Scoring, k: int, droppable: list[int], _spec: BlockSelector) -> list[int]:
    starts = _runs(droppable, k)
    if not starts:
        raise InherituneError(f"loss: no contiguous slice of {k} droppable blocks")
    bar = tqdm(starts, desc="loss of each slice", unit="slice", disable=None, leave=False)
    start = min(bar, key=lambda first: (s.loss_without(range(first, first + k)), first))
    return list(range(start, start + k))


def _loss_greedy(s: Scoring, k: int, droppable: list[int], _spec: BlockSelector) -> list[int]:
    """Removal order is nested (the first k of a longer run), so it is kept and extended, not redone."""
    _enough(droppable, k)
    order = s.greedy.setdefault(tuple(droppable), [])
    for _ in tqdm(range(len(order), k), desc="greedy block removal", unit="block", disable=None, leave=False):
        pool = [i for i in droppable if i not in order]
        order.append(min(pool, key=lambda i: (s.loss_without([*order, i]), i)))
    return sorted(order[:k])


def _first_last(s: Scoring, k: int, droppable: list[int], spec: BlockSelector) -> list[int]:
    tail = spec.tail
    spec.check(s.layers, s.layers - k, "the model")
    pool = [i for i in droppable if i < s.layers - tail]
    _enough(pool, k)
    return sorted(pool)[len(pool) - k :]


def _listed(s: Scoring, k: int, droppable: list[int], spec: BlockSelector) -> list[int]:
    spec.check(s.layers, s.layers - k, "the model")
    keep = set(spec.listed)
    drop = [i for i in range(s.layers) if i not in keep]
    if not set(drop) <= set(droppable):
        raise spec.refuse("a listed set of blocks cannot be grown")
    return drop


SELECTORS: dict[str, Selector] = {
    s.name: s
    for s in (
        Selector(
            "first-n",
            "the paper's choice: keep the first n blocks",
            _lowest(lambda s: range(s.layers), -1.0),
            needs_windows=False,
            scores=lambda s: [float(i) for i in range(s.layers)],
        ),
        Selector(
            "first-last",
            "the first n-K blocks and the last K (growth inserts before the tail)",
            _first_last,
            needs_windows=False,
            arg="K",
        ),
        Selector(
            "block-influence",
            "ShortGPT: drop the blocks of lowest 1 - mean cos(block input, output)",
            _lowest(lambda s: block_influence(s.cosines)),
            scores=lambda s: block_influence(s.cosines),
        ),
        Selector(
            "angular",
            "Gromov et al.: drop the contiguous slice minimising arccos(cos(x_l, x_l+k)) / pi, never the last block",
            _angular,
            scores=lambda s: [float(angular_distance(s.cosines)[i, i + 1]) for i in range(s.layers)],
        ),
        Selector(
            "lazy",
            "attention degeneration: drop the blocks whose heads put most mass on one column, never block 0",
            _lowest(lambda s: s.column_mass, -1.0, spare=lambda s: {0}),
            scores=lambda s: s.column_mass,
        ),
        Selector(
            "importance",
            "drop the blocks of lowest summed head importance + FFN knock-out loss increase",
            _lowest(lambda s: s.importance),
            scores=lambda s: s.importance,
        ),
        Selector(
            "loss",
            "Shortened LLaMA, contiguous: drop the slice whose removal costs least loss on the windows",
            _loss_slice,
        ),
        Selector(
            "loss-greedy", "drop one block at a time, each time the one whose removal costs least loss", _loss_greedy
        ),
        Selector("list", "keep exactly the listed blocks (list:0-11,27-29)", _listed, needs_windows=False, arg="SPEC"),
    )
}


NAMES = tuple(f"{s.name}:{s.arg}" if s.arg else s.name for s in SELECTORS.values())


HELP = "; ".join(f"{name}: {s.meaning}" for name, s in zip(NAMES, SELECTORS.values(), strict=True))


class BlockSelector(Spec):
    """A selector as written, parsed once: ``NAME`` or ``NAME:ARG`` (``first-last:K``: ``tail``;
    ``list:SPEC``: ``listed``); ``selector`` is its registry entry."""

    syntax = "a block selector: " + ", ".join(NAMES)
    selector: Selector
    tail: int
    listed: tuple[int, ...]

    def _parse(self) -> None:
        name, colon, arg = str(self).partition(":")
        if name not in SELECTORS:
            raise self.refuse(f"not a block selector{closest(name, SELECTORS)}; one of {', '.join(NAMES)}")
        self.selector, self.tail, self.listed = SELECTORS[name], 0, ()
        wants = self.selector.arg
        if (wants is None) != (not colon):
            raise self.refuse(f"{name} needs a parameter ({name}:{wants})" if wants else f"{name} takes no parameter")
        if name == "first-last":
            if not arg.isdigit():
                raise self.refuse("K must be a whole number >= 0 (the last K blocks are always kept)")
            self.tail = int(arg)
        elif name == "list":
            try:
                self.listed = block_indices(arg)
            except ValueError as e:
                raise self.refuse(str(e)) from None

    @property
    def name(self) -> str:
        return self.selector.name

    @property
    def needs_windows(self) -> bool:
        return self.selector.needs_windows

    def check(self, layers: int, keep: int | Sequence[int], model: str) -> None:
        """What ``model`` (``layers`` blocks) makes of it when asked to keep ``keep`` blocks (one count,
        or each depth a run asks for): checked from its config, before anything is written."""
        depths = [keep] if isinstance(keep, int) else list(keep)
        if self.name == "first-last" and not self.tail < layers:
            raise self.refuse(f"K must be in 0..{layers - 1} for {model} ({layers} blocks)")
        if self.name == "list":
            within(self, self.listed, layers, model)
            other = [d for d in depths if d != len(self.listed)]
            if other:
                raise self.refuse(
                    f"keeps {len(self.listed)} blocks, so it cannot make a {other[0]}-block model (nor grow one)"
                )


def as_selector(by: str | BlockSelector, key: str = "by") -> BlockSelector:
    """A Python argument or CLI string as a selector (a value already parsed is kept with its key)."""
    return by if isinstance(by, BlockSelector) else BlockSelector(by, shown(key))


def select(
    model: PreTrainedModel,
    n: int,
    by: str | BlockSelector = "first-n",
    windows: torch.Tensor | None = None,
    droppable: Sequence[int] | None = None,
) -> Selection:
    """The ``n`` blocks of ``model`` to keep by selector ``by``: all but the L - n it drops among
    ``droppable`` (default: any block). ``windows`` are train-split token windows, needed by the
    selectors that score blocks."""
    return choose(Scoring(model, windows), n, by, droppable)


def choose(scoring: Scoring, n: int, by: str | BlockSelector, droppable: Sequence[int] | None = None) -> Selection:
    """:func:`select` on a :class:`Scoring` that several choices share (a sweep scores each block once)."""
    spec = as_selector(by)
    selector = spec.selector
    layers, model = scoring.layers, scoring.model
    if not 1 <= n <= layers:
        raise InherituneError(f"cannot keep {n} blocks of a {layers}-block model (1..{layers})")
    if selector.needs_windows and scoring.windows is None:
        raise spec.refuse("this selector scores blocks on token windows: give --data DIR (a prepared data folder)")
    droppable = sorted(range(layers) if droppable is None else droppable)
    was_training = model.training
    model.eval()
    try:
        dropped = selector.drop(scoring, layers - n, droppable, spec) if n < layers else []
        scores = selector.scores(scoring) if selector.scores is not None else None
    finally:
        model.train(was_training)
    keep = [i for i in range(layers) if i not in set(dropped)]
    return Selection(by=str(spec), keep=keep, dropped=sorted(dropped), scores=scores, meaning=selector.meaning)


def chosen_blocks(
    reference: PreTrainedModel,
    layers: int | str | Sequence[int],
    by: str | BlockSelector = "first-n",
    windows: torch.Tensor | None = None,
) -> Selection:
    """derive's choice: a count n goes to selector ``by``; explicit indices are kept as given."""
    total = num_layers(reference.config)
    if isinstance(layers, str) and layers.strip().isdigit():
        layers = int(layers)
    if isinstance(layers, int):
        parse_layers(layers, total)  # the range check and its message
        return select(reference, layers, by, windows)
    if by != "first-n":
        raise InherituneError(f"--layers {layers} lists the blocks itself: drop --by {by}, or give a count")
    indices = parse_layers(layers, total)
    return Selection(
        by="list",
        keep=indices,
        dropped=[i for i in range(total) if i not in indices],
        scores=None,
        meaning=SELECTORS["list"].meaning,
    )


def scoring_windows(
    data: str | Path | TokenData, n: int = WINDOWS, seq_len: int = WINDOW_LEN, seed: int = 0
) -> torch.Tensor:
    """``[n, seq_len]`` windows of the data folder's train split: blocks are chosen on other tokens
    than the val split that scores the result."""
    token_data = data if isinstance(data, TokenData) else open_data(data)
    tokens = token_data.tokens("train")
    return sample_sequences(tokens, n, min(seq_len, len(tokens)), seed)  # a small corpus: windows as long as it
