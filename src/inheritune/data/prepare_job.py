"""`data prepare`: raw text -> token shards with a fixed, document-level validation split; how the
split is made is in ``inheritune.data.split``."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from inheritune.atomic import atomic_dir, atomic_write_json, check_output_dir, read_json
from inheritune.data.shards import FORMAT, MANIFEST, dtype_for_vocab
from inheritune.data.sources import ERRORS, check_source, documents, interleave
from inheritune.data.split import encoder, pool_tokens, write_splits
from inheritune.errors import InherituneError
from inheritune.models.loading import load_tokenizer, tokenizer_fingerprint
from inheritune.result import CommandResult


@dataclasses.dataclass
class PrepareResult(CommandResult):
    """What ``prepare_data`` wrote to ``out`` (the data folder; its manifest.json holds the rest)."""

    out: Path
    tokenizer: str
    dtype: str
    train_tokens: int
    train_documents: int
    val_tokens: int
    val_documents: int
    seconds: float

    def summary(self) -> str:
        """What the CLI prints (the files hold the rest)."""
        return (
            f"prepared {self.out}: train {self.train_tokens:,} tokens ({self.train_documents:,} docs), "
            f"val {self.val_tokens:,} tokens ({self.val_documents:,} docs), {self.dtype}, in {self.seconds:.1f}s"
        )


def prepare_data(
    sources: Sequence[str],
    tokenizer: str | PreTrainedTokenizerBase,
    out: str | Path,
    max_tokens: int | None = None,
    val_tokens: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
    text_field: str = "text",
    errors: str = "strict",
    trust_remote_code: bool = False,
) -> PrepareResult:
    """Tokenize ``sources`` with ``tokenizer`` into the data folder ``out`` (``inheritune data
    prepare SOURCE... --tokenizer REF --out DIR``, same arguments).

    ``val_tokens`` defaults to 100,000, or 10% of the sources when they hold fewer tokens than
    the validation pool (see the module docstring).
    """
    start = time.perf_counter()
    sources = [str(s) for s in sources]
    if not sources:
        raise InherituneError("give at least one source")
    for name, value in (("--max-tokens", max_tokens), ("--val-tokens", val_tokens)):
        if value is not None and value < 1:
            raise InherituneError(f"{name} must be at least 1, got {value}")
    if errors not in ERRORS:
        raise InherituneError(f"--errors must be one of {', '.join(ERRORS)}, got {errors!r}")
    for spec in sources:
        check_source(spec)  # before the tokenizer loads: a typo should fail in a second

    name = tokenizer if isinstance(tokenizer, str) else (tokenizer.name_or_path or type(tokenizer).__name__)
    tok = load_tokenizer(tokenizer, trust_remote_code=trust_remote_code) if isinstance(tokenizer, str) else tokenizer
    if tok.eos_token_id is None:
        raise InherituneError(f"tokenizer {name} has no EOS token to separate documents")
    fingerprint = tokenizer_fingerprint(tok)
    out = Path(out)
    _check_same_tokenizer(out, fingerprint)
    check_output_dir(out, overwrite)

    dtype = dtype_for_vocab(len(tok))
    with atomic_dir(out, overwrite) as tmp:
        splits, read = write_splits(
            interleave([documents(s, text_field, errors) for s in sources]),
            encoder(tok),
            eos=tok.eos_token_id,
            root=tmp,
            dtype=dtype,
            seed=seed,
            max_tokens=max_tokens,
            val_tokens=val_tokens,
        )
        atomic_write_json(
            tmp / MANIFEST,
            _manifest(
                dtype.name,
                name,
                fingerprint=fingerprint,
                tok=tok,
                sources=sources,
                seed=seed,
                max_tokens=max_tokens,
                val_tokens=val_tokens,
                text_field=text_field,
                errors=errors,
                read=read,
                splits=splits,
            ),
        )
    train, val = splits["train"], splits["val"]
    return PrepareResult(
        out=out,
        tokenizer=name,
        dtype=dtype.name,
        train_tokens=train["tokens"],
        train_documents=train["documents"],
        val_tokens=val["tokens"],
        val_documents=val["documents"],
        seconds=time.perf_counter() - start,
    )


def _manifest(
    dtype: str,
    name: str,
    fingerprint: str,
    tok: PreTrainedTokenizerBase,
    sources: list[str],
    seed: int,
    max_tokens: int | None,
    val_tokens: int | None,
    text_field: str,
    errors: str,
    read: dict,
    splits: dict,
) -> dict:
    """manifest.json: how the folder was made (every argument) and what it holds."""
    return {
        "format": FORMAT,
        "dtype": dtype,
        "tokenizer": {
            "name": name,
            "fingerprint": fingerprint,
            "vocab_size": len(tok),
            "eos_token_id": tok.eos_token_id,
        },
        "sources": sources,
        "seed": seed,
        "max_tokens": max_tokens,
        "val_tokens": val_tokens,
        "text_field": text_field,
        "errors": errors,
        "split": "by document: val = lowest blake2b(seed, text) keys up to val_tokens among the documents "
        "starting in the first val_pool tokens of the sources; the rest is train, capped at max_tokens",
        "val_pool": pool_tokens(val_tokens),
        "read": read,
        "splits": splits,
    }


def _check_same_tokenizer(out: Path, fingerprint: str) -> None:
    """An existing data folder keeps its tokenizer: runs that point at it rely on its val set."""
    if not (out / MANIFEST).is_file():
        return
    old = read_json(out / MANIFEST, "data manifest").get("tokenizer", {})
    if old.get("fingerprint") != fingerprint:
        raise InherituneError(
            f"{out} holds data tokenized with {old.get('name', '?')} (fingerprint {old.get('fingerprint')}), "
            f"not this tokenizer (fingerprint {fingerprint}); use a new --out or delete {out} first"
        )
