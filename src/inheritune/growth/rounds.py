"""Grow until matched, the component under `inheritune grow` and the recipe's arms: the Inheritune loop
of derive -> train -> (grow -> train)* -> verdict.

Round 1 derives N of the reference's blocks, the ones a block selector keeps (``--by``; the
paper's ``first-n`` by default), and trains them for T tokens. While the round's validation loss
is above the reference's own (plus a margin), the trained model grows by K blocks (the reference
blocks the selector ranks next, at their original positions, or copies of its own) and trains
again, up to M layers. ``shrink`` goes the other way: start deep, drop K blocks of the healed
model by the selector, heal, repeat while within the margin. Every round is an ordinary train run
in ``RUN/round-XX-LL/``; a finished round has its ``result.json``, so a killed grow run resumes in
the round it was in. A grow run that replaces another one (``overwrite``) is built in ``.RUN.new``
beside it and swapped in once its summary is written: the old run survives any failure, and
rerunning the same command continues the new one.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from inheritune.analysis.selection import BlockSelector, as_selector, scoring_windows
from inheritune.atomic import (
    RunFolder,
    atomic_dir,
    atomic_write_json,
    current_paths,
    final_paths,
    read_json,
)
from inheritune.data.shards import TokenData, open_data
from inheritune.evaluation.reference_loss import data_key, reference_val_loss
from inheritune.growth.blocks import choose_blocks, round_model
from inheritune.growth.grow_config import GrowConfig
from inheritune.models.card import write_card
from inheritune.models.families import num_layers
from inheritune.models.loading import load_model, load_tokenizer, tokenizer_fingerprint
from inheritune.models.surgery import spans
from inheritune.reporting.arm_numbers import Yardstick
from inheritune.result import CommandResult, Record
from inheritune.training import TrainConfig
from inheritune.training.teacher import check_teacher, check_teacher_states
from inheritune.training.train_config import make_config
from inheritune.training.train_result import TrainResult
from inheritune.training.trainer import train_resumable

SETTINGS = "grow.json"  # the arguments a grow run was started with: a rerun must match them to resume


SUMMARY = "summary.json"  # written last: its presence means the grow run finished


_PRINT = partial(print, flush=True)  # the default log: each line shown at once


@dataclass
class GrowRound(Record):
    """One round of a grow run: its depth, blocks, tokens and where its train run ended."""

    round: int
    layers: int
    run_dir: Path
    tokens: int
    val_loss: float
    start_val_loss: float
    wall_time: float
    matched: bool
    blocks: list[int]  # the reference blocks the round's model holds
    model_dir: Path


@dataclass
class GrowResult(CommandResult):
    """What ``grow`` wrote; summary.json in the run folder holds it."""

    run_dir: Path
    model_dir: Path  # the smallest matching model, or the last round's when none matched
    matched: bool
    layers: int
    reference_val_loss: float
    target: float  # reference_val_loss + margin
    rounds: list[GrowRound]
    tokens: int  # training tokens over all rounds
    wall_time: float  # training seconds over all rounds
    verdict: str
    by: str = "first-n"  # the block selector
    yardstick: str = "the reference"  # what target is the val loss of (plus the margin)
    blocks: list[int] = dataclasses.field(default_factory=list)  # the reference blocks model_dir holds

    def card(self) -> dict:
        """The model card's facts (models/card.py)."""
        return {
            "command": "grow",
            "selector": self.by,
            "training tokens": self.tokens,
            "val loss": round(self.rounds[-1].val_loss if self.rounds else float("nan"), 4),
            "reference val loss": round(self.reference_val_loss, 4),
            "verdict": self.verdict,
        }

    def summary(self) -> str:
        """What the CLI prints (the files hold the rest)."""
        return f"model -> {self.model_dir}; summary -> {self.run_dir / 'summary.json'}"


def round_dir(out: Path, index: int, layers: int) -> Path:
    return out / f"round-{index:02d}-{layers:02d}"


def _settings(reference: str, data: TokenData, growth: GrowConfig, by: str, config: TrainConfig) -> dict:
    return {
        "reference": reference,
        "data": str(data.root),
        "data_key": data_key(data),
        **dataclasses.asdict(growth),
        "by": by,
        "train": dataclasses.asdict(config),
    }


def _copy_model(src: Path, dst: Path) -> None:
    with atomic_dir(dst, overwrite=True) as tmp:
        for f in src.iterdir():
            if f.is_file():
                shutil.copy2(f, tmp / f.name)


