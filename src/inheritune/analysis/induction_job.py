"""``induction``: prefix-matching and copying score per head on repeated random tokens.

``induction(model, out=OUT)`` is ``inheritune induction MODEL --out OUT``: the same arguments, the
same folder (induction.json, induction.csv, heatmaps), and an ``InductionResult``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
from transformers import PreTrainedModel

from inheritune.analysis.induction_heads import candidate_tokens, induction_scores, top_heads
from inheritune.atomic import atomic_dir, atomic_write_json, atomic_write_text, check_output_dir, csv_text
from inheritune.errors import InherituneError
from inheritune.models.loading import load, model_name
from inheritune.models.tokens import bos_id, shared_vocab, special_ids
from inheritune.options import positive
from inheritune.reporting.plots import heatmap
from inheritune.result import CommandResult

NO_TOKENIZER = "special token ids (left out of the random tokens) come from its config"


@dataclasses.dataclass
class InductionResult(CommandResult):
    """What ``induction`` wrote to ``out``; ``report()`` is induction.json."""

    out: Path
    model: str
    seg_len: int
    repeats: int
    seeds: int
    exclude: float
    token_ids: list[int]  # [lowest, highest] id the random tokens were drawn from
    bos: int | None
    prefix: list[list[float]]  # [layers][heads] prefix-matching score
    copying: list[list[float]]  # [layers][heads] copying score
    top_heads: list  # [{"layer", "head", "prefix", "copying"}, ...], best prefix score first
    seconds: float

    def summary(self) -> str:
        """What the CLI prints (the files hold the rest)."""
        lines = []
        lines.append(
            "top induction heads (layer.head prefix copying): "
            + ", ".join(f"{h['layer']}.{h['head']} {h['prefix']:.2f} {h['copying']:+.2f}" for h in self.top_heads[:5])
        )
        lines.append(f"-> {self.out} in {self.seconds:.1f}s")
        return "\n".join(lines)


def induction(
    model: str | Path | PreTrainedModel,
    *,
    out: str | Path,
    seg_len: int = 25,
    repeats: int = 4,
    seeds: int = 100,
    exclude: float = 0.04,
    top: int = 10,
    batch_size: int | None = None,
    overwrite: bool = False,
    trust_remote_code: bool = False,
    tokenizer=None,
    device: str = "cpu",
    device_map: str | None = None,
) -> InductionResult:
    """Prefix-matching and copying scores of every head of ``model`` on ``seeds`` random segments
    of ``seg_len`` tokens repeated ``repeats`` times, and the ``top`` induction heads.

    Writes ``out``: induction.json (``result.report()``), induction.csv and two heatmaps."""
    start = time.perf_counter()
    for value, name in ((seg_len, "--seg-len"), (seeds, "--seeds"), (top, "--top"), (batch_size, "--batch-size")):
        if value is not None:  # batch_size: None is the memory budget's
            positive(value, name)
    if repeats < 2:
        raise InherituneError(f"induction needs at least 2 repeats, not {repeats}")
    if not 0 <= exclude < 0.5:
        raise InherituneError(f"--exclude must be in [0, 0.5), not {exclude:g}")
    check_output_dir(out, overwrite)  # fail before the slow load
    loaded, tok = load(
        model,
        tokenizer,
        trust_remote_code,
        needed=False,
        no_tokenizer=NO_TOKENIZER,
        device=device,
        device_map=device_map,
    )
    bos = bos_id(loaded, tok)
    candidates = candidate_tokens(shared_vocab(loaded, tok), exclude, special_ids(loaded, tok))
    scores = induction_scores(
        loaded, candidates, seg_len=seg_len, repeats=repeats, seeds=seeds, bos=bos, batch_size=batch_size
    )
    prefix, copying = scores["prefix"], scores["copying"]
    result = InductionResult(
        out=Path(out),
        model=model_name(model),
        seg_len=seg_len,
        repeats=repeats,
        seeds=seeds,
        exclude=float(exclude),
        token_ids=[int(candidates.min()), int(candidates.max())],
        bos=bos,
        prefix=prefix.tolist(),
        copying=copying.tolist(),
        top_heads=top_heads(prefix, copying, top),
        seconds=0.0,
    )
    with atomic_dir(out, overwrite) as tmp:
        _write(tmp, result)
    result.seconds = time.perf_counter() - start
    return result


def _write(folder: Path, result: InductionResult) -> None:
    prefix, copying = np.asarray(result.prefix), np.asarray(result.copying)
    rows = [
        [i // prefix.shape[1], i % prefix.shape[1], f"{p:.6g}", f"{c:.6g}"]
        for i, (p, c) in enumerate(zip(prefix.ravel(), copying.ravel(), strict=True))
    ]
    atomic_write_json(folder / "induction.json", result.report())
    atomic_write_text(folder / "induction.csv", csv_text(["layer", "head", "prefix_matching", "copying"], rows))
    heatmap(prefix, folder / "prefix_matching.png", "prefix-matching score", cbar="attention", vmin=0, vmax=1)
    bound = float(np.abs(copying).max()) or 1.0
    heatmap(
        copying,
        folder / "copying.png",
        "copying score (direct logit increase)",
        cbar="logit",
        cmap="RdBu_r",
        vmin=-bound,
        vmax=bound,
    )
