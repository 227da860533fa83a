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
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch
from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from inheritune.errors import InherituneError
from inheritune.leftovers import clean_leftovers, hidden_name
from inheritune.models.families import GGUF_BPE, GgufLayout, context_length, family_of, num_layers

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
_COMMON = {  # GGUF key (after the architecture prefix) -> config key (depth and context: from the family table)
    "embedding_length": "hidden_size",
    "feed_forward_length": "intermediate_size",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
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
    rope = _rope(config)
    if rope.get("rope_type", "default") != "default":
        raise InherituneError(f"GGUF export: rope scaling ({rope['rope_type']}) is not written yet")
    _check_head_width(config, layout)
    return layout


def _check_head_width(config: PretrainedConfig, layout: GgufLayout) -> None:
    """A head width the file could state but transformers' reader would not take (e.g. after a width cut)."""
    width = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    even = config.hidden_size // config.num_attention_heads
    reads = layout.read_head_width or (width if layout.permute_qk else even)
    if width != reads:
        raise InherituneError(
            f"GGUF export: {config.model_type} heads {width} wide cannot be read back: transformers' GGUF "
            f"reader takes them as {reads} wide (a width cut of this family stays a Hugging Face folder)"
        )


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
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    values = {key: getattr(config, attr, None) for key, attr in _COMMON.items()}
    values |= {"context_length": context_length(config), "block_count": num_layers(config)}
    values |= dict.fromkeys(layout.head_width_keys, head_dim)
    values["rope.freq_base"] = _rope_theta(config)
    if values["attention.head_count_kv"] is None:
        values["attention.head_count_kv"] = config.num_attention_heads
    for key, value in values.items():
        if value is None:
            raise InherituneError(f"GGUF export: the config has no value for {arch}.{key}")
        full = f"{arch}.{key}"
        if isinstance(value, float):
            writer.add_float32(full, value)
        else:
            writer.add_uint32(full, int(value))


def _rope(config: PretrainedConfig) -> dict:
    """The rotary settings (transformers 5: ``rope_parameters``; before: ``rope_theta`` and ``rope_scaling``)."""
    found = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    return dict(found) | ({"rope_theta": config.rope_theta} if getattr(config, "rope_theta", None) else {})


def _rope_theta(config: PretrainedConfig) -> float:
    theta = _rope(config).get("rope_theta")
    if theta is None:
        raise InherituneError("GGUF export: the config has no rope_theta")
    return float(theta)


def _tensors(writer: gguf.GGUFWriter, model: PreTrainedModel, layout: GgufLayout, kind: str) -> int:
    names = gguf.TensorNameMap(gguf.MODEL_ARCH[layout.arch], num_layers(model.config))
    config, count = model.config, 0
    tied = model.get_output_embeddings() is None or (
        model.get_output_embeddings().weight is model.get_input_embeddings().weight
    )
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and tied:
            continue
        if name.endswith("rotary_emb.inv_freq"):
            continue
        base, suffix = name.rsplit(".", 1)
        mapped = names.get_name(base)
        if mapped is None:
            raise InherituneError(f"GGUF export: no llama.cpp name for the tensor {name}")
        data = tensor.detach().to(torch.float32).cpu().numpy()
        if layout.permute_qk and mapped.endswith(("attn_q", "attn_k")):
            heads = config.num_attention_heads if mapped.endswith("attn_q") else _kv_heads(config)
            data = _rotary_order(data, heads)
        _add(writer, f"{mapped}.{suffix}", data, kind)
        count += 1
    return count


def _kv_heads(config: PretrainedConfig) -> int:
    return getattr(config, "num_key_value_heads", None) or config.num_attention_heads


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
    """A byte-level BPE tokenizer: tokens by id, merges, special tokens and the chat template."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str()) if getattr(tokenizer, "is_fast", False) else {}
    model = spec.get("model", {})
    if model.get("type") != "BPE" or "ByteLevel" not in json.dumps(spec.get("pre_tokenizer")):
        raise InherituneError(
            "GGUF export: only byte-level BPE tokenizers (GPT-2 style: SmolLM2, Llama 3, Qwen) are written; "
            "pass --no-tokenizer to write the weights alone"
        )
    vocab = tokenizer.get_vocab()
    size = max(config.vocab_size, max(vocab.values()) + 1)
    tokens, types = [f"[PAD{i}]" for i in range(size)], [gguf.TokenType.UNUSED] * size
    special = set(tokenizer.all_special_ids) | {t["id"] for t in spec.get("added_tokens", []) if t.get("special")}
    for text, index in vocab.items():
        tokens[index] = text
        types[index] = gguf.TokenType.CONTROL if index in special else gguf.TokenType.NORMAL
    writer.add_tokenizer_model(GGUF_BPE)
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_token_merges(merges)
    for role in ("bos", "eos", "unk", "pad"):
        special_id = getattr(tokenizer, f"{role}_token_id", None)
        if special_id is not None:
            getattr(writer, f"add_{role}_token_id")(special_id)
    if getattr(tokenizer, "chat_template", None):
        writer.add_chat_template(tokenizer.chat_template)
