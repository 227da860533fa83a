"""Structural pruning, a smaller model: whole blocks chosen by a block selector, the same share of
heads and FFN neurons cut out of every block, or blocks then width; and the cut a parameter budget
asks for. Chosen on the data's train split, scored on its val split.
"""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedModel

from inheritune.analysis import layers as lp
from inheritune.analysis import selection
from inheritune.analysis import width_ranking as wd
from inheritune.data.shards import open_data
from inheritune.evaluation.val_loss import val_loss
from inheritune.models import budget, width_cut
from inheritune.models.families import num_layers
from inheritune.models.loading import parameter_count, tokenizer_fingerprint
from inheritune.models.surgery import drop_blocks
from inheritune.pruning.prune_results import LayerPruneResult, WidthPruneResult


def cut_out(
    model,
    tok,
    windows: dict,
    drop_layers: int,
    widths: tuple[float, float],
    by: str,
    sweep: bool,
    ranking: str,
    unit: str,
) -> tuple[LayerPruneResult | WidthPruneResult, PreTrainedModel]:
    """Structural pruning (a smaller model): blocks, width, or blocks then width; ``windows``: where
    units and blocks are ranked (data, examples, seq_len, seed)."""
    if drop_layers and any(widths):
        return _prune_both(model, tok, **windows, k=drop_layers, by=by, ffn_pct=widths[1], ranking=ranking, unit=unit)
    if any(widths):
        return _prune_width(model, tok, **windows, heads_pct=widths[0], ffn_pct=widths[1], ranking=ranking, unit=unit)
    return _drop_layers(model, tok, **windows, k=drop_layers, by=by, sweep=sweep)


def budget_cut(config, params: float, budget_by: str) -> budget.Cut:
    """Blocks to drop and FFN percent to cut to reach the budget, said in one line."""
    cut = budget.cut_within(config, params, budget_by)
    parts = [f"keep {num_layers(config) - cut.drop_layers} of {num_layers(config)} blocks"] * bool(cut.drop_layers) + [
        f"cut {cut.ffn_percent:.1f}% of every block's FFN neurons"
    ] * bool(cut.ffn_percent)
    print(
        f"--params {params:g} of {budget.non_embedding(config):,} non-embedding parameters ({budget_by}): "
        f"{' and '.join(parts) or 'no cut needed'}",
        flush=True,
    )
    return cut


def _val_data(data, tok):
    token_data = open_data(data)
    if tok is not None:
        token_data.check_tokenizer(tokenizer_fingerprint(tok), "the model's tokenizer")
    return token_data


def _val_summary(value: dict) -> dict:
    return {"loss": value["loss"]}


def _drop_layers(
    model, tok, data, examples: int, seq_len: int, seed: int, k: int, by: str, sweep: bool
) -> tuple[LayerPruneResult, PreTrainedModel]:
    """Whole blocks (``analysis.layers``): chosen on the data's train split, val loss on its val split."""
    lp.check_drop(k, num_layers(model.config))
    token_data = _val_data(data, tok)
    windows = selection.scoring_windows(token_data, examples, seq_len, seed)
    chosen = selection.select(model, num_layers(model.config) - k, by, windows)
    dropped = chosen.dropped
    pruned = drop_blocks(model, dropped)
    before, after = val_loss(model, token_data), val_loss(pruned, token_data)
    curves = {"layers": lp.sweep(model, token_data, windows, lp.SWEEP, max_drop=k)} if sweep else {}
    result = LayerPruneResult(
        out=Path(),
        model="",
        by=by,
        drop_layers=k,
        dropped_layers=dropped,
        layer_scores=chosen.to_json(),
        before={"val": _val_summary(before)},
        after={"val": _val_summary(after)},
        sweep=curves,
        seconds=0.0,
    )
    return result, pruned


def _prune_width(
    model, tok, data, examples: int, seq_len: int, seed: int, heads_pct: float, ffn_pct: float, ranking: str, unit: str
) -> tuple[WidthPruneResult, PreTrainedModel]:
    """Uniform width (``models.width_cut``): units ranked on the data's train split, the cut model
    and the masked reference scored on its val split (they must agree)."""
    width_cut.check_cut(model.config, heads_pct, ffn_pct, unit)  # before the slow ranking
    token_data = _val_data(data, tok)
    windows = selection.scoring_windows(token_data, examples, seq_len, seed)
    print(f"ranking heads and FFN neurons by {ranking} on {len(windows)} train windows ...", flush=True)
    plan = width_cut.plan(model.config, *wd.unit_scores(model, windows, ranking), heads_pct, ffn_pct, unit)
    before = val_loss(model, token_data)
    with wd.masked(model, plan):
        masked = val_loss(model, token_data)
    small = width_cut.cut(model, plan)
    after = val_loss(small, token_data)

    def shape(m: PreTrainedModel) -> dict[str, int]:
        return dict(zip(("heads", "kv_heads", "head_width", "ffn_neurons"), width_cut.geometry(m.config), strict=True))

    result = WidthPruneResult(
        out=Path(),
        model="",
        by=ranking,
        head_unit=unit,
        heads_percent=heads_pct,
        ffn_percent=ffn_pct,
        geometry={"before": shape(model), "after": shape(small)},
        params={"before": parameter_count(model), "after": parameter_count(small)},
        plan=plan.to_json(),
        before={"val": _val_summary(before)},
        after={"val": _val_summary(after)},
        masked={"val": _val_summary(masked)},
        seconds=0.0,
    )
    return result, small


def _prune_both(
    model, tok, data, examples: int, seq_len: int, seed: int, k: int, by: str, ffn_pct: float, ranking: str, unit: str
) -> tuple[WidthPruneResult, PreTrainedModel]:
    """Depth, then width: the K blocks ``by`` drops, then ``ffn_pct`` of every remaining block's
    neurons, ranked on the shallower model (the units it has left)."""
    layers, shallow = _drop_layers(
        model, tok, data=data, examples=examples, seq_len=seq_len, seed=seed, k=k, by=by, sweep=False
    )
    result, small = _prune_width(
        shallow,
        tok,
        data,
        examples=examples,
        seq_len=seq_len,
        seed=seed,
        heads_pct=0.0,
        ffn_pct=ffn_pct,
        ranking=ranking,
        unit=unit,
    )
    result.dropped_layers, result.layers_by, result.before = layers.dropped_layers, by, layers.before
    result.params["before"] = parameter_count(model)
    result.geometry["before"] |= {"layers": num_layers(model.config)}
    result.geometry["after"] |= {"layers": num_layers(small.config)}
    return result, small
