"""study: analyze, importance and induction joined per head and layer; a hand-built induction head
shows up with its importance and top induction score; correlations behave."""
from __future__ import annotations

import json

import numpy as np
import pytest

from inheritune.analysis.study_findings import correlation
from inheritune.commands.study import study
from test_induction import INDUCTION, V, induction_gpt2


def repeated_segments_data(path, windows: int = 40, seg_len: int = 6, repeats: int = 3, seed: int = 0):
    """A prepared data folder of token ids < V: random segments repeated, so that predicting the
    repeats needs the induction head (and nothing else in the constructed model can)."""
    from inheritune.data.shards import FORMAT, MANIFEST

    rng = np.random.default_rng(seed)
    ids = np.concatenate([np.tile(rng.choice(np.arange(1, V), seg_len, replace=False), repeats)
                          for _ in range(windows)]).astype(np.uint16)
    path.mkdir(parents=True)
    splits = {}
    for split in ("val", "train"):
        ids.tofile(path / f"{split}-00000.bin")
        splits[split] = {"shards": [f"{split}-00000.bin"], "shard_tokens": [ids.size], "tokens": int(ids.size),
                         "documents": windows}
    manifest = {"format": FORMAT, "dtype": "uint16", "seed": seed, "sources": ["generated"],
                "tokenizer": {"name": "none", "fingerprint": "none", "vocab_size": V, "eos_token_id": 0},
                "splits": splits}
    (path / MANIFEST).write_text(json.dumps(manifest))
    return path


@pytest.fixture(scope="module")
def constructed(tmp_path_factory, one_thread):
    tmp = tmp_path_factory.mktemp("study")
    data = repeated_segments_data(tmp / "data")
    result = study(induction_gpt2(), out=tmp / "out", data=data, tasks=(), examples=6, seq_len=18, sequences=4,
                   seeds=8)
    return result, tmp / "out"


def test_constructed_induction_head_is_joined_with_its_importance_and_top_induction_score(constructed):
    result, out = constructed
    row = next(h for h in result.heads if (h["layer"], h["head"]) == INDUCTION)
    assert row["prefix"] == max(h["prefix"] for h in result.heads) > 0.9
    # on repeated segments only the induction circuit predicts anything: it is the most important head
    assert row["importance_rank"] == 1 and row["importance"] == max(h["importance"] for h in result.heads)
    aggregate = json.loads((out / "importance" / "importance.json").read_text())["aggregate"]["head_importance"]
    assert row["importance"] == pytest.approx(aggregate[INDUCTION[0]][INDUCTION[1]])
    assert result.findings["induction"]["best_induction_head"] == list(INDUCTION)
    assert result.findings["induction"]["best_induction_head_importance_rank"] == 1


def test_every_head_and_layer_is_joined_and_written(constructed):
    result, out = constructed
    assert sorted((h["layer"], h["head"]) for h in result.heads) == [(l, h) for l in range(2) for h in range(3)]
    assert [r["layer"] for r in result.layers] == [0, 1]
    heads_csv = (out / "heads.csv").read_text().splitlines()
    assert heads_csv[0].split(",")[:2] == ["layer", "head"] and len(heads_csv) == 1 + 6
    assert len((out / "layers.csv").read_text().splitlines()) == 1 + 2
    for layer in result.layers:  # summed head importance per layer is the sum of its heads' rows
        assert layer["head_importance"] == pytest.approx(
            sum(h["importance"] for h in result.heads if h["layer"] == layer["layer"]))
    assert json.loads((out / "study.json").read_text()) == result.report()
    for name in ("analysis/analysis.json", "induction/induction.json", "study.md", "importance_vs_induction.png"):
        assert (out / name).is_file(), name
    assert result.findings["induction"]["text"] in (out / "study.md").read_text()


def test_correlation_of_identical_inputs_is_one_and_of_shuffled_ones_is_not_significant():
    rng = np.random.default_rng(0)
    x = rng.normal(size=60)
    same = correlation("a", "a", x, x.copy(), np.random.default_rng(1))
    assert same["spearman"] == pytest.approx(1.0) and same["n"] == 60 and same["p_value"] < 0.01
    assert same["strength"].startswith("strong positive, significant")
    noise = correlation("a", "b", x, rng.normal(size=60), np.random.default_rng(1))
    assert abs(noise["spearman"]) < 0.3 and noise["p_value"] > 0.05 and "not significant" in noise["strength"]
    flat = correlation("a", "b", x, np.ones(60), np.random.default_rng(1))
    assert flat["spearman"] is None and flat["p_value"] is None


def test_study_refuses_without_data_or_text_before_loading(tmp_path):
    from inheritune.errors import InherituneError

    with pytest.raises(InherituneError, match="exactly one of --data"):
        study("no-such-model", out=tmp_path / "o")


def test_lazy_finding_compares_lazy_with_other_layers_and_says_when_it_cannot():
    from inheritune.analysis.study_findings import lazy_finding

    lazy = np.array([False, True, True, False])
    found = lazy_finding(np.array([4.0, 1.0, 2.0, 6.0]), np.array([0.1, 0.5, 0.3, 0.1]), lazy, {"strength": "s"})
    assert found["heads"] == {"lazy": 1.5, "other": 5.0} and found["ffn"]["lazy"] == pytest.approx(0.4)
    assert "less head importance" in found["text"] and "more FFN importance" in found["text"]
    none = lazy_finding(np.ones(4), np.ones(4), np.zeros(4, dtype=bool), {"strength": "s"})
    assert none["heads"] is None and "no layer is lazy" in none["text"]