def grow_until_matched(
    reference: str | Path,
    data: str | Path,
    out: str | Path,
    growth: GrowConfig,
    config: TrainConfig | None = None,
    *,
    by: BlockSelector | str = "first-n",
    overwrite: bool = False,
    reference_model: PreTrainedModel | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    yardstick: Yardstick | None = None,
    teacher_model: PreTrainedModel | None = None,
    reference_cache: Path | None = None,
    log: Callable[[str], None] = _PRINT,
) -> GrowResult:
    """Derive ``growth.start_layers`` blocks of ``reference`` (chosen by ``by``), train, and grow
    (or shrink) by ``growth.step_layers`` until the val loss is <= the reference's + margin (grow)
    or no longer is (shrink), within the depth limits.

    With ``config.distill_from`` set to ``"reference"`` (or the reference's own name) every round
    distils from the reference already in memory. Rerunning with the same arguments resumes (or
    returns the finished result). Round ``r`` continues the windows where round ``r - 1`` stopped
    (one order of the data, ``skip_tokens``), so rounds see different windows and a comparison
    arm trained on all the rounds' tokens sees the same ones (the teacher cache computes each
    once); the blocks each round holds are recorded beside it
    (``round-XX-LL.blocks.json``), so a resumed round rebuilds the same model without re-scoring.

    ``yardstick`` replaces the reference's own val loss as the target (before the margin);
    ``teacher_model`` is ``config.distill_from`` already in memory; ``reference_cache`` is where the
    reference's val loss is cached (default: the grow run's own reference.json).
    """
    out = Path(out)
    config = make_config(config, steps=None, tokens=growth.tokens_per_round)
    if config.distill_from == "reference":
        config = dataclasses.replace(config, distill_from=str(reference))
    growth.check()
    selector = as_selector(by)  # a Python caller may pass the spec as text
    token_data = open_data(data)
    if config.distill_from not in (None, str(reference)) and config.distill_alpha > 0:
        check_teacher(config.distill_from, token_data, config.trust_remote_code)  # before any folder is made
    settings = final_paths(_settings(str(reference), token_data, growth=growth, by=selector, config=config))
    settings["yardstick"] = yardstick.name if yardstick is not None else "the reference"
    folder = RunFolder.open(out, SETTINGS, settings, "different settings", overwrite)  # before the slow load
    ref = (
        reference_model
        if reference_model is not None
        else load_model(reference, trust_remote_code=config.trust_remote_code)
    )
    tok = tokenizer if tokenizer is not None else load_tokenizer(reference, config.trust_remote_code)
    token_data.check_tokenizer(tokenizer_fingerprint(tok), f"the reference {reference}")
    max_layers = growth.check_depth(num_layers(ref.config), str(reference))
    growth = dataclasses.replace(growth, max_layers=max_layers)
    _check_specs(selector, config, growth, ref, str(reference))
    with folder.build() as work:  # every input checked: a replacement is built beside the old run
        if work != out:
            log(f"building the new grow run in {work}; {out} is kept until it is complete")
        if (work / SUMMARY).is_file():
            summary = read_json(work / SUMMARY, "grow summary")
            log(f"grow run {out} already finished: {summary['verdict']}")
        else:
            rounds = _Rounds(
                ref,
                str(reference),
                tok=tok,
                data=token_data,
                out=work,
                config=config,
                growth=growth,
                by=selector,
                teacher=teacher_model if teacher_model is not None else teacher_of(config, reference, ref),
                yardstick=yardstick,
                reference_cache=reference_cache,
                log=log,
            )
            summary = rounds.run()
    return GrowResult.from_json(current_paths(summary))


def _check_specs(
    selector: BlockSelector, config: TrainConfig, growth: GrowConfig, ref: PreTrainedModel, reference: str
) -> None:
    """The selector, the trained blocks and top:K against the depths the rounds visit and the teacher,
    before any folder is made."""
    assert growth.max_layers is not None  # check_depth filled it in
    last = growth.max_layers if growth.direction == "grow" else growth.min_layers
    selector.check(num_layers(ref.config), [growth.start_layers, last], reference)
    shallowest = min(growth.start_layers, last)
    config.train_blocks.check_depth(shallowest, f"the {shallowest}-layer round")
    teacher = ref if config.distill_from == reference else config.distill_from
    check_teacher_states(config.teacher_states, teacher, config.trust_remote_code)


def teacher_of(config: TrainConfig, reference: str | Path, ref: PreTrainedModel) -> PreTrainedModel | None:
    """The reference in memory when the rounds distil from it (no second copy loaded)."""
    return ref if config.distill_from == str(reference) else None


