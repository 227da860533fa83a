"""Shared test fixtures: tiny models of every family, a tiny real tokenizer, generated text.

Nothing here downloads: models are built from configs with random weights, the tokenizer is
trained in-process on generated text.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
from transformers import (
    Gemma3TextConfig,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    OPTConfig,
    Phi3Config,
    Qwen2Config,
)

from inheritune import packaged

torch.set_num_threads(2)


def needs_packages(*names: str) -> pytest.MarkDecorator:
    """Skip unless every named data package (rows of ``inheritune.packaged``) is installed; the
    reason names each missing package, what it serves and how to install it."""
    missing = [n for n in dict.fromkeys(names) if n and not packaged.installed(n)]
    reason = "; ".join(f"package {n} is not installed ({packaged.PACKAGES[n].serves}: "
                       f"`{packaged.install_command(n)}`)" for n in missing)
    return pytest.mark.skipif(bool(missing), reason=reason)


def needs_tasks(*tasks: str) -> pytest.MarkDecorator:
    """Skip unless the packages behind these offline tasks are installed."""
    from inheritune.evaluation.suite import package_of

    return needs_packages(*(package_of(t) or "" for t in tasks))

VOCAB = 320  # byte-level BPE: 256 bytes + 2 specials + merges
_COMMON = dict(vocab_size=VOCAB, max_position_embeddings=128, bos_token_id=1, eos_token_id=1)
_LLAMA_LIKE = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2, **_COMMON)

TINY_CONFIGS = {
    "gpt2": lambda n: GPT2Config(n_layer=n, n_embd=32, n_head=4, vocab_size=VOCAB, n_positions=128, bos_token_id=1, eos_token_id=1,
                                 resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
    "llama": lambda n: LlamaConfig(num_hidden_layers=n, **_LLAMA_LIKE),
    "qwen2": lambda n: Qwen2Config(num_hidden_layers=n, **_LLAMA_LIKE),
    "mistral": lambda n: MistralConfig(num_hidden_layers=n, sliding_window=None, **_LLAMA_LIKE),
    "phi3": lambda n: Phi3Config(num_hidden_layers=n, pad_token_id=0, **_LLAMA_LIKE),
    "gemma3_text": lambda n: Gemma3TextConfig(
        num_hidden_layers=n, head_dim=8, sliding_window=16, query_pre_attn_scalar=8,
        layer_types=["sliding_attention" if (i + 1) % 3 else "full_attention" for i in range(n)], **_LLAMA_LIKE
    ),
    "opt": lambda n: OPTConfig(num_hidden_layers=n, hidden_size=32, ffn_dim=64, num_attention_heads=4,
                               word_embed_proj_dim=32, dropout=0.0, **_COMMON),
    "gpt_neox": lambda n: GPTNeoXConfig(num_hidden_layers=n, hidden_size=32, intermediate_size=64,
                                        num_attention_heads=4, **_COMMON),
}
FAMILY_NAMES = sorted(TINY_CONFIGS)


def tiny_model(family: str = "llama", layers: int = 4, seed: int = 0):
    """A randomly initialised model of ``family`` with ``layers`` blocks (fp32, eval mode)."""
    torch.manual_seed(seed)
    config = TINY_CONFIGS[family](layers)
    return AutoModelForCausalLM.from_config(config).eval()


WORDS = ("the cat dog sat ran on a mat log big small red blue and then it was happy sad "
         "model layer token learns attention head quickly slowly over under").split()


def generated_text(n_docs: int = 200, seed: int = 0) -> list[str]:
    """Documents of a toy grammar: learnable structure, so losses can fall in a few steps."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        sents = []
        for _ in range(rng.randint(2, 6)):
            a, b, c = rng.sample(WORDS, 3)
            sents.append(f"The {a} {b} on the {c}.")
        docs.append(" ".join(sents))
    return docs


def make_tokenizer(vocab_size: int = VOCAB) -> PreTrainedTokenizerFast:
    """A real byte-level BPE tokenizer trained on the generated text (ids < ``vocab_size``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(generated_text(300, seed=123), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>", bos_token="<eos>")


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Teacher caches (and anything else under $INHERITUNE_CACHE) go to the session's temp folder,
    never the developer's ~/.cache; subprocesses inherit it through the environment."""
    before = os.environ.get("INHERITUNE_CACHE")
    os.environ["INHERITUNE_CACHE"] = str(tmp_path_factory.mktemp("inheritune-cache"))
    yield Path(os.environ["INHERITUNE_CACHE"])
    if before is None:
        del os.environ["INHERITUNE_CACHE"]
    else:
        os.environ["INHERITUNE_CACHE"] = before


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on one thread: two threads only contend on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    return make_tokenizer()


def save_tiny(path: Path, family: str = "llama", layers: int = 4, seed: int = 0, tok=None) -> Path:
    """Write a tiny model (and tokenizer) as an ordinary HF folder."""
    model = tiny_model(family, layers, seed)
    tok = tok or make_tokenizer()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def make_data_dir(path: Path, tok=None, n_docs: int = 200, val_docs: int = 20, seed: int = 0) -> Path:
    """A prepared data folder in the shared format, written directly (no `data prepare`)."""
    import json

    import numpy as np

    from inheritune.data.shards import FORMAT, MANIFEST
    from inheritune.models.loading import tokenizer_fingerprint

    tok = tok or make_tokenizer()
    docs = generated_text(n_docs, seed)
    path.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, part in (("val", docs[:val_docs]), ("train", docs[val_docs:])):
        ids = [i for d in part for i in tok.encode(d) + [tok.eos_token_id]]
        np.asarray(ids, dtype=np.uint16).tofile(path / f"{split}-00000.bin")
        splits[split] = {"shards": [f"{split}-00000.bin"], "shard_tokens": [len(ids)], "tokens": len(ids),
                         "documents": len(part)}
    manifest = {"format": FORMAT, "dtype": "uint16", "seed": seed, "sources": ["generated"],
                "tokenizer": {"name": "test-bpe", "fingerprint": tokenizer_fingerprint(tok),
                              "vocab_size": len(tok), "eos_token_id": tok.eos_token_id},
                "splits": splits}
    (path / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return path
