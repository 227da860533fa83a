"""Corrupt data folders are refused when opened, in one line naming the file: random-byte and
truncated shards, lying manifests, token ids past the vocabulary."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import generated_text, make_data_dir, save_tiny
from inheritune.cli import main
from inheritune.data import shards
from inheritune.data.shards import MANIFEST, open_data
from inheritune.errors import InherituneError


@pytest.fixture
def data_dir(tmp_path, tokenizer) -> Path:
    return make_data_dir(tmp_path / "data", tokenizer, n_docs=40, val_docs=8)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer) -> Path:
    return save_tiny(tmp_path_factory.mktemp("model") / "m", "llama", layers=2, tok=tokenizer)


def _manifest(path: Path) -> dict:
    return json.loads((path / MANIFEST).read_text())


def _write_manifest(path: Path, manifest: dict) -> None:
    (path / MANIFEST).write_text(json.dumps(manifest))


def _refused(path: Path, *words: str) -> str:
    with pytest.raises(InherituneError) as e:
        open_data(path)
    message = str(e.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    return message


def _cli_refuses(capsys, model_dir: Path, data_dir: Path, *words: str) -> None:
    """`eval MODEL --data DIR` ends in one line on stderr naming the problem, no traceback."""
    assert main(["eval", str(model_dir), "--data", str(data_dir)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("inheritune: error: ") and "Traceback" not in err
    for word in words:
        assert word in err, err


def test_a_good_folder_opens(data_dir, tokenizer):
    """The folder holds make_data_dir's 40 documents (the first 8 are val), each tokenized and
    ended by EOS: the counts and tokens match encoding them here."""
    data, docs, eos = open_data(data_dir), generated_text(40), tokenizer.eos_token_id
    for split, part in (("val", docs[:8]), ("train", docs[8:])):
        expected = [i for doc in part for i in tokenizer.encode(doc) + [eos]]
        assert data.num_tokens(split) == len(expected) and data.tokens(split).tolist() == expected
        assert int((data.tokens(split) == eos).sum()) == len(part)


def test_random_bytes_of_the_right_size(data_dir, model_dir, capsys):
    shard = data_dir / "train-00000.bin"
    size = shard.stat().st_size
    open_data(data_dir)  # a good open first: a cached result must not hide the rewrite
    shard.write_bytes(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())
    bad = np.fromfile(shard, dtype=np.uint16)
    first = int(np.argmax(bad >= 320))
    _refused(data_dir, str(shard), f"token id {int(bad[first])} at position {first}", "vocab_size 320")
    _cli_refuses(capsys, model_dir, data_dir, str(shard), f"token id {int(bad[first])}")


def test_ids_past_the_vocabulary(data_dir, model_dir, capsys):
    shard = data_dir / "val-00000.bin"
    tokens = np.fromfile(shard, dtype=np.uint16)
    tokens[7] = 320  # the first id the tokenizer does not have
    tokens.tofile(shard)
    _refused(data_dir, str(shard), "token id 320 at position 7", "past the vocabulary")
    _cli_refuses(capsys, model_dir, data_dir, str(shard), "token id 320 at position 7")


def test_truncated_shard(data_dir, model_dir, capsys):
    shard = data_dir / "train-00000.bin"
    size = shard.stat().st_size
    with open(shard, "r+b") as f:
        f.truncate(size - 3)
    _refused(data_dir, str(shard), "truncated", f"holds {size - 3} bytes", str(size))
    _cli_refuses(capsys, model_dir, data_dir, str(shard), "truncated")


def test_missing_shard(data_dir):
    (data_dir / "val-00000.bin").unlink()
    _refused(data_dir, str(data_dir / "val-00000.bin"), "missing")


def _lie(manifest: dict, how: str) -> None:
    train = manifest["splits"]["train"]
    if how == "tokens":
        train["tokens"] += 1
    elif how == "shard_count":
        train["shards"].append("train-00001.bin")
    elif how == "shard_size":
        train["shard_tokens"][0] -= 1
        train["tokens"] -= 1
    elif how == "no_vocab_size":
        del manifest["tokenizer"]["vocab_size"]
    elif how == "no_splits":
        del manifest["splits"]
    elif how == "no_val":
        del manifest["splits"]["val"]
    elif how == "outside":
        train["shards"] = ["../elsewhere.bin"]
    elif how == "dtype":
        manifest["dtype"] = "float32"
    elif how == "small_dtype":
        manifest["tokenizer"]["vocab_size"] = 100_000
    elif how == "repeated":
        manifest["splits"]["val"]["shards"] = train["shards"]
        manifest["splits"]["val"]["shard_tokens"] = train["shard_tokens"]
        manifest["splits"]["val"]["tokens"] = train["tokens"]


@pytest.mark.parametrize("how, words", [
    ("tokens", ["'tokens'", "sum of 'shard_tokens'"]),
    ("shard_count", ["lists 2 shards but 1 'shard_tokens'"]),
    ("shard_size", ["train-00000.bin", "truncated or corrupt"]),
    ("no_vocab_size", ["tokenizer.vocab_size"]),
    ("no_splits", ["'splits'"]),
    ("no_val", ["no 'val' split"]),
    ("outside", ["file names inside the folder"]),
    ("dtype", ["'dtype'", "float32"]),
    ("small_dtype", ["uint16 cannot hold"]),
    ("repeated", ["more than once"]),
])
def test_a_lying_manifest_is_one_line_naming_the_file(data_dir, model_dir, capsys, how, words):
    manifest = _manifest(data_dir)
    _lie(manifest, how)
    _write_manifest(data_dir, manifest)
    message = _refused(data_dir, *words)
    named = str(data_dir / MANIFEST) if how != "shard_size" else str(data_dir / "train-00000.bin")
    assert named in message
    _cli_refuses(capsys, model_dir, data_dir, named)


def test_a_manifest_that_is_not_json_or_not_an_object(data_dir):
    (data_dir / MANIFEST).write_text("[1, 2]")
    _refused(data_dir, str(data_dir / MANIFEST))
    (data_dir / MANIFEST).write_text("{not json")
    _refused(data_dir, str(data_dir / MANIFEST))


def test_fresh_shards_are_never_cached(data_dir):
    """Timestamps are as coarse as a clock tick: a shard written just now may be rewritten
    within the same tick without changing its stat, so its max id is not remembered."""
    open_data(data_dir)
    assert not any(key[0].startswith(str(data_dir.resolve())) for key in shards._max_ids)


def test_the_max_id_is_cached_by_stat_and_rescanned_after_a_rewrite(data_dir, monkeypatch):
    scans = []
    real_scan = shards._scan
    monkeypatch.setattr(shards, "_scan", lambda tokens: scans.append(len(tokens)) or real_scan(tokens))
    monkeypatch.setattr(shards, "_now_ns", lambda: time.time_ns() + 10 * 10**9)  # every shard looks old
    open_data(data_dir)
    open_data(data_dir)
    assert len(scans) == 2  # train and val, once each
    time.sleep(0.05)  # past the filesystem's timestamp tick
    shard = data_dir / "train-00000.bin"
    tokens = np.fromfile(shard, dtype=np.uint16)
    tokens[3] = 65535
    tokens.tofile(shard)  # same size, same inode: only the timestamps change
    _refused(data_dir, str(shard), "token id 65535 at position 3")
    assert len(scans) == 3
