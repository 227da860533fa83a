"""induction: a hand-built two-layer induction circuit is found; a previous-token head is not."""
from __future__ import annotations

import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from conftest import save_tiny
from inheritune.analysis.induction import candidate_tokens, induction_scores, repeated_sequences, top_heads

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


def test_induction_cli_writes_scores_heatmaps_and_top_heads(tmp_path, capsys):
    import json

    from inheritune.cli import main

    save_tiny(tmp_path / "m", "llama", layers=2)
    out = tmp_path / "ind"
    code = main(["induction", str(tmp_path / "m"), "--out", str(out), "--seeds", "4", "--seg-len", "8"])
    assert code == 0, capsys.readouterr().err
    assert main(["induction", str(tmp_path / "m"), "--out", str(out), "--repeats", "1"]) == 2
    assert "at least 2 repeats" in capsys.readouterr().err
    result = json.loads((out / "induction.json").read_text())
    assert np.asarray(result["prefix"]).shape == (2, 4)
    assert len(result["top_heads"]) == 8
    assert result["top_heads"][0]["prefix"] == max(map(max, result["prefix"]))
    assert (out / "prefix_matching.png").stat().st_size > 0 and (out / "copying.png").is_file()
