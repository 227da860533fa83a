"""A model folder as one GGUF file, for llama.cpp, LM Studio and Ollama.

The family table says how each family is written (``Family.gguf``: the llama.cpp architecture, the
keys that state a head's width, llama.cpp's rotary layout for the query and key rows of the llama
architecture) or why it cannot be. The tensor names come from the ``gguf``
package's own map (``TensorNameMap``), so a name llama.cpp does not know is refused, never guessed.
The tokenizer travels with the weights (byte-level BPE: its tokens, merges, special ids and chat
template); a family or tokenizer GGUF cannot express is one line naming why.

Types: f32 and f16/bf16 store every matrix in that type; q8_0 stores the 2-D weights as 8-bit
blocks of 32. Norms and other 1-D tensors stay f32, as llama.cpp's own converter writes them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch
from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from inheritune.errors import InherituneError
from inheritune.leftovers import clean_leftovers, hidden_name
from inheritune.models.families import (
    GGUF_BPE,
    GGUF_PRE_TOKENIZERS,
    GGUF_SENTENCEPIECE,
    GgufLayout,
    PreStep,
    context_length,
    family_of,
    logit_softcap,
    num_layers,
)
from inheritune.models.width_cut import geometry

TYPES = {
    "f32": gguf.GGMLQuantizationType.F32,
    "f16": gguf.GGMLQuantizationType.F16,
    "bf16": gguf.GGMLQuantizationType.BF16,
    "q8_0": gguf.GGMLQuantizationType.Q8_0,
}
FILE_TYPES = {
    "f32": gguf.LlamaFileType.ALL_F32,
    "f16": gguf.LlamaFileType.MOSTLY_F16,
    "bf16": gguf.LlamaFileType.MOSTLY_BF16,
    "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
}
_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")  # a sentencepiece byte-fallback token
_COMMON = {  # GGUF key (after the architecture prefix) -> config key (shapes, depth, context: family table)
    "embedding_length": "hidden_size",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "vocab_size": "vocab_size",
}


@dataclass
class GgufExport:
    """What ``export_gguf`` wrote."""

    path: Path
    arch: str
    type: str
    tensors: int
    bytes: int
    tokenizer: bool


def layout_of(config: PretrainedConfig) -> GgufLayout:
    """The family's layout (its row of the family table), or one line saying why it cannot be written."""
    layout = family_of(config).gguf
    if isinstance(layout, str):
        raise InherituneError(f"GGUF export: model type {config.model_type} cannot be written: {layout}")
    if layout.positions == "rotary":
        for rope in _ropes(config).values():
            if rope.get("rope_type", "default") != "default":
                raise InherituneError(f"GGUF export: rope scaling ({rope['rope_type']}) is not written yet")
        if _rotary_share(config) != 1.0 and not layout.neox:
            raise InherituneError(
                "GGUF export: a partial rotary factor is not read back by transformers' GGUF "
                "reader, so the export could not be checked"
            )
    heads, _, width, _ = geometry(config)
    if layout.query_is_hidden and heads * width != config.hidden_size:
        raise InherituneError(
            f"GGUF export: llama.cpp reads a {config.model_type} query projection as hidden_size "
            f"({config.hidden_size}) wide, not {heads} heads x {width}: a width cut of its heads stays a "
            "Hugging Face folder (an FFN-only cut, --width-ffn, exports)"
        )
    if layout.sliding_layers and getattr(config, "query_pre_attn_scalar", None) not in (None, width):
        raise InherituneError(
            f"GGUF export: llama.cpp scales attention by the head width ({width}), "
            f"not query_pre_attn_scalar ({config.query_pre_attn_scalar})"
        )
    return layout


def check_type(kind: str) -> str:
    if kind not in TYPES:
        raise InherituneError(f"--type must be one of {', '.join(TYPES)}, not '{kind}'")
    return kind


def export_gguf(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None, path: str | Path, kind: str = "f16"
) -> GgufExport:
    """Write ``model`` (and its tokenizer) as one GGUF file at ``path`` (written beside, then renamed)."""
    layout, kind, path = layout_of(model.config), check_type(kind), Path(path)
    arch = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[layout.arch]]
    clean_leftovers(path.parent, path.name)  # what a killed export of this file left
    tmp = hidden_name(path, "tmp")  # owner-named: the next export can tell a dead one's from a live one's
    writer = gguf.GGUFWriter(tmp, arch)
    try:
        _metadata(writer, model.config, layout, kind)
        if tokenizer is not None:
            _tokenizer(writer, tokenizer, model.config)
        count = _tensors(writer, model, layout, kind)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file(progress=False)
        writer.close()
        tmp.replace(path)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)  # a failed export leaves nothing, and any earlier file as it was
        raise
    return GgufExport(path, arch, kind, count, path.stat().st_size, tokenizer is not None)


