"""Width pruning that ships a smaller model: the same number of attention heads and FFN neurons
cut out of every block, saved as an ordinary, smaller config.

Why the same number everywhere: a config holds one head count and one FFN width for all layers
(transformers 5 dropped per-layer ``pruned_heads``), so a plan that cuts more in one layer than in
another can only be saved as zeroed weights (``analysis/unit_pruning.py``). Cutting the same count in
every layer, possibly different units in each, is what Minitron ships (arXiv 2407.14679).

A :class:`WidthPlan` lists, per layer, the query heads, key/value heads and FFN neurons kept.
:func:`cut` builds the smaller model; ``analysis.width_ranking.masked`` applies the same plan with hooks on
the reference (the cut units output zero), and the two compute the same function (tested to 1e-5
per family).

Head units under grouped-query attention (G query heads share a key/value head): either whole
groups (``group``: a key/value head with its G query heads) or the same number of query heads in
every group (``query``): the two cuts ``num_attention_heads`` / ``num_key_value_heads`` express.
Families whose attention computes a head's width as ``hidden_size / num_attention_heads``
(``Family.head_width`` is None) cannot lose heads without narrowing the rest: refused, FFN only.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import numpy as np
import torch
from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from inheritune.errors import InherituneError
from inheritune.models.families import Family, family_of, num_heads, num_layers

HEAD_UNITS = ("group", "query")


@dataclass
class WidthPlan:
    """What each layer keeps (sorted indices into the reference's units)."""

    heads: list[list[int]]  # query heads
    kv_heads: list[list[int]]  # key/value heads
    neurons: list[list[int]]  # FFN neurons

    def to_json(self) -> dict:
        return asdict(self)


def geometry(config: PretrainedConfig) -> tuple[int, int, int, int]:
    """(query heads, key/value heads, head width, FFN neurons) of a config."""
    family = family_of(config)
    heads = num_heads(config)
    kv = int(getattr(config, family.kv_heads, None) or heads) if family.kv_heads else heads
    width = getattr(config, family.head_width, None) if family.head_width else None
    neurons = getattr(config, family.ffn_width) or family.ffn_width_unset * config.hidden_size
    return heads, kv, int(width or config.hidden_size // heads), int(neurons)


def check_cut(config: PretrainedConfig, heads_pct: float, ffn_pct: float, unit: str) -> tuple[int, int]:
    """How many head units (``unit``) and FFN neurons each layer loses; one line when the config
    cannot express the cut or the cut would leave a layer with nothing."""
    family = family_of(config)
    heads, kv, _width, neurons = geometry(config)
    if unit not in HEAD_UNITS:
        raise InherituneError(f"--head-unit must be one of {', '.join(HEAD_UNITS)}, not '{unit}'")
    if heads_pct and family.head_width is None:
        raise InherituneError(
            f"{config.model_type} computes a head's width as hidden_size / num_attention_heads "
            "(its config has no head_dim), so removing heads would narrow the others: "
            "width-prune its FFN only (--width-ffn)"
        )
    units = kv if unit == "group" else heads // kv  # groups per layer, or query heads per group
    head_cut, ffn_cut = round(heads_pct / 100 * units), round(ffn_pct / 100 * neurons)
    what = "key/value groups" if unit == "group" else "query heads per key/value group"
    if heads_pct and not 0 < head_cut < units:
        raise InherituneError(
            f"--width-heads {heads_pct:g}% of {units} {what} removes {head_cut}: it must remove at "
            f"least one and keep at least one" + (" (try --head-unit query)" if unit == "group" else "")
        )
    if ffn_pct and not 0 < ffn_cut < neurons:
        raise InherituneError(
            f"--width-ffn {ffn_pct:g}% of {neurons} FFN neurons removes {ffn_cut}: it must remove "
            "at least one and keep at least one"
        )
    return head_cut, ffn_cut


def _top(scores: np.ndarray, keep: int) -> list[int]:
    """Indices of the ``keep`` highest scores, sorted (ties keep the lower index)."""
    order = np.argsort(-np.asarray(scores, dtype=float), kind="stable")
    return sorted(int(i) for i in order[:keep])


def plan(
    config: PretrainedConfig,
    head_scores: np.ndarray,
    neuron_scores: np.ndarray,
    heads_pct: float,
    ffn_pct: float,
    unit: str = "group",
) -> WidthPlan:
    """Per layer, keep the highest-scoring units: ``head_scores`` is [layers, query heads] (a group
    scores the sum of its query heads), ``neuron_scores`` [layers, neurons]."""
    heads, kv, _width, neurons = geometry(config)
    head_cut, ffn_cut = check_cut(config, heads_pct, ffn_pct, unit)
    group = heads // kv
    plan_ = WidthPlan([], [], [])
    for layer in range(num_layers(config)):
        by_group = np.asarray(head_scores[layer], dtype=float).reshape(kv, group)
        if unit == "group":
            kept_kv = _top(by_group.sum(axis=1), kv - head_cut)
            kept = [g * group + q for g in kept_kv for q in range(group)]
        else:
            kept_kv = list(range(kv))
            kept = [g * group + q for g in kept_kv for q in _top(by_group[g], group - head_cut)]
        plan_.heads.append(kept)
        plan_.kv_heads.append(kept_kv)
        plan_.neurons.append(_top(neuron_scores[layer], neurons - ffn_cut))
    return plan_


def _rows(heads: list[int], width: int) -> torch.Tensor:
    return torch.tensor([h * width + j for h in heads for j in range(width)], dtype=torch.long)


def _slices(
    family: Family, config: PretrainedConfig, width: WidthPlan, layer: int
) -> dict[str, tuple[str, torch.Tensor]]:
    """Per projection of one block: which side (``out`` rows or ``in`` columns) keeps which indices."""
    heads, kv, head_width, neurons = geometry(config)
    q, k = _rows(width.heads[layer], head_width), _rows(width.kv_heads[layer], head_width)
    cuts: dict[str, tuple[str, torch.Tensor]] = {}
    if len(family.qkv) == 1:  # fused [q | k | v]
        cuts[family.qkv[0]] = ("out", torch.cat([q, heads * head_width + k, (heads + kv) * head_width + k]))
    else:
        for path, rows in zip(family.qkv, (q, k, k), strict=True):
            cuts[path] = ("out", rows)
    cuts[family.attn_out] = ("in", q)
    n = torch.tensor(width.neurons[layer], dtype=torch.long)
    for path in family.ffn_in:  # fused [gate | up] when ffn_in_chunks is 2
        cuts[path] = ("out", torch.cat([c * neurons + n for c in range(family.ffn_in_chunks)]))
    cuts[family.ffn_proj] = ("in", n)
    return cuts


def _take(tensor: torch.Tensor, side: str, index: torch.Tensor, in_out: bool, is_bias: bool) -> torch.Tensor:
    """Keep ``index`` along a projection's output (``out``) or input (``in``) side of a weight stored
    [out, in] (``in_out``: [in, out], ``Family.weights_in_out``); a bias has only the output side."""
    if is_bias:
        return tensor[index] if side == "out" else tensor
    dim = {("out", False): 0, ("in", False): 1, ("out", True): 1, ("in", True): 0}[(side, in_out)]
    return tensor.index_select(dim, index)


def smaller_config(config: PretrainedConfig, width: WidthPlan) -> PretrainedConfig:
    """The config of the cut model: fewer heads (explicit head width) and a narrower FFN."""
    family = family_of(config)
    _h, _kv, head_width, _n = geometry(config)
    small = copy.deepcopy(config)
    if family.head_width is not None:
        small.num_attention_heads = len(width.heads[0])
        setattr(small, family.head_width, head_width)
        if family.kv_heads:
            setattr(small, family.kv_heads, len(width.kv_heads[0]))
    setattr(small, family.ffn_width, len(width.neurons[0]))
    return small


@torch.no_grad()
def cut(model: PreTrainedModel, width: WidthPlan) -> PreTrainedModel:
    """A new, smaller model holding the plan's units of ``model`` (``model`` is left as it was)."""
    family = family_of(model.config)
    small = AutoModelForCausalLM.from_config(smaller_config(model.config, width), dtype=model.dtype)
    state = model.state_dict()
    for layer in range(num_layers(model.config)):
        for path, (side, index) in _slices(family, model.config, width, layer).items():
            for name in ("weight", "bias"):
                key = f"{family.blocks}.{layer}.{path}.{name}"
                if state.get(key) is not None:
                    state[key] = _take(
                        state[key], side, index=index, in_out=family.weights_in_out, is_bias=name == "bias"
                    )
    small.load_state_dict(state, strict=True)
    if getattr(small.config, "tie_word_embeddings", False):
        small.tie_weights()
    return small.eval()
