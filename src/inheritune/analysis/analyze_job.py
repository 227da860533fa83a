"""``analyze``: lazy layers, layer redundancy and how many layers to inherit, as a folder.

``analyze(model, data=DIR | text=FILE, out=OUT)`` is ``inheritune analyze MODEL --data DIR --out
OUT``: the same arguments, the same folder (analysis.json, one CSV per metric, PNGs), and an
``AnalyzeResult`` holding what analysis.json holds.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import cast

import torch
from transformers import PreTrainedModel

from inheritune.analysis.lazy_layers import (
    BI_SHARE,
    FORMAT,
    LAZY_MASS,
    LAZY_RANK,
    MIN_DEPTH,
    check_options,
    measure_attention,
    write,
)
from inheritune.analysis.sampling import sequences_from
from inheritune.atomic import check_output_dir
from inheritune.data.shards import open_data
from inheritune.errors import InherituneError
from inheritune.models.families import context_length
from inheritune.models.loading import load, model_name, tokenizer_fingerprint
from inheritune.models.tokens import bos_id
from inheritune.result import CommandResult

NO_TOKENIZER = "--data is read as token ids, unchecked against the model's tokenizer"


@dataclasses.dataclass
class AnalyzeResult(CommandResult):
    """What ``analyze`` wrote to ``out``; ``report()`` is analysis.json (field meanings: the
    ``analysis.lazy_layers`` module docstring and ``head_metrics``)."""

    out: Path
    format: str
    model: str
    model_type: str
    num_layers: int
    num_heads: int
    source: dict  # {"data": DIR} or {"text": FILE}
    sequences: int
    seq_len: int
    tau: float
    seed: int
    bos: bool
    thresholds: dict
    lazy_rule: str
    uniform_causal_rank: int
    lazy_layers: list[int]
    recommended_layers: int
    rule: str
    first_lazy_layer: int | None
    by_block_influence: int
    by_block_influence_rule: str
    layers: list  # per layer: every head's metrics, their max and mean, Block Influence, lazy
    head_metrics: dict
    angular_distance: list
    best_slices_to_drop: list
    example_heads: dict
    plots: dict[str, str]
    csv: list
    seconds: float

    def summary(self) -> str:
        """What the CLI prints (the files hold the rest)."""
        lines = []
        lines.append(
            f"{self.num_layers} layers x {self.num_heads} heads on {self.sequences} x {self.seq_len} tokens "
            f"in {self.seconds:.1f}s; "
            f"lazy layers: {', '.join(map(str, self.lazy_layers)) or 'none'}"
        )
        lines.append(
            f"recommended: inherit {self.recommended_layers} layers ({self.rule}); "
            f"by Block Influence: {self.by_block_influence} -> {self.out}"
        )
        return "\n".join(lines)


def analyze(
    model: str | Path | PreTrainedModel,
    *,
    out: str | Path,
    data: str | Path | None = None,
    text: str | Path | None = None,
    sequences: int = 100,
    seq_len: int = 100,
    tau: float = 0.9,
    seed: int = 0,
    batch_size: int | None = None,
    lazy_rank: float = LAZY_RANK,
    lazy_mass: float = LAZY_MASS,
    min_depth: float = MIN_DEPTH,
    bi_share: float = BI_SHARE,
    bos: bool = False,
    overwrite: bool = False,
    trust_remote_code: bool = False,
    tokenizer=None,
    device: str = "cpu",
    device_map: str | None = None,
) -> AnalyzeResult:
    """Analyse ``model`` on ``sequences`` x ``seq_len`` tokens of ``data`` (a prepared folder, val split)
    or ``text`` (a UTF-8 file) and write the results to ``out``.

    ``bos`` starts every sequence with the BOS token (then T-1 sampled tokens): models trained
    with BOS at each document start often sink attention on that token, not on position 0.
    ``model``/``tokenizer``: references as on the command line, or loaded objects."""
    start = time.perf_counter()
    check_options(
        sequences,
        seq_len,
        tau=tau,
        batch_size=batch_size,
        lazy_rank=lazy_rank,
        lazy_mass=lazy_mass,
        bi_share=bi_share,
        min_depth=min_depth,
    )
    if (data is None) == (text is None):
        raise InherituneError("give exactly one of --data DIR or --text FILE")
    check_output_dir(out, overwrite)  # fail before the slow load
    loaded, tok = load(
        model,
        tokenizer,
        trust_remote_code,
        needed=text is not None,
        no_tokenizer=NO_TOKENIZER,
        device=device,
        device_map=device_map,
    )
    ids = _windows(loaded, tok, data=data, text=text, sequences=sequences, seq_len=seq_len, seed=seed, bos=bos)
    fields, heads, mean_attn, distance = measure_attention(
        loaded,
        ids,
        tau=tau,
        batch_size=batch_size,
        lazy_rank=lazy_rank,
        lazy_mass=lazy_mass,
        bi_share=bi_share,
        min_depth=min_depth,
    )
    source = {"data": str(data)} if data is not None else {"text": str(text)}
    result = AnalyzeResult(
        out=Path(out),
        format=FORMAT,
        model=model_name(model),
        source=source,
        sequences=sequences,
        seq_len=seq_len,
        tau=tau,
        seed=seed,
        bos=bos,
        seconds=0.0,
        **fields,
    )
    write(result.report(), heads, mean_attn=mean_attn, distance=distance, out=Path(out), overwrite=overwrite)
    result.seconds = time.perf_counter() - start
    return result


def _windows(
    model: PreTrainedModel, tokenizer, data, text, sequences: int, seq_len: int, seed: int, bos: bool
) -> torch.Tensor:
    """The ``[sequences, seq_len]`` token windows, checked against the model's context and vocabulary."""
    context = context_length(model.config)
    if context is not None and seq_len > context:
        raise InherituneError(f"--seq-len {seq_len} is longer than the model's context ({context} tokens)")
    if data is not None and tokenizer is not None:
        open_data(data).check_tokenizer(tokenizer_fingerprint(tokenizer))
    ids = sequences_from(data, text, tokenizer=tokenizer, n=sequences, seq_len=seq_len, seed=seed)
    if bos:
        bos_token = bos_id(model, tokenizer)
        if bos_token is None:
            raise InherituneError("--bos: neither the tokenizer nor the model config defines a BOS token")
        ids = torch.cat([torch.full((len(ids), 1), bos_token), ids[:, :-1]], dim=1)
    vocab = cast(torch.nn.Embedding, model.get_input_embeddings()).num_embeddings
    if int(ids.max()) >= vocab:
        raise InherituneError(f"the data has token id {int(ids.max())}, beyond the model's vocabulary ({vocab})")
    return ids
