"""prune: ranked on one split and scored on another (overlap refused or counted), iterative pruning
that re-scores, the three criteria, intervals and chance, sweeps, physical removal's refusal, and
whole-block pruning (--drop-layers) through analysis.layers."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import make_data_dir, save_tiny, tiny_model
from inheritune.analysis import unit_importance as imp
from inheritune.analysis import unit_pruning as pr
from inheritune.analysis.hooks import head_mask
from inheritune.analysis.layers import SWEEP
from inheritune.cli import main
from inheritune.analysis.sampling import tokens_from
from inheritune.analysis.example_sources import half_windows
from inheritune.pruning.unit_masks import overlap, rescorer
from inheritune.models.families import blocks, num_layers


@pytest.fixture(scope="module")
def work(tmp_path_factory, one_thread):
    from conftest import make_tokenizer

    tmp = tmp_path_factory.mktemp("prune")
    tok = make_tokenizer()
    return {"tmp": tmp, "tok": tok, "model": save_tiny(tmp / "m", "llama", layers=3, tok=tok),
            "data": make_data_dir(tmp / "data", tok, n_docs=60, val_docs=20)}


def _cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _ids(model, n=2, t=12, seed=0):
    return torch.randint(0, model.config.vocab_size, (n, t), generator=torch.Generator().manual_seed(seed))


# ---- disjoint rank / score splits -----------------------------------------------------------------

def test_rank_and_score_windows_share_no_token_and_overlap_counts_shared_tokens():
    tokens = np.arange(1000)
    split = half_windows(tokens, 16, 40, seed=3)
    for ex in split["rank"]:
        assert int(ex.ids.max()) < 500  # the token values are their positions here
    for ex in split["score"]:
        assert int(ex.ids.min()) >= 500
    assert overlap(split["rank_ids"], split["score_ids"]) == 0
    assert overlap(["val:0-40", "val:480-520"], ["val:519-559", "val:600-640"]) == 1  # one shared token
    assert overlap(["q1", "q2"], ["q2", "q3", "val:0-40"]) == 1


def _importance_json(path, ids: list[str], shape=(3, 4)):
    """An importance.json whose lm source claims to be ranked on ``ids`` (head 0 of layer 0 least important)."""
    heads = np.arange(1, 1 + shape[0] * shape[1], dtype=float).reshape(shape)
    source = {"split": "val", "ids": ids, "head_importance": heads.tolist(), "ffn_loss_increase": [3.0, 1.0, 2.0]}
    path.write_text(json.dumps({"sources": {"lm": source}}))
    return path


def test_scores_ranked_on_scoring_examples_are_refused_or_counted_with_a_warning(work, capsys):
    w = work
    common = ["prune", w["model"], "--data", w["data"], "--examples", "3", "--seq-len", "16", "--heads", "25"]
    split = half_windows(tokens_from(w["data"], None, w["tok"]), 3, 16, seed=0)  # what prune will score on

    clean = _importance_json(w["tmp"] / "clean.json", split["rank_ids"])
    code, _, err = _cli(capsys, *common, "--scores", clean, "--out", w["tmp"] / "clean")
    assert code == 0, err
    report = json.loads((w["tmp"] / "clean" / "prune.json").read_text())
    assert report["overlap"] == 0 and report["pruned_heads"][:1] == [[0, 0]] and report["ranked_by"] == str(clean)

    seen = _importance_json(w["tmp"] / "seen.json", split["rank_ids"] + split["score_ids"][:2])
    code, _, err = _cli(capsys, *common, "--scores", seen, "--out", w["tmp"] / "refused")
    assert code == 2 and err.count("\n") == 1
    assert "ranked 'lm' on 2 of the 3 examples prune scores on" in err and "--allow-overlap" in err
    assert not (w["tmp"] / "refused").exists()

    code, _, err = _cli(capsys, *common, "--scores", seen, "--allow-overlap", "--out", w["tmp"] / "warned")
    assert code == 0 and "WARNING" in err and "2 of the 3" in err
    assert json.loads((w["tmp"] / "warned" / "prune.json").read_text())["overlap"] == 2

    unnamed = _importance_json(w["tmp"] / "unnamed.json", [])  # LM windows drawn anywhere in val
    code, _, err = _cli(capsys, *common, "--scores", unnamed, "--out", w["tmp"] / "unnamed")
    assert code == 2 and "does not name the examples" in err


def test_importance_command_output_feeds_prune_without_overlap(work, capsys):
    """`importance` ranks LM windows in the first half of the val tokens, prune scores the second."""
    w = work
    code, _, err = _cli(capsys, "importance", w["model"], "--data", w["data"], "--examples", "3", "--seq-len", "16",
                        "--out", w["tmp"] / "imp")
    assert code == 0, err
    code, _, err = _cli(capsys, "prune", w["model"], "--data", w["data"], "--examples", "3", "--seq-len", "16",
                        "--heads", "50", "--ffn", "34", "--scores", w["tmp"] / "imp" / "importance.json",
                        "--out", w["tmp"] / "p1")
    assert code == 0, err
    ranked = np.asarray(json.loads((w["tmp"] / "imp" / "importance.json").read_text())["sources"]["lm"]["head_importance"])
    result = json.loads((w["tmp"] / "p1" / "prune.json").read_text())
    assert result["overlap"] == 0
    lowest = np.argsort(ranked.ravel(), kind="stable")[:6]
    assert sorted(l * 4 + h for l, h in result["pruned_heads"]) == sorted(lowest.tolist())
    assert result["after"]["lm"]["loss"] == pytest.approx(result["masked"]["lm"]["loss"], abs=1e-5)

    reloaded = AutoModelForCausalLM.from_pretrained(w["tmp"] / "p1")  # plain transformers
    original = AutoModelForCausalLM.from_pretrained(w["model"])
    ids = _ids(original)
    with torch.no_grad(), pr.masked(original, {"heads": result["pruned_heads"], "ffn": result["pruned_ffn"]}):
        torch.testing.assert_close(reloaded(input_ids=ids).logits, original(input_ids=ids).logits, rtol=0, atol=1e-6)


# ---- iterative pruning ------------------------------------------------------------------------------

def _redundant_pair():
    """One layer whose heads 0 and 1 are identical (same query rows, shared kv head, same output
    columns), scaled so that together they sit at the minimum of the loss along their common
    scale: each has importance ~0 while the other is there, and removing one makes the other matter.
    Heads 2 and 3 are made weak (output columns x0.1) so that they rank below the survivor."""
    model = tiny_model("llama", 1, seed=3)
    attn = blocks(model)[0].self_attn
    ex = imp.lm_examples(_ids(model, 1, 24, seed=3))
    with torch.no_grad():
        attn.q_proj.weight[8:16] = attn.q_proj.weight[0:8]
        attn.o_proj.weight[:, 8:16] = attn.o_proj.weight[:, 0:8]
        attn.o_proj.weight[:, 16:32] *= 0.1
    scale = torch.tensor(1.0, requires_grad=True)
    for _ in range(30):  # Newton's method on the pair's common scale
        with head_mask(model, torch.stack([scale, scale, torch.tensor(1.0), torch.tensor(1.0)])[None]):
            loss = imp.scored_losses(model, ex[0].ids[None], ex[:1])[0][0]
        (slope,) = torch.autograd.grad(loss, scale, create_graph=True)
        (curvature,) = torch.autograd.grad(slope, scale)
        with torch.no_grad():
            scale -= slope / curvature
    assert abs(float(slope.detach())) < 1e-6 and float(curvature) > 0  # a true minimum: the construction holds
    with torch.no_grad():
        attn.o_proj.weight[:, 0:16] *= float(scale)
    return model, ex


def test_iterative_pruning_re_scores_and_keeps_the_survivor_of_a_redundant_pair(one_thread):
    model, ex = _redundant_pair()
    rescore = rescorer(model, ex)
    oneshot = pr.plan(*rescore({"heads": [], "ffn": []}), 50, 0)
    assert oneshot["heads"] == [[0, 0], [0, 1]]  # both look useless while the other is there

    pruning, history = pr.iterative_plan(rescore, 50, 0, steps=2)
    first, second = history[0][0][0], history[1][0][0]
    assert first[1] < 1e-6 and second[1] > 100 * max(first[1], 1e-9)  # head 1 became important
    assert second[0] == 0.0  # the pruned head is masked while re-scoring
    assert pruning["heads"][0] == [0, 0] and [0, 1] not in pruning["heads"] and len(pruning["heads"]) == 2


def test_iterative_cli_records_every_step_and_refuses_other_criteria(work, capsys):
    w = work
    common = ["prune", w["model"], "--data", w["data"], "--examples", "2", "--seq-len", "16", "--heads", "50"]
    code, _, err = _cli(capsys, *common, "--iterative", "3", "--sweep", "--steps", "0,25,50", "--ffn-steps", "0,34",
                        "--out", w["tmp"] / "iter")
    assert code == 0, err
    report = json.loads((w["tmp"] / "iter" / "prune.json").read_text())
    assert report["iterative"] == 3 and len(report["steps"]) == 3 and len(report["pruned_heads"]) == 6
    assert len(report["sweep"]["lm"]["importance"]["heads"]["points"]) == 3  # re-scored at every sweep point
    for step, heads_so_far in zip(report["steps"][1:], (2, 4)):  # pruned heads score exactly 0 when re-scored
        assert sum(v == 0.0 for row in step for v in row) >= heads_so_far
    code, _, err = _cli(capsys, *common, "--iterative", "2", "--by", "random", "--out", w["tmp"] / "no")
    assert code == 2 and "--iterative" in err


# ---- criteria ---------------------------------------------------------------------------------------

def test_induction_removes_the_highest_prefix_score_first_and_random_follows_the_seed():
    importance = (np.ones((2, 3)), np.array([2.0, 1.0]))
    prefix = np.array([[0.1, 0.9, 0.2], [0.8, 0.0, 0.3]])
    heads, ffn = pr.keep_scores("induction", importance, prefix, (2, 3), seed=0)
    assert pr.plan(heads, ffn, 34, 50) == {"heads": [[0, 1], [1, 0]], "ffn": [1]}  # FFNs go by importance
    a = pr.plan(*pr.keep_scores("random", None, None, (4, 8), seed=1), 50, 50)
    assert a == pr.plan(*pr.keep_scores("random", None, None, (4, 8), seed=1), 50, 50)
    assert a != pr.plan(*pr.keep_scores("random", None, None, (4, 8), seed=2), 50, 50)
    assert pr.plan(*pr.keep_scores("importance", importance, None, (2, 3), 0), 0, 50)["ffn"] == [1]


def test_intervals_contain_the_estimate_and_chance_is_the_mean_of_one_over_options():
    assert pr.wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)  # the textbook value
    low, high = pr.wilson(7, 10)
    assert low < 0.7 < high and pr.wilson(70, 100)[1] - pr.wilson(70, 100)[0] < high - low
    values = np.random.default_rng(0).normal(2.0, 1.0, 50)
    low, high = pr.bootstrap_mean(values)
    assert low < values.mean() < high and pr.bootstrap_mean(values) == (low, high)

    model = tiny_model("llama", 1)
    ids = _ids(model, 3, 8)
    examples = [imp.Example(ids[0], 7, (5, 6), 0), imp.Example(ids[1], 7, (5, 6, 7, 8), 1), imp.Example(ids[2], 1)]
    s = pr.score(model, examples)
    assert s["chance"] == pytest.approx((1 / 2 + 1 / 4) / 2)
    assert s["accuracy"] in (0.0, 0.5, 1.0) and s["accuracy_ci"][0] <= s["accuracy"] <= s["accuracy_ci"][1]
    assert s["loss_ci"][0] <= s["loss"] <= s["loss_ci"][1]


def test_sweep_scores_every_criterion_on_the_held_out_split_with_intervals(tmp_path, one_thread, capsys):
    from conftest import make_tokenizer

    tok = make_tokenizer(300)
    tok.add_tokens([" A", " B", " C", " D"])  # single-token options: accuracy can be read off one distribution
    w = {"model": save_tiny(tmp_path / "m", "llama", layers=3, tok=tok), "data": make_data_dir(tmp_path / "d", tok)}
    out = tmp_path / "sweep"
    code, stdout, err = _cli(capsys, "prune", w["model"], "--data", w["data"], "--tasks", "mmlu-stem", "--shots", "0",
                             "--examples", "4", "--seq-len", "16", "--sweep", "--steps", "0,50,100",
                             "--ffn-steps", "0,34", "--source", "lm", "--out", out)
    assert code == 0, err
    report = json.loads((out / "prune.json").read_text())
    assert set(report["sweep"]) == {"lm", "mmlu-stem/0shot"}
    for name, by_criterion in report["sweep"].items():
        assert set(by_criterion) == {"importance", "induction", "random"}
        assert "ffn" not in by_criterion["induction"]  # induction orders heads only
        for kinds in by_criterion.values():
            first = kinds["heads"]["points"][0]
            assert first["loss"] == pytest.approx(report["before"][name]["loss"], abs=1e-6)  # 0% = the model
            for point in kinds["heads"]["points"]:
                assert point["loss_ci"][0] <= point["loss"] <= point["loss_ci"][1]
    task = report["before"]["mmlu-stem/0shot"]
    assert task["chance"] == pytest.approx(0.25) and task["accuracy_ci"][0] <= task["accuracy"] <= task["accuracy_ci"][1]
    assert report["prunable"]["mmlu-stem/0shot"]["importance"]["metric"] == "accuracy"
    assert report["prunable"]["lm"]["random"]["metric"] == "loss"
    assert (out / "sweep_lm_loss.png").is_file() and (out / "sweep_mmlu-stem_0shot_accuracy.png").is_file()
    assert "within 5% accuracy" in stdout


# ---- physical removal -------------------------------------------------------------------------------

def test_physical_removal_says_why_it_keeps_masks(work, capsys):
    w = work
    code, stdout, err = _cli(capsys, "prune", w["model"], "--data", w["data"], "--examples", "2", "--seq-len", "16",
                             "--heads", "25", "--physical", "--out", w["tmp"] / "phys")
    assert code == 0, err
    report = json.loads((w["tmp"] / "phys" / "prune.json").read_text())
    assert "no prune_heads" in report["physical"] and report["physical"] in stdout
    saved = AutoModelForCausalLM.from_pretrained(w["tmp"] / "phys")
    original = AutoModelForCausalLM.from_pretrained(w["model"])
    assert sum(p.numel() for p in saved.parameters()) == sum(p.numel() for p in original.parameters())


# ---- whole blocks -----------------------------------------------------------------------------------

def test_drop_layers_removes_the_chosen_blocks_and_the_folder_reloads(work, capsys):
    w = work
    out = w["tmp"] / "layers"
    code, stdout, err = _cli(capsys, "prune", w["model"], "--data", w["data"], "--examples", "2", "--seq-len", "16",
                             "--drop-layers", "1", "--by", "first-n", "--sweep", "--out", out)
    assert code == 0, err
    report = json.loads((out / "prune.json").read_text())
    assert report["dropped_layers"] == [2] and report["by"] == "first-n"
    assert set(report["sweep"]["layers"]["val_loss"]) == set(SWEEP)  # every selector that takes no parameter
    pruned = AutoModelForCausalLM.from_pretrained(out)
    original = AutoModelForCausalLM.from_pretrained(w["model"])
    assert num_layers(pruned.config) == 2
    for kept in (0, 1):
        for a, b in zip(blocks(pruned)[kept].parameters(), blocks(original)[kept].parameters()):
            assert torch.equal(a, b)
    assert (out / "sweep_layers.png").is_file() and "dropped blocks [2]" in stdout


@pytest.mark.parametrize("extra, message", [
    (["--drop-layers", "1", "--by", "random"], "not a block selector"),
    (["--drop-layers", "1", "--by", "angulr"], "did you mean 'angular'"),
    (["--drop-layers", "1", "--by", "first-last"], "needs a parameter"),
    (["--by", "angular"], "with --drop-layers"),
    (["--drop-layers", "1", "--heads", "10"], "without --heads"),
    (["--drop-layers", "3"], "0..2"),
])
def test_criteria_belong_to_their_mode(work, capsys, extra, message):
    w = work
    code, _, err = _cli(capsys, "prune", w["model"], "--data", w["data"], "--examples", "2", "--seq-len", "16",
                        *extra, "--out", w["tmp"] / "bad")
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (w["tmp"] / "bad").exists()


def test_device_map_auto_prunes_like_the_default_device(work, tmp_path):
    from inheritune import prune

    w = work
    common = dict(data=w["data"], examples=2, seq_len=16, heads=25.0, ffn=34.0)
    default = prune(w["model"], out=tmp_path / "cpu", **common)
    spread = prune(w["model"], out=tmp_path / "auto", device_map="auto", **common)
    assert spread.pruned_heads == default.pruned_heads and spread.pruned_ffn == default.pruned_ffn
    assert spread.after["lm"]["loss"] == pytest.approx(default.after["lm"]["loss"], abs=1e-5)
