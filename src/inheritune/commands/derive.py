"""``derive``: the inherit step of the recipe, as a folder.

``derive(reference, layers=N, out=DIR)`` is ``inheritune derive REFERENCE --layers N --out DIR``:
the same arguments, the same folder (an ordinary HF model folder with derive.json inside), and a
``DeriveResult``. ``inheritune.inherit`` is the same step in memory (a model, nothing written).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from transformers import PreTrainedModel

from inheritune.analysis.selection import as_selector, chosen_blocks, scoring_windows
from inheritune.atomic import check_output_dir
from inheritune.data.shards import open_data
from inheritune.errors import InherituneError
from inheritune.models.card import card_text
from inheritune.models.families import num_layers
from inheritune.models.loading import load, model_name, parameter_count, save_model, tokenizer_fingerprint
from inheritune.models.surgery import INIT_CHOICES, PROVENANCE, spans, stack_blocks
from inheritune.result import CommandResult

HELP = {  # the CLI's help for this command's own parameters (shared ones: inheritune.commands.HELP)
    "data": "prepared data folder: selectors that score blocks read windows of its train split",
    "seed": "seed of the fresh initialisation",
    "layers": "N (the N blocks --by keeps) or indices like 0-11,15",
    "init": "which block parts to inherit",
}
CHOICES = {"init": INIT_CHOICES}


@dataclasses.dataclass
class DeriveResult(CommandResult):
    """What ``derive`` wrote to ``out`` (the derived model's folder); ``report()`` is derive.json."""

    out: Path
    reference: str
    blocks: list[int]  # the reference's block indices, in the derived model's order
    by: str  # the block selector (analysis/selection.py)
    scores: list[float] | None  # the selector's per-block scores of the reference (None: it reads none)
    reference_layers: int
    parameters: int
    init: str
    seed: int
    tokenizer: bool  # whether the folder holds a tokenizer
    seconds: float

    def summary(self) -> str:
        """What the CLI prints (the files hold the rest)."""
        return (
            f"derived {len(self.blocks)}/{self.reference_layers} layers (blocks {spans(self.blocks)} by {self.by}; "
            f"{self.parameters / 1e6:.1f}M parameters, init={self.init}) -> {self.out} in {self.seconds:.1f}s"
        )


def derive(
    reference: str | Path | PreTrainedModel,
    *,
    layers: str | int | list[int],
    out: str | Path,
    by: str = "first-n",
    data: str | Path | None = None,
    init: str = "all",
    seed: int = 0,
    overwrite: bool = False,
    trust_remote_code: bool = False,
    tokenizer=None,
) -> DeriveResult:
    """Copy ``reference``'s chosen blocks into a smaller model and save it to ``out``: ``layers``
    N keeps the N blocks selector ``by`` keeps (``first-n``, the paper's, by default; selectors
    that score blocks read windows of ``data``'s train split), or indices like ``0-11,15``.

    ``init`` picks which block parts are inherited (the rest freshly initialised with ``seed``).
    The output's tokenizer is ``tokenizer``'s (checked against the embedding), else the reference's;
    a weights-only reference derives a weights-only model."""
    start = time.perf_counter()
    if init not in INIT_CHOICES:
        raise InherituneError(f"--init must be one of {', '.join(INIT_CHOICES)}, not '{init}'")
    selector = as_selector(by)
    windows = scoring_windows(data, seed=seed) if data is not None else None  # a bad folder fails before the load
    check_output_dir(out, overwrite)  # fail before the slow load
    ref, tok = load(
        reference,
        tokenizer,
        trust_remote_code,
        needed=False,
        no_tokenizer=f"{out} holds weights only (attach one with --tokenizer REF)",
    )
    if data is not None and tok is not None:
        open_data(data).check_tokenizer(tokenizer_fingerprint(tok), f"the reference {model_name(reference)}")
    if isinstance(layers, (int, str)) and str(layers).strip().isdigit():  # a count: what the selector keeps of it
        selector.check(num_layers(ref.config), int(layers), model_name(reference))
    chosen = chosen_blocks(ref, layers, selector, windows)
    model = stack_blocks(ref, [(ref, i) for i in chosen.keep], init=init, seed=seed, reference=model_name(reference))
    result = DeriveResult(
        out=Path(out),
        reference=model_name(reference),
        blocks=list(chosen.keep),
        by=chosen.by,
        scores=chosen.scores,
        reference_layers=num_layers(ref.config),
        parameters=parameter_count(model),
        init=init,
        seed=seed,
        tokenizer=tok is not None,
        seconds=0.0,
    )
    save_model(
        model,
        tok,
        out,
        overwrite=overwrite,
        reports={"derive.json": result.report()},
        card=card_text(
            getattr(model.config, PROVENANCE),
            {"command": "derive", "selector": chosen.by, "init": init, "training tokens": 0},
            source=model_name(reference),
        ),
    )
    result.seconds = time.perf_counter() - start
    return result
