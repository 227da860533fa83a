"""Everything inheritune knows about model architectures, in one table.

Each Hugging Face ``model_type`` maps to a :class:`Family` that says where the block list,
embeddings, final norm and LM head live, and which parts of a block belong to attention and
which to the MLP. Adding an architecture is adding a row; no other module names layers.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import cast

import torch
import torch.nn as nn
from transformers import PretrainedConfig, PreTrainedModel

from inheritune.errors import InherituneError


@dataclass(frozen=True)
class GgufLayout:
    """How llama.cpp stores a family (models/gguf_export.py): its architecture (a ``gguf.MODEL_ARCH``
    member name), the metadata keys that state a head's width (llama.cpp reads them; without them it takes
    hidden_size / heads, wrong after a width cut), whether query/key rows take llama.cpp's rotary
    order, the norm's kind, the positions (rotary, or learned like GPT-2's), what
    llama.cpp adds to norm weights (Gemma stores w, applies 1 + w), whether it states each layer's
    sliding window, GPT-NeoX's fused projection of [q|k|v] per head with its partial rotary and
    parallel residual, and whether llama.cpp's loader assumes hidden_size-wide queries (no heads cut)."""

    arch: str
    head_width_keys: tuple[str, ...] = ()
    permute_qk: bool = False
    norm: str = "rms"  # "rms" (rms_norm_eps) or "layer" (LayerNorm: layer_norm_epsilon / layer_norm_eps)
    positions: str = "rotary"  # or "learned"
    norm_shift: float = 0.0
    sliding_layers: bool = False  # per-layer sliding window, rotary base for local layers, soft-caps
    neox: bool = False  # qkv rows per head, rotary on part of each head, parallel residual flag
    query_is_hidden: bool = False  # llama.cpp's loader takes the query projection as hidden_size wide: no heads cut


@dataclass(frozen=True)
class Family:
    blocks: str  # dotted path of the nn.ModuleList of transformer blocks
    embed: str  # token embedding
    final_norm: str
    head: str = "lm_head"
    pos_embed: str | None = None  # learned positional embedding, where the family has one
    extras: tuple[str, ...] = ()  # other non-block modules to inherit (OPT's project_in/out)
    attn_parts: tuple[str, ...] = ("self_attn", "input_layernorm")  # inside a block
    mlp_parts: tuple[str, ...] = ("mlp", "post_attention_layernorm")
    attn_out: str = "self_attn.o_proj"  # its input is the concatenation of head outputs
    ffn_out: str = "mlp"  # the module whose output is the block's FFN contribution
    ffn_proj: str = "mlp.down_proj"  # the FFN's last linear layer: zeroing it removes the FFN output
    layer_lists: tuple[str, ...] = field(default=("layer_types",))  # per-layer config lists
    weights_in_out: bool = False  # projections store [in, out] (GPT-2's Conv1D); nn.Linear stores [out, in]
    logit_softcap: str | None = None  # config key of the final-logit soft-cap, where the family has one
    # Width (models/width_cut.py): the projections whose output rows are heads or FFN neurons, and the
    # config keys that size them.
    qkv: tuple[str, ...] = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")  # one entry: fused [q|k|v]
    ffn_in: tuple[str, ...] = ("mlp.gate_proj", "mlp.up_proj")  # output rows = neurons
    ffn_in_chunks: int = 1  # 2: one fused [gate | up] projection
    ffn_width: str = "intermediate_size"  # config key of the FFN width
    ffn_width_unset: int = 4  # the FFN width, in hidden sizes, when the config leaves that key unset
    kv_heads: str | None = "num_key_value_heads"  # config key of the key/value head count (None: one per head)
    head_width: str | None = "head_dim"  # config key the attention reads a head's width from; None: it computes
    #                                      hidden_size / num_attention_heads, so fewer heads would mean narrower ones
    gguf: GgufLayout | str = "not written yet"  # how llama.cpp stores it (models/gguf_export.py), or why it cannot


