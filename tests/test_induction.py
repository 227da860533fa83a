"""induction: a hand-built two-layer induction circuit is found; a previous-token head is not."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from inheritune.analysis.induction_heads import candidate_tokens, induction_scores, repeated_sequences, top_heads
from inheritune.cli import main
from inheritune.analysis import induction_job as command

V = P = D = 32  # vocabulary, positions, head size: the residual stream is [token | position | previous token]
PREV, INDUCTION = (0, 0), (1, 0)  # (layer, head) of the two constructed heads


@torch.no_grad()
def induction_gpt2() -> GPT2LMHeadModel:
    """GPT-2 with 3 heads of size 32 per layer, all zero except two:

    layer 0 head 0 attends from position p to p - 1 and writes that token into the
    "previous token" subspace; layer 1 head 0 attends from a token to every position whose
    previous token equals it (an induction head) and writes the attended token into the token
    subspace, which the tied unembedding reads. MLPs are zero.
    """
    config = GPT2Config(vocab_size=V, n_positions=P, n_embd=3 * D, n_layer=2, n_head=3, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config).eval()
    for p in model.parameters():
        p.zero_()
    for ln in [model.transformer.ln_f] + [m for b in model.transformer.h for m in (b.ln_1, b.ln_2)]:
        ln.weight.fill_(1.0)
    tok, pos, prev = slice(0, D), slice(D, 2 * D), slice(2 * D, 3 * D)
    eye = torch.eye(D)
    model.transformer.wte.weight[:, tok] = eye
    model.transformer.wpe.weight[:, pos] = eye
    q, k, v = slice(0, D), slice(3 * D, 4 * D), slice(6 * D, 7 * D)  # head 0 of c_attn's [in, 3 * hidden]
    first, second = model.transformer.h
    first.attn.c_attn.weight[pos, q] = 3 * eye  # query: my position p
    first.attn.c_attn.weight[pos, k] = 3 * torch.roll(eye, 1, dims=1)  # key: position j matches p = j + 1
    first.attn.c_attn.weight[tok, v] = eye  # value: the token at j
    first.attn.c_proj.weight[0:D, prev] = eye / 7  # written into the previous-token subspace
    second.attn.c_attn.weight[tok, q] = 3 * eye  # query: my token
    second.attn.c_attn.weight[prev, k] = 3 * eye  # key: the token before j
    second.attn.c_attn.weight[tok, v] = eye
    second.attn.c_proj.weight[0:D, tok] = eye  # copy the attended token
    return model


def test_constructed_induction_head_has_top_prefix_score_and_previous_token_head_does_not():
    model = induction_gpt2()
    scores = induction_scores(model, candidate_tokens(V, special=(0,)), seg_len=6, repeats=4, seeds=8, bos=0)
    prefix, copying = scores["prefix"], scores["copying"]
    assert prefix.shape == copying.shape == (2, 3)
    assert np.unravel_index(prefix.argmax(), prefix.shape) == INDUCTION
    assert prefix[INDUCTION] > 0.9  # nearly all its attention goes to tokens after earlier occurrences
    assert prefix[PREV] < 0.1  # it looks at position p - 1, which is never such a token here
    assert np.unravel_index(copying.argmax(), copying.shape) == INDUCTION and copying[INDUCTION] > 1.0
    assert abs(copying[PREV]) < 0.1 * copying[INDUCTION]  # it writes outside what the unembedding reads
    assert top_heads(prefix, copying, k=1)[0]["layer"] == 1


def test_repeated_sequences_are_unique_tokens_in_range_repeated():
    candidates = candidate_tokens(100, special=(50,))
    assert candidates.min() == 4 and candidates.max() == 95 and 50 not in candidates
    ids = repeated_sequences(candidates, seg_len=10, repeats=4, seeds=[0, 1], bos=7)
    assert ids.shape == (2, 41) and (ids[:, 0] == 7).all()
    for row in ids:
        segment = row[1:11]
        assert len(set(segment.tolist())) == 10 and torch.equal(row[1:], segment.repeat(4))
    assert not torch.equal(ids[0], ids[1])


PLOTS = ("prefix_matching.png", "copying.png")


def _uniform_prefix(seg_len: int, repeats: int) -> float:
    """The prefix score of a head whose weights are all zero, so that it attends uniformly: after
    a BOS, the query at position p of repeat r has r - 1 targets among its p + 1 positions."""
    queries = range(1 + seg_len, 1 + seg_len * repeats)
    return float(np.mean([((p - 1) // seg_len) / (p + 1) for p in queries]))


def test_induction_cli_writes_the_scores_it_computes(tmp_path, capsys, monkeypatch):
    """induction.json, induction.csv and both heatmaps of the constructed model hold the scores of
    a direct ``induction_scores`` call; its four zero heads score as computed by hand."""
    induction_gpt2().save_pretrained(tmp_path / "m")  # no tokenizer: BOS and specials come from the config (0)
    plotted, draw = {}, command.heatmap

    def record(matrix, path, *args, **kwargs):
        plotted[Path(path).name] = (np.asarray(matrix), kwargs)
        return draw(matrix, path, *args, **kwargs)

    monkeypatch.setattr(command, "heatmap", record)
    out = tmp_path / "ind"
    assert main(["induction", str(tmp_path / "m"), "--out", str(out), "--seeds", "8", "--seg-len", "6"]) == 0, \
        capsys.readouterr().err
    assert main(["induction", str(tmp_path / "m"), "--out", str(out), "--repeats", "1"]) == 2
    assert "at least 2 repeats" in capsys.readouterr().err

    scores = induction_scores(induction_gpt2(), candidate_tokens(V, special=(0,)), seg_len=6, repeats=4, seeds=8, bos=0)
    prefix, copying = scores["prefix"], scores["copying"]
    for head in [(0, 1), (0, 2), (1, 1), (1, 2)]:
        assert prefix[head] == pytest.approx(_uniform_prefix(6, 4), rel=1e-5) and copying[head] == 0
    result = json.loads((out / "induction.json").read_text())
    assert result["token_ids"] == [2, 29] and result["bos"] == 0  # 32 ids less 4% at each end
    np.testing.assert_allclose(result["prefix"], prefix, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(result["copying"], copying, rtol=1e-5, atol=1e-7)
    expected = top_heads(prefix, copying, k=10)
    assert [(h["layer"], h["head"]) for h in result["top_heads"]] == [(h["layer"], h["head"]) for h in expected]
    assert (result["top_heads"][0]["layer"], result["top_heads"][0]["head"]) == INDUCTION
    rows = [line.split(",") for line in (out / "induction.csv").read_text().splitlines()[1:]]
    assert [(int(r[0]), int(r[1])) for r in rows] == [(layer, head) for layer in range(2) for head in range(3)]
    np.testing.assert_allclose([[float(r[2]), float(r[3])] for r in rows],
                               np.stack([prefix.ravel(), copying.ravel()], 1), rtol=1e-5, atol=1e-7)
    (shown_prefix, prefix_style), (shown_copying, copying_style) = (plotted[name] for name in PLOTS)
    np.testing.assert_allclose(shown_prefix, prefix, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(shown_copying, copying, rtol=1e-5, atol=1e-7)
    bound = float(np.abs(copying).max())
    assert (prefix_style["vmin"], prefix_style["vmax"]) == (0, 1)
    assert (copying_style["vmin"], copying_style["vmax"]) == pytest.approx((-bound, bound), rel=1e-5)
    assert all((out / name).is_file() for name in PLOTS)
