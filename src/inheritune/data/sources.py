"""From a SOURCE string to a stream of documents (plain strings).

A source is a packaged corpus alias, a local ``.txt`` / ``.jsonl`` / ``.parquet`` file or a
folder of them, or a Hugging Face dataset ``hf:NAME[:CONFIG][@SPLIT]`` read in streaming
mode. Everything is a generator, so a corpus larger than memory passes through.
What a document is: a jsonl line or parquet row is one; a ``.txt`` file is cut into documents
of about ``DOC_CHARS`` characters at paragraph breaks (blank lines), so that one big text file can
still be split into train and validation by document (see :func:`split_text`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from inheritune.data.corpora import CORPORA, MIXES, corpus_documents, corpus_path, expand, is_corpus
from inheritune.errors import InherituneError

SUFFIXES = (".txt", ".jsonl", ".parquet")
DOC_CHARS = 4000  # a .txt file's documents: ~1,000 tokens, whole paragraphs where they fit
ERRORS = ("strict", "replace")
BOM = "\ufeff"


@dataclass(frozen=True)
class HFDataset:
    name: str
    config: str | None
    split: str

    @classmethod
    def parse(cls, spec: str) -> HFDataset:
        """``hf:NAME[:CONFIG][@SPLIT]``, e.g. ``hf:HuggingFaceFW/fineweb-edu:sample-10BT@train``."""
        body = spec[len("hf:") :]
        body, _, split = body.partition("@")
        name, _, config = body.partition(":")
        if not name or (spec.count("@") > 1) or ("@" in spec and not split) or (":" in body and not config):
            raise InherituneError(f"bad dataset source {spec!r}: expected hf:NAME[:CONFIG][@SPLIT]")
        return cls(name, config or None, split or "train")


def check_source(spec: str) -> None:
    """Fail fast (before the tokenizer loads) on a source that cannot be read at all."""
    if is_corpus(spec):
        for name in expand(spec):
            corpus_path(name)
    elif spec.startswith("hf:"):
        HFDataset.parse(spec)
    else:
        _local_files(Path(spec))


def documents(spec: str, text_field: str = "text", errors: str = "strict") -> Iterator[str]:
    """The documents of one source, in a fixed order."""
    if is_corpus(spec):
        return interleave([corpus_documents(name) for name in expand(spec)])
    if spec.startswith("hf:"):
        return _hf_documents(HFDataset.parse(spec), text_field)
    return (doc for path in _local_files(Path(spec)) for doc in _read_file(path, text_field, errors))


def interleave(streams: Sequence[Iterator[str]]) -> Iterator[str]:
    """Round-robin over several streams, so a token cap takes a share of each."""
    live = list(streams)
    while live:
        for stream in list(live):
            doc = next(stream, None)
            if doc is None:
                live.remove(stream)
            else:
                yield doc


def _local_files(path: Path) -> list[Path]:
    if path.is_file():
        if path.suffix not in SUFFIXES:
            raise InherituneError(
                f"{path}: unsupported file type (give {', '.join(SUFFIXES)}, a folder of them, "
                "a corpus alias or hf:NAME)"
            )
        return [path]
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and p.suffix in SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not files:
            raise InherituneError(f"folder {path} has no text files ({', '.join(SUFFIXES)})")
        return files
    aliases = ", ".join([*CORPORA, *MIXES])
    raise InherituneError(
        f"no such file, folder or corpus: {path} (corpora: {aliases}; Hugging Face datasets: hf:NAME[:CONFIG][@SPLIT])"
    )


def decode_utf8(data: bytes, path: Path, errors: str = "strict", offset: int = 0) -> str:
    """Text of a file (or of its bytes from ``offset``), naming the file and byte offset of bad UTF-8.
    A byte-order mark opening the file is not text: editors add it, and a file holding only one is empty."""
    try:
        text = data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as e:
        raise InherituneError(
            f"{path}: invalid UTF-8 at byte offset {offset + e.start} (pass --errors replace to substitute U+FFFD)"
        ) from None
    return text.removeprefix(BOM) if offset == 0 else text


def _read_file(path: Path, text_field: str, errors: str) -> Iterator[str]:
    if path.stat().st_size == 0:
        raise InherituneError(f"{path} is empty")
    count = 0
    reader = {".txt": _read_txt, ".jsonl": _read_jsonl, ".parquet": _read_parquet}[path.suffix]
    for doc in reader(path, text_field, errors):
        if doc.strip():
            count += 1
            yield doc
    if count == 0:
        # A .txt file yields a document for any text at all: this one holds only whitespace (or a byte-order mark).
        empty = path.suffix == ".txt"
        raise InherituneError(f"{path} is empty" if empty else f"{path} has no text in field '{text_field}'")


def _read_txt(path: Path, text_field: str, errors: str) -> Iterator[str]:
    yield from split_text(decode_utf8(path.read_bytes(), path, errors))


def _pieces(text: str, size: int) -> Iterator[str]:
    """Paragraphs (blank-line separated); one longer than ``size`` is cut at line breaks, and a
    line longer than that at the last space before ``size`` (or at ``size`` when it has none)."""
    for paragraph in re.split(r"\n[ \t]*\n", text):
        lines = paragraph.strip("\n").split("\n") if len(paragraph) > size else [paragraph.strip("\n")]
        for line in lines:
            while len(line) > size:
                cut = line.rfind(" ", 0, size)
                cut = cut if cut > 0 else size
                yield line[:cut]
                line = line[cut:].lstrip(" ")
            if line.strip():
                yield line


def split_text(text: str, size: int = DOC_CHARS) -> list[str]:
    """A plain text as documents: consecutive paragraphs packed, in order, into documents of at most
    ``size`` characters (joined by a blank line). Deterministic, so the split by document is too."""
    docs, current = [], ""
    for piece in _pieces(text, size):
        if current and len(current) + 2 + len(piece) > size:
            docs.append(current)
            current = ""
        current = f"{current}\n\n{piece}" if current else piece
    if current:
        docs.append(current)
    return docs


def _read_jsonl(path: Path, text_field: str, errors: str) -> Iterator[str]:
    offset = 0
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            line = decode_utf8(raw, path, errors, offset)
            offset += len(raw)
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InherituneError(f"{path} line {number} is not JSON: {e.msg}") from None
            if not isinstance(row, dict) or text_field not in row:
                fields = ", ".join(row) if isinstance(row, dict) else f"a JSON {type(row).__name__}, not an object"
                raise InherituneError(
                    f"{path} line {number} has no text field '{text_field}' "
                    f"(it has: {fields}); choose one with --text-field"
                )
            text = row[text_field]
            if not isinstance(text, str):
                raise InherituneError(
                    f"{path} line {number}: field '{text_field}' holds a {type(text).__name__} "
                    f"({str(text)[:40]!r}), not text; choose a text field with --text-field"
                )
            yield text


def _read_parquet(path: Path, text_field: str, errors: str) -> Iterator[str]:
    import pyarrow.parquet as pq  # pyarrow: heavy, imported only for .parquet sources

    try:
        file = pq.ParquetFile(path)
    except Exception as e:
        raise InherituneError(f"{path} is not a readable parquet file: {e}") from None
    if text_field not in file.schema_arrow.names:
        raise InherituneError(
            f"{path} has no column '{text_field}' (it has: {', '.join(file.schema_arrow.names)}); "
            "choose one with --text-field"
        )
    for batch in file.iter_batches(batch_size=1024, columns=[text_field]):
        yield from (text for text in batch.column(0).to_pylist() if isinstance(text, str))


def _hf_documents(ds: HFDataset, text_field: str) -> Iterator[str]:
    """Stream a hub dataset; network and schema problems become one line."""
    try:
        import datasets  # datasets: heavy, imported only for hf: sources
    except ImportError:
        raise InherituneError("hf: sources need the datasets package: run `pip install datasets`") from None
    where = ds.name + (f":{ds.config}" if ds.config else "") + f"@{ds.split}"
    datasets.logging.set_verbosity_error()  # retry notices would break the one-line error contract
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    try:
        stream = datasets.load_dataset(ds.name, ds.config, split=ds.split, streaming=True)
        for row in stream:
            if text_field not in row:
                raise InherituneError(
                    f"dataset {where} has no field '{text_field}' (it has: {', '.join(row)}); "
                    "choose one with --text-field"
                )
            if isinstance(row[text_field], str):
                yield row[text_field]
    except InherituneError:
        raise
    except Exception as e:
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise InherituneError(
            f"could not read dataset {where}: {detail} "
            "(is the hub reachable? offline, give local files or a packaged corpus)"
        ) from None