def _metadata(writer: gguf.GGUFWriter, config: PretrainedConfig, layout: GgufLayout, kind: str) -> None:
    arch = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[layout.arch]]
    writer.add_file_type(FILE_TYPES[kind])
    heads, kv_heads, width, ffn = geometry(config)  # the family table's reading of the shapes
    values = {key: getattr(config, attr, None) for key, attr in _COMMON.items()}
    values |= {"context_length": context_length(config), "block_count": num_layers(config)}
    values |= {"feed_forward_length": ffn, "attention.head_count": heads, "attention.head_count_kv": kv_heads}
    values |= dict.fromkeys(layout.head_width_keys, width)
    if layout.norm == "layer":  # GPT-2, GPT-NeoX: LayerNorm
        del values["attention.layer_norm_rms_epsilon"]
        values["attention.layer_norm_epsilon"] = getattr(config, "layer_norm_epsilon", None) or config.layer_norm_eps
    if layout.positions == "rotary":
        values["rope.freq_base"] = _theta(_ropes(config)["full"])
    if layout.neox:  # rotary on the first share of each head; attention and FFN side by side or in turn
        values["rope.dimension_count"] = int(width * _rotary_share(config))
        values["use_parallel_residual"] = bool(config.use_parallel_residual)
    if layout.sliding_layers:
        values |= _sliding(config)
    for key, value in values.items():
        if value is None:
            raise InherituneError(f"GGUF export: the config has no value for {arch}.{key}")
        full = f"{arch}.{key}"
        if isinstance(value, list):
            writer.add_array(full, value)
        elif isinstance(value, bool):
            writer.add_bool(full, value)
        elif isinstance(value, float):
            writer.add_float32(full, value)
        else:
            writer.add_uint32(full, int(value))


def _sliding(config: PretrainedConfig) -> dict[str, object]:
    """Gemma 3's local layers: which they are (llama.cpp reads the per-layer list; a model of chosen blocks
    keeps each block's own kind), their window and rotary base, and the soft-caps where set."""
    kinds = getattr(config, "layer_types", None) or []
    values: dict[str, object] = {
        "attention.sliding_window": config.sliding_window,
        "attention.sliding_window_pattern": [kind == "sliding_attention" for kind in kinds],
        "rope.freq_base_swa": _theta(_ropes(config)["sliding"]),
    }
    cap = logit_softcap(config)
    if cap:
        values[gguf.Keys.LLM.FINAL_LOGIT_SOFTCAPPING.removeprefix("{arch}.")] = float(cap)
    return values


def _ropes(config: PretrainedConfig) -> dict[str, dict]:
    """The rotary settings of full and sliding-window layers (transformers 5: ``rope_parameters``, one
    per layer kind for Gemma 3; before: ``rope_theta``, ``rope_local_base_freq`` and ``rope_scaling``)."""
    found = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    if "full_attention" in found:
        return {"full": dict(found["full_attention"]), "sliding": dict(found.get("sliding_attention", {}))}
    full = found | ({"rope_theta": config.rope_theta} if getattr(config, "rope_theta", None) else {})
    local = getattr(config, "rope_local_base_freq", None)
    return {"full": full, "sliding": {"rope_theta": local} if local else {}}


def _rotary_share(config: PretrainedConfig) -> float:
    """The share of each head's width that turns (GPT-NeoX: rotary_pct, 0.25 in Pythia)."""
    share = _ropes(config)["full"].get("partial_rotary_factor") or getattr(config, "partial_rotary_factor", None)
    return float(share or getattr(config, "rotary_pct", None) or 1.0)


def _theta(rope: dict) -> float:
    theta = rope.get("rope_theta")
    if theta is None:
        raise InherituneError("GGUF export: the config has no rope_theta")
    return float(theta)


def _tensors(writer: gguf.GGUFWriter, model: PreTrainedModel, layout: GgufLayout, kind: str) -> int:
    """Every parameter once (a tied LM head is the embedding), under llama.cpp's name and in its layout."""
    names = gguf.TensorNameMap(gguf.MODEL_ARCH[layout.arch], num_layers(model.config))
    config, count = model.config, 0
    transpose = family_of(config).weights_in_out  # GPT-2 stores projections [in, out]; llama.cpp reads [out, in]
    for name, tensor in model.named_parameters():
        base, suffix = name.rsplit(".", 1)
        mapped = names.get_name(base)
        if mapped is None:
            raise InherituneError(f"GGUF export: no llama.cpp name for the tensor {name}")
        data = tensor.detach().to(torch.float32).cpu().numpy()
        if transpose and data.ndim == 2 and mapped.startswith("blk."):
            data = data.T
        if layout.neox and mapped.endswith("attn_qkv"):
            data = _grouped_qkv(data, config.num_attention_heads)
        if layout.permute_qk and mapped.endswith(("attn_q", "attn_k")):
            heads = geometry(config)[0 if mapped.endswith("attn_q") else 1]
            data = _rotary_order(data, heads)
        if layout.norm_shift and mapped.endswith("norm") and suffix == "weight":
            data = data + layout.norm_shift
        _add(writer, f"{mapped}.{suffix}", np.ascontiguousarray(data), kind)
        count += 1
    return count


