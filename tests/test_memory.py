"""Batch sizes follow the free memory, and a batch that still runs out of memory is split, not fatal."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import generated_text, save_tiny, tiny_model
from inheritune.analysis import unit_importance as imp
from inheritune.analysis import batching
from inheritune.analysis.lazy_layers import measure_attention
from inheritune.analysis.induction_heads import candidate_tokens, induction_scores
from inheritune.analysis.block_scores import column_mass
from inheritune.cli import main
from inheritune.errors import InherituneError
from inheritune.models.families import blocks


@pytest.mark.parametrize("free, planned", [(2**30, 2**28), (3 * 2**30, 2**29), (2**20, batching.FLOOR),
                                           (2**45, batching.CEILING)])
def test_budget_is_a_power_of_two_share_of_the_free_memory(monkeypatch, free, planned):
    monkeypatch.setattr(batching, "host_free", lambda: free)
    assert batching.budget(tiny_model("llama", 1)) == planned


def test_budget_reads_the_hosts_free_memory():
    assert 0 < batching.host_free() and batching.FLOOR <= batching.budget(tiny_model("llama", 1)) <= batching.CEILING


def _refusing(limit: int, error: BaseException):
    """A ``run`` that returns its piece, and raises ``error`` for pieces longer than ``limit``."""
    calls = []

    def run(piece):
        calls.append(len(piece))
        if len(piece) > limit:
            raise error
        return list(piece)
    return run, calls


def test_a_piece_out_of_memory_is_retried_in_halves_for_the_rest_of_the_run(capsys):
    run, calls = _refusing(2, torch.OutOfMemoryError("CUDA out of memory"))
    batcher = batching.Batcher(8, "scoring")
    done = [x for piece in batcher.pieces(range(10), len, run) for x in piece]
    assert done == list(range(10))
    assert calls == [8, 4, 2, 2, 2, 2, 2] and batcher.limit == 2
    assert capsys.readouterr().out.count("scoring: out of memory with") == 2


def test_the_cpu_allocators_refusal_counts_as_out_of_memory():
    refusal = RuntimeError("[enforce fail at alloc_cpu.cpp:116] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 1099511627776 bytes")
    run, _calls = _refusing(1, refusal)
    assert [x for piece in batching.Batcher(4, "x").pieces(range(3), len, run) for x in piece] == [0, 1, 2]


def test_other_errors_pass_through_and_one_item_out_of_memory_says_what_to_do():
    run, _calls = _refusing(0, RuntimeError("shape mismatch"))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        list(batching.Batcher(4, "x").pieces(range(3), len, run))
    run, _calls = _refusing(0, torch.OutOfMemoryError("CUDA out of memory"))
    with pytest.raises(InherituneError, match="head importance: out of memory with a single item.*--device-map auto"):
        list(batching.Batcher(4, "head importance").pieces(range(3), len, run))


class _Cramped:
    """Makes ``model`` run out of memory when more than ``rows`` rows reach its last block (the
    knock-outs' rows multiply inside the model)."""

    def __init__(self, model, rows: int):
        self.rows, self.refused = rows, 0
        blocks(model)[-1].register_forward_pre_hook(self.check, with_kwargs=True)

    def check(self, _module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        if hidden.shape[0] > self.rows:
            self.refused += 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_importance_scores_are_the_same_when_batches_must_shrink(one_thread, capsys):
    model = tiny_model("llama", 3)
    examples = [imp.Example(torch.randint(0, 320, (n,), generator=torch.Generator().manual_seed(n)), 1)
                for n in (12, 9, 20, 7, 15)]
    heads, ffn, scores = (imp.head_importance(model, examples), imp.ffn_importance(model, examples),
                          imp.per_example(model, examples))
    cramped = _Cramped(model, 2)
    np.testing.assert_allclose(imp.head_importance(model, examples), heads, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(imp.ffn_importance(model, examples)["loss_increase"], ffn["loss_increase"], atol=1e-6)
    np.testing.assert_allclose(imp.per_example(model, examples)[0], scores[0], atol=1e-6)
    printed = capsys.readouterr().out
    assert cramped.refused >= 3 and all(f"{what}: out of memory" in printed
                                        for what in ("head importance", "FFN knock-outs", "scoring"))


def test_attention_analyses_split_their_batches_too(one_thread):
    model = tiny_model("llama", 2)
    ids = torch.randint(0, 320, (6, 16), generator=torch.Generator().manual_seed(0))
    options = dict(tau=0.9, lazy_rank=0.1, lazy_mass=0.5, bi_share=0.9, min_depth=0.25)
    whole, mass = measure_attention(model, ids, batch_size=6, **options), column_mass(model, ids)
    induction = induction_scores(model, candidate_tokens(320, 0.04, ()), seg_len=5, repeats=3, seeds=6)
    cramped = _Cramped(model, 2)
    split = measure_attention(model, ids, batch_size=6, **options)
    for name, values in whole[1].items():  # per-head metrics
        np.testing.assert_allclose(split[1][name], values, rtol=1e-5, atol=1e-6, err_msg=name)
    torch.testing.assert_close(split[2], whole[2])  # mean attention maps
    assert column_mass(model, ids) == pytest.approx(mass)
    again = induction_scores(model, candidate_tokens(320, 0.04, ()), seg_len=5, repeats=3, seeds=6, batch_size=6)
    np.testing.assert_allclose(again["prefix"], induction["prefix"], atol=1e-6)
    np.testing.assert_allclose(again["copying"], induction["copying"], atol=1e-5)
    assert cramped.refused >= 3


def test_cli_out_of_memory_on_one_example_is_one_line_and_writes_nothing(tmp_path, tokenizer, capsys, monkeypatch):
    model = save_tiny(tmp_path / "model", "llama", 2, tok=tokenizer)
    (tmp_path / "t.txt").write_text("\n".join(generated_text(20)))

    def no_memory(*_args, **_kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")

    monkeypatch.setattr(imp, "scored_losses", no_memory)
    capsys.readouterr()
    out = tmp_path / "importance"
    assert main(["importance", str(model), "--text", str(tmp_path / "t.txt"), "--examples", "2", "--seq-len", "16",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("inheritune: error: head importance: out of memory with a single item")
    assert "\n" not in err and "Traceback" not in err and not out.exists()