@dataclass
class _Rounds:
    """One grow run's rounds, in ``out`` (the folder being written): derive, train, change depth
    until the verdict; ``run`` returns the summary it writes last (paths as after a swap)."""

    ref: PreTrainedModel
    reference: str
    tok: PreTrainedTokenizerBase
    data: TokenData
    out: Path
    config: TrainConfig
    growth: GrowConfig
    by: BlockSelector
    teacher: PreTrainedModel | None
    yardstick: Yardstick | None
    reference_cache: Path | None
    log: Callable[[str], None]

    def run(self) -> dict:
        g, total = self.growth, num_layers(self.ref.config)
        assert g.max_layers is not None  # filled in by check_depth before any round
        ref_loss = reference_val_loss(
            self.ref,
            self.reference,
            data=self.data,
            cache=self.reference_cache or self.out / "reference.json",
            batch_size=self.config.batch_size,
        )["loss"]
        yard = self.yardstick or Yardstick(f"the reference ({total} layers)", ref_loss)
        target = yard.loss + g.margin
        self.log(
            f"reference {self.reference}: {total} layers, val loss {ref_loss:.4f}; target <= {target:.4f} "
            f"({yard.name}: {yard.loss:.4f}, + margin {g.margin:g})"
        )
        windows = scoring_windows(self.data, seed=self.config.seed) if self.by.needs_windows else None
        rounds: list[GrowRound] = []
        layers, previous = g.start_layers, None
        while True:
            result, row = self._round(
                len(rounds) + 1,
                layers,
                previous=previous,
                windows=windows,
                target=target,
                done=sum(r.tokens for r in rounds),
            )
            rounds.append(row)
            if g.direction == "grow" and (row.matched or layers >= g.max_layers):
                break
            if g.direction == "shrink" and (not row.matched or layers <= g.min_layers):
                break
            step = g.step_layers if g.direction == "grow" else -g.step_layers
            previous, layers = Path(result.model_dir), min(max(layers + step, g.min_layers), g.max_layers)
        return self._summary(rounds, ref_loss, yard, target)

    def _round(
        self, index: int, layers: int, previous: Path | None, windows, target: float, done: int
    ) -> tuple[TrainResult, GrowRound]:
        """Round ``index``: its model, trained on the windows after the ``done`` tokens of the rounds before."""
        run_dir = round_dir(self.out, index, layers)
        seed = self.config.seed + index - 1  # of the new blocks' initialisation
        trained = load_model(previous) if previous is not None else None
        record = self.out / f"{run_dir.name}.blocks.json"  # the choice, kept: a resumed round is not re-scored
        if record.is_file():
            chosen = read_json(record, "round blocks")
        else:
            chosen = choose_blocks(
                self.ref, trained, layers=layers, by=self.by, windows=windows, direction=self.growth.direction
            )
            atomic_write_json(record, chosen)
        model = round_model(
            self.ref, self.reference, trained=trained, blocks=chosen["blocks"], mode=self.growth.mode, seed=seed
        )
        if (run_dir / "result.json").is_file():
            self.log(f"round {index} ({layers} layers): finished earlier, result reused")
        else:
            how = (
                "derived"
                if trained is None
                else f"{'grown' if layers > num_layers(trained.config) else 'shrunk'} ({self.growth.mode})"
            )
            self.log(
                f"round {index}: {layers} layers {how}, reference blocks {spans(chosen['blocks'])} (by {self.by}), "
                f"training {self.config.tokens} tokens -> {run_dir}"
            )
        result = train_resumable(
            model,
            self.data.root,
            run_dir=run_dir,
            config=dataclasses.replace(self.config, skip_tokens=done),
            tokenizer=self.tok,
            teacher=self.teacher,
        )
        matched = result.final_val_loss <= target
        self.log(
            f"round {index} ({layers} layers): val loss {result.final_val_loss:.4f} vs target {target:.4f} -> "
            + ("matched" if matched else "not matched")
        )
        return result, GrowRound(
            round=index,
            layers=layers,
            run_dir=run_dir,
            tokens=result.tokens,
            val_loss=result.final_val_loss,
            start_val_loss=result.val_history[0].val_loss,
            wall_time=result.wall_time,
            matched=matched,
            blocks=chosen["blocks"],
            model_dir=result.model_dir,
        )

    def _summary(self, rounds: list[GrowRound], ref_loss: float, yard: Yardstick, target: float) -> dict:
        """The verdict and the answer: grow's last round; shrink's smallest round within the target."""
        g = self.growth
        within = [r for r in rounds if r.matched]
        answer = (within[-1] if within else rounds[0]) if g.direction == "shrink" else rounds[-1]
        matched = answer.matched
        limit = f"the {g.max_layers}-layer limit" if g.direction == "grow" else f"{answer.layers} layers"
        if matched:
            verdict = (
                f"matched: {answer.layers} layers reach val loss {answer.val_loss:.4f} <= {target:.4f} "
                f"({yard.name}: {yard.loss:.4f}) after {len(rounds)} round(s)"
            )
        else:
            verdict = (
                f"not matched: best {min(r.val_loss for r in rounds):.4f} > target {target:.4f} "
                f"({yard.name}: {yard.loss:.4f}) at {limit} after "
                f"{len(rounds)} round(s); {self.out / 'model'} is the {'last' if g.direction == 'grow' else 'first'} "
                f"round's model"
            )
        _copy_model(answer.model_dir, self.out / "model")
        grown = GrowResult(
            run_dir=self.out,
            model_dir=self.out / "model",
            matched=matched,
            layers=answer.layers,
            reference_val_loss=ref_loss,
            target=target,
            rounds=rounds,
            tokens=sum(r.tokens for r in rounds),
            wall_time=sum(r.wall_time for r in rounds),
            verdict=verdict,
            by=self.by,
            yardstick=yard.name,
            blocks=answer.blocks,
        )
        write_card(self.out / "model", grown.card(), source=self.reference)
        summary = final_paths(grown.to_json())
        atomic_write_json(self.out / SUMMARY, summary)
        self.log(final_paths(verdict))
        return summary