def _grouped_qkv(rows: np.ndarray, heads: int) -> np.ndarray:
    """GPT-NeoX's fused projection rows, [q|k|v] per head, as llama.cpp reads them: every head's q, then k, then v."""
    return rows.reshape(heads, 3, -1, *rows.shape[1:]).swapaxes(0, 1).reshape(rows.shape)


def _rotary_order(weights: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's order of a head's rotary pairs (interleaved), from Hugging Face's (two halves)."""
    half = weights.shape[0] // heads // 2
    return weights.reshape(heads, 2, half, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def _add(writer: gguf.GGUFWriter, name: str, data: np.ndarray, kind: str) -> None:
    if data.ndim < 2 or kind == "f32" or (kind == "q8_0" and data.shape[-1] % 32):
        writer.add_tensor(name, data.astype(np.float32))
    elif kind == "f16":
        writer.add_tensor(name, data.astype(np.float16))
    else:
        packed = gguf.quants.quantize(data, TYPES[kind])
        writer.add_tensor(name, packed, raw_shape=packed.shape, raw_dtype=TYPES[kind])


def _tokenizer(writer: gguf.GGUFWriter, tokenizer: PreTrainedTokenizerBase, config: PretrainedConfig) -> None:
    """A BPE tokenizer: tokens by id, their kinds, merges, special tokens and the chat template. Byte-level
    ones (SmolLM2, Llama 3, Qwen, GPT-2) are GGUF's byte-level BPE model; sentencepiece-style ones with
    byte fallback (Gemma, Llama 2) its sentencepiece model, whose scores rank merges as the merge list does."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str()) if getattr(tokenizer, "is_fast", False) else {}
    model = spec.get("model", {})
    byte_level = "ByteLevel" in json.dumps(spec.get("pre_tokenizer"))
    if model.get("type") != "BPE" or not (byte_level or model.get("byte_fallback")):
        raise InherituneError(
            "GGUF export: only BPE tokenizers, byte-level (SmolLM2, Llama 3, Qwen) or with byte fallback (Gemma), "
            "are written; pass --no-tokenizer to write the weights alone"
        )
    vocab = tokenizer.get_vocab()
    size = max(config.vocab_size, max(vocab.values()) + 1)
    tokens, types = [f"[PAD{i}]" for i in range(size)], [gguf.TokenType.UNUSED] * size
    special = set(tokenizer.all_special_ids) | {t["id"] for t in spec.get("added_tokens", []) if t.get("special")}
    for text, index in vocab.items():
        tokens[index] = text
        kind = gguf.TokenType.BYTE if not byte_level and _BYTE_TOKEN.fullmatch(text) else gguf.TokenType.NORMAL
        types[index] = gguf.TokenType.CONTROL if index in special else kind
    pairs = [m.split(" ", 1) if isinstance(m, str) else m for m in model.get("merges", [])]
    merges = [" ".join(pair) for pair in pairs]
    writer.add_tokenizer_model(GGUF_BPE if byte_level else GGUF_SENTENCEPIECE)
    writer.add_tokenizer_pre(_pre_tokenizer(spec) if byte_level else "default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    if not byte_level:  # llama.cpp's sentencepiece merges the pair whose result scores highest
        scores = [0.0] * size
        for rank, pair in reversed(list(enumerate(pairs))):  # the first merge that makes a token ranks it
            made = vocab.get("".join(pair))
            if made is not None:
                scores[made] = -float(rank)
        writer.add_token_scores(scores)
        writer.add_add_bos_token(tokenizer("a").input_ids[:1] == [tokenizer.bos_token_id])
        first = tokenizer.convert_ids_to_tokens(tokenizer("a", add_special_tokens=False).input_ids)[:1]
        writer.add_add_space_prefix(first[0].startswith("\u2581") if first else False)  # Llama 2 yes, Gemma no
    for role in ("bos", "eos", "unk", "pad"):
        special_id = getattr(tokenizer, f"{role}_token_id", None)
        if special_id is not None:
            getattr(writer, f"add_{role}_token_id")(special_id)
    if getattr(tokenizer, "chat_template", None):
        writer.add_chat_template(tokenizer.chat_template)


def _pre_tokenizer(spec: dict) -> str:
    """llama.cpp's name for how a byte-level tokenizer splits text before merging (its regexes are built in,
    chosen by name), or one line saying there is none."""
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    signature = tuple(_step(step) for step in steps)
    if signature not in GGUF_PRE_TOKENIZERS:
        raise InherituneError(
            f"GGUF export: llama.cpp splits text in none of the ways this tokenizer does ({json.dumps(signature)}); "
            "pass --no-tokenizer to write the weights alone"
        )
    return GGUF_PRE_TOKENIZERS[signature]


def _step(step: dict) -> PreStep:
    kind = step.get("type", "")
    if kind == "Split":
        return kind, step.get("pattern", {}).get("Regex")
    if kind == "Digits":
        return kind, step.get("individual_digits")
    return kind, step.get("use_regex", True)