_LLAMA_LIKE = Family(blocks="model.layers", embed="model.embed_tokens", final_norm="model.norm")
GGUF_BPE, GGUF_SENTENCEPIECE = "gpt2", "llama"  # GGUF's names for byte-level BPE and sentencepiece vocabularies
_LLAMA3_SPLIT = (  # Llama 3's tokenizer.json regex
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
PreStep = tuple[str, object]  # a pre-tokenizer step: its type and what sets its splitting
# a byte-level tokenizer's pre-tokenizer steps -> llama.cpp's name for the same splitting
GGUF_PRE_TOKENIZERS: dict[tuple[PreStep, ...], str] = {
    (("ByteLevel", True),): "gpt-2",
    (("Digits", True), ("ByteLevel", True)): "smollm",  # SmolLM/SmolLM2: each digit apart
    (("Split", _LLAMA3_SPLIT), ("ByteLevel", False)): "llama-bpe",  # Llama 3
    (("Split", _LLAMA3_SPLIT.replace("{1,3}", "")), ("ByteLevel", False)): "qwen2",  # Qwen2/2.5/3: digits apart
}
_GGUF_HEAD_WIDTH = ("rope.dimension_count", "attention.key_length", "attention.value_length")

FAMILIES: dict[str, Family] = {
    "llama": replace(_LLAMA_LIKE, gguf=GgufLayout("LLAMA", _GGUF_HEAD_WIDTH, permute_qk=True)),
    "mistral": replace(_LLAMA_LIKE, gguf=GgufLayout("LLAMA", _GGUF_HEAD_WIDTH, permute_qk=True)),  # llama.cpp's way
    "qwen2": replace(_LLAMA_LIKE, gguf=GgufLayout("QWEN2", _GGUF_HEAD_WIDTH, query_is_hidden=True)),
    "qwen3": replace(_LLAMA_LIKE, gguf=GgufLayout("QWEN3", _GGUF_HEAD_WIDTH)),
    "phi3": Family(
        blocks="model.layers",
        embed="model.embed_tokens",
        final_norm="model.norm",
        qkv=("self_attn.qkv_proj",),
        ffn_in=("mlp.gate_up_proj",),
        ffn_in_chunks=2,
        gguf=GgufLayout("PHI3", _GGUF_HEAD_WIDTH, query_is_hidden=True),  # llama.cpp keeps the fused projections too
    ),
    "gemma3_text": Family(
        blocks="model.layers",
        embed="model.embed_tokens",
        final_norm="model.norm",
        mlp_parts=("mlp", "pre_feedforward_layernorm", "post_feedforward_layernorm"),
        attn_parts=("self_attn", "input_layernorm", "post_attention_layernorm"),
        logit_softcap="final_logit_softcapping",
        gguf=GgufLayout("GEMMA3", _GGUF_HEAD_WIDTH, norm_shift=1.0, sliding_layers=True),
    ),
    "gpt2": Family(
        blocks="transformer.h",
        embed="transformer.wte",
        final_norm="transformer.ln_f",
        pos_embed="transformer.wpe",
        attn_parts=("attn", "ln_1"),
        mlp_parts=("mlp", "ln_2"),
        attn_out="attn.c_proj",
        ffn_proj="mlp.c_proj",
        layer_lists=(),
        weights_in_out=True,
        qkv=("attn.c_attn",),
        ffn_in=("mlp.c_fc",),
        ffn_width="n_inner",
        kv_heads=None,
        head_width=None,
        gguf=GgufLayout("GPT2", norm="layer", positions="learned"),  # projections transposed: weights_in_out
    ),
    "opt": Family(
        blocks="model.decoder.layers",
        embed="model.decoder.embed_tokens",
        final_norm="model.decoder.final_layer_norm",
        pos_embed="model.decoder.embed_positions",
        extras=("model.decoder.project_in", "model.decoder.project_out"),
        attn_parts=("self_attn", "self_attn_layer_norm"),
        mlp_parts=("fc1", "fc2", "final_layer_norm"),
        attn_out="self_attn.out_proj",
        ffn_out="fc2",
        ffn_proj="fc2",
        layer_lists=(),
        qkv=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
        ffn_in=("fc1",),
        ffn_width="ffn_dim",
        kv_heads=None,
        head_width=None,
        gguf="llama.cpp has no OPT architecture",
    ),
    "gpt_neox": Family(
        blocks="gpt_neox.layers",
        embed="gpt_neox.embed_in",
        final_norm="gpt_neox.final_layer_norm",
        attn_parts=("attention", "input_layernorm"),
        mlp_parts=("mlp", "post_attention_layernorm"),
        attn_out="attention.dense",
        ffn_proj="mlp.dense_4h_to_h",
        layer_lists=(),
        qkv=("attention.query_key_value",),
        ffn_in=("mlp.dense_h_to_4h",),
        kv_heads=None,
        head_width=None,
        gguf=GgufLayout("GPTNEOX", ("rope.dimension_count",), norm="layer", neox=True),
    ),
}


def family_of(config: PretrainedConfig) -> Family:
    """The table row for a model's config, or a clear error naming what is supported."""
    family = FAMILIES.get(config.model_type)
    if family is None:
        supported = ", ".join(sorted(FAMILIES))
        raise InherituneError(f"unsupported architecture '{config.model_type}'; supported: {supported}")
    return family


def module(model: nn.Module, path: str) -> nn.Module | None:
    """The submodule at a dotted path, or None when this model lacks it (e.g. OPT's project_in)."""
    try:
        return model.get_submodule(path)
    except AttributeError:
        return None


def blocks(model: PreTrainedModel) -> nn.ModuleList:
    return cast(nn.ModuleList, model.get_submodule(family_of(model.config).blocks))  # the family's block list


def num_layers(config: PretrainedConfig) -> int:
    return int(config.num_hidden_layers)


def declared_layers(config: PretrainedConfig) -> int | None:
    """The depth a config names, for any architecture (None when it names none)."""
    value = getattr(config, "num_hidden_layers", None)
    return int(value) if value is not None else None


def set_num_layers(config: PretrainedConfig, layers: int) -> None:
    config.num_hidden_layers = layers


def config_of_blocks(config: PretrainedConfig, blocks: Sequence[tuple[PretrainedConfig, int]]) -> PretrainedConfig:
    """A copy of ``config`` for a model whose block i is block ``blocks[i][1]`` of a model of config
    ``blocks[i][0]``: the layer count, and the per-layer entries (``layer_lists``) taken along."""
    out = copy.deepcopy(config)
    set_num_layers(out, len(blocks))
    for key in family_of(config).layer_lists:
        if getattr(out, key, None) is not None:
            setattr(out, key, [getattr(source, key)[i] for source, i in blocks])
    return out


def context_length(config: PretrainedConfig) -> int | None:
    """Positions the model was built for (None when the config does not say)."""
    value = getattr(config, "max_position_embeddings", None)
    return int(value) if value else None


def logit_softcap(config: PretrainedConfig) -> float | None:
    """The final-logit soft-cap (logits = c * tanh(logits / c)) of families that have one."""
    family = FAMILIES.get(config.model_type)
    key = family.logit_softcap if family is not None else None
    return getattr(config, key, None) if key else None


def input_weights(config: PretrainedConfig, proj: nn.Module, start: int, stop: int):
    """The weights that read inputs ``start:stop`` of a block's projection, as a view ``[stop - start, out]``:
    per-head code (pruning, copying scores) slices heads through this one place."""
    w = cast(torch.Tensor, proj.weight)
    return w[start:stop] if family_of(config).weights_in_out else w[:, start:stop].T


def input_features(config: PretrainedConfig, proj: nn.Module) -> int:
    w = cast(torch.Tensor, proj.weight)
    return w.shape[0] if family_of(config).weights_in_out else w.shape[1]


def num_heads(config: PretrainedConfig) -> int:
    return int(config.num_attention_heads)
