"""importance and prune: exact zeros for dead heads/FFNs, masks that change nothing or exactly
remove what they should, baked weights equal to hooks for every family, and one-line CLI errors."""
from __future__ import annotations

import json
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import FAMILY_NAMES, generated_text, make_data_dir, save_tiny, tiny_model
from inheritune.analysis import importance as imp
from inheritune.analysis import prune as pr
from inheritune.analysis.hooks import head_mask
from inheritune.models.families import input_weights
from inheritune.cli import main
from inheritune.models.families import FAMILIES, blocks

DEAD = (1, 2)  # (layer, head) whose output projection columns are zeroed


def _kill_head(model, layer: int, head: int) -> None:
    proj = blocks(model)[layer].get_submodule(FAMILIES[model.config.model_type].attn_out)
    with torch.no_grad():
        input_weights(model.config, proj, head * 8, (head + 1) * 8).zero_()  # tiny models: 4 heads of 8


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def _ids(model, n=2, t=12, seed=0):
    return torch.randint(0, model.config.vocab_size, (n, t), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_head_with_zeroed_output_projection_has_zero_importance_and_ranks_last(family, tokenizer):
    model = tiny_model(family, 3)
    _kill_head(model, *DEAD)
    lm = imp.lm_examples(_ids(model, 4, 16))
    docs = generated_text(4, seed=1)
    task = imp.task_examples(tokenizer, [(d[:-8], d[-8:]) for d in docs], max_len=64)  # loss on the ending only
    assert all(ex.start > 1 for ex in task)
    for examples in (lm, task):
        scores = imp.head_importance(model, examples)
        assert scores.shape == (3, 4)
        assert scores[DEAD] == 0.0
        assert (np.delete(scores.ravel(), DEAD[0] * 4 + DEAD[1]) > 0).all()
        assert pr.plan(scores, np.zeros(3), 100 / 12, 0)["heads"] == [list(DEAD)]  # the first to go
    assert all(p.requires_grad for p in model.parameters())  # restored after the analysis


def test_task_examples_score_the_answer_only_and_accuracy_is_the_top_option(tokenizer):
    model = tiny_model("llama", 2)
    options = (" the", " dog", " mat")  # single tokens of the test tokenizer
    pairs = [("The cat sat on", " the"), ("The big red", " dog"), ("It was on the", " mat"), ("The cat", " cat")]
    examples = imp.task_examples(tokenizer, pairs, max_len=64, options=options)
    assert [len(ex.choices) for ex in examples] == [3, 3, 3, 0]  # " cat" is two tokens: no accuracy
    assert [ex.answer for ex in examples[:3]] == [0, 1, 2]
    expected_loss, hits = [], []
    for ex in examples:
        logits = _logits(model, ex.ids[None])[0]
        expected_loss.append(torch.nn.functional.cross_entropy(logits[ex.start - 1:-1], ex.ids[ex.start:]).item())
        if ex.choices:
            hits.append(int(logits[ex.start - 1, list(ex.choices)].argmax()) == ex.answer)
    result = imp.evaluate(model, examples)
    assert result["loss"] == pytest.approx(np.mean(expected_loss)) and result["accuracy"] == np.mean(hits)
    assert len(imp.task_examples(tokenizer, pairs[:1], max_len=3, options=options)[0].ids) == 3


def test_importance_is_the_mean_absolute_per_example_gradient():
    model = tiny_model("llama", 2)
    examples = imp.lm_examples(_ids(model, 3, 10))
    mask = torch.ones(2, 4, requires_grad=True)
    grads = []
    with head_mask(model, mask):
        for ex in examples:
            loss = torch.nn.functional.cross_entropy(model(input_ids=ex.ids[None]).logits[0, :-1], ex.ids[1:])
            grads.append(torch.autograd.grad(loss, mask)[0].abs())
    torch.testing.assert_close(torch.from_numpy(imp.head_importance(model, examples)), torch.stack(grads).mean(0))


def test_ffn_with_zeroed_output_has_zero_knockout_importance():
    model = tiny_model("llama", 3)
    with torch.no_grad():
        blocks(model)[0].mlp.down_proj.weight.zero_()
    ffn = imp.ffn_importance(model, imp.lm_examples(_ids(model, 2, 12)))["loss_increase"]
    assert ffn[0] == 0.0 and ffn[1] != 0.0 and ffn[2] != 0.0


def test_pruning_zero_percent_changes_nothing():
    model = tiny_model("llama", 3)
    ids = _ids(model)
    reference = _logits(model, ids)
    nothing = pr.plan(np.random.rand(3, 4), np.random.rand(3), 0, 0)
    assert nothing == {"heads": [], "ffn": []}
    with pr.masked(model, nothing):
        assert torch.equal(_logits(model, ids), reference)
    assert torch.equal(_logits(pr.bake(model, nothing), ids), reference)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_masking_all_heads_of_a_layer_equals_zeroing_its_output_projection_and_bake_equals_hooks(family):
    model = tiny_model(family, 3)
    ids = _ids(model)
    layer_heads = [[1, h] for h in range(4)]
    with pr.masked(model, {"heads": layer_heads, "ffn": []}):
        masked = _logits(model, ids)
    zeroed = tiny_model(family, 3)
    proj = blocks(zeroed)[1].get_submodule(FAMILIES[family].attn_out)
    with torch.no_grad():
        proj.weight.zero_()  # the bias, where there is one, is not a head's output and stays
    torch.testing.assert_close(masked, _logits(zeroed, ids), rtol=0, atol=1e-6)
    assert not torch.allclose(masked, _logits(model, ids))

    plan = {"heads": [[0, 1], [2, 3]] + layer_heads, "ffn": [0, 2]}
    with pr.masked(model, plan):
        hooked = _logits(model, ids)
    torch.testing.assert_close(_logits(pr.bake(model, plan), ids), hooked, rtol=0, atol=1e-6)


def test_masking_a_whole_layer_removes_its_attention_output():
    model = tiny_model("llama", 3)  # no output-projection bias: the heads are the whole attention output
    ids = _ids(model)
    with pr.masked(model, {"heads": [[1, h] for h in range(4)], "ffn": []}):
        masked = _logits(model, ids)
    attention = blocks(model)[1].self_attn
    handle = attention.register_forward_hook(lambda _m, _a, out: (torch.zeros_like(out[0]), *out[1:]))
    try:
        torch.testing.assert_close(masked, _logits(model, ids), rtol=0, atol=0)
    finally:
        handle.remove()


def test_least_important_is_global_and_rounds_the_percentage():
    scores = np.array([[5.0, 1.0], [0.5, 9.0], [2.0, 3.0]])
    assert pr.least_important(scores, 50).tolist() == [[False, True], [True, False], [True, False]]
    assert pr.least_important(scores, 100).all() and not pr.least_important(scores, 0).any()
    assert pr.tolerated_percent([0, 10, 20, 30], [1.0, 1.04, 1.06, 1.01], 1.0) == 10


def test_clusters_find_the_third_holding_the_top_units():
    scores = np.full((9, 4), 0.1)
    scores[3:6, 1:3] = 5.0  # six strong heads in the middle third
    c = imp.clusters(scores, top_share=6 / 36)
    assert c["peak"] == "middle" and c["top_count"] == {"early": 0, "middle": 6, "late": 0}
    assert c["mass_share"]["middle"] > 0.8
    assert imp.clusters(np.arange(9.0))["peak"] == "late"


def _cli(capsys, *args) -> tuple[int, str]:
    """Run the CLI in-process (one interpreter start for all cases); exit code and stderr."""
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def test_importance_then_prune_cli(tmp_path, tokenizer, capsys):
    model_dir = save_tiny(tmp_path / "m", "llama", layers=3, tok=tokenizer)
    data = make_data_dir(tmp_path / "data", tokenizer, n_docs=60, val_docs=20)
    code, err = _cli(capsys, "importance", model_dir, "--data", data, "--tasks", "mmlu-local", "--examples", "4",
             "--seq-len", "32", "--shots", "1", "--out", tmp_path / "imp")
    assert code == 0, err
    report = json.loads((tmp_path / "imp" / "importance.json").read_text())
    assert set(report["sources"]) == {"lm", "mmlu-local"}
    for source in report["sources"].values():
        assert np.asarray(source["head_importance"]).shape == (3, 4) and len(source["ffn_loss_increase"]) == 3
        assert source["clusters"]["heads"]["peak"] in ("early", "middle", "late")
    assert len((tmp_path / "imp" / "heads.csv").read_text().splitlines()) == 1 + 2 * 12
    assert (tmp_path / "imp" / "heads_lm.png").is_file() and (tmp_path / "imp" / "ffn_mmlu-local.png").is_file()

    out = tmp_path / "pruned"
    code, err = _cli(capsys, "prune", model_dir, "--data", data, "--examples", "4", "--seq-len", "32", "--heads", "50", "--ffn", "34",
             "--by", tmp_path / "imp" / "importance.json", "--sweep", "--steps", "0,50,100", "--out", out)
    assert code == 0, err
    result = json.loads((out / "prune.json").read_text())
    assert len(result["pruned_heads"]) == 6 and len(result["pruned_ffn"]) == 1
    lowest = np.argsort(np.asarray(report["sources"]["lm"]["head_importance"]).ravel(), kind="stable")[:6]
    assert sorted(l * 4 + h for l, h in result["pruned_heads"]) == sorted(lowest.tolist())
    assert result["after"]["lm"]["loss"] == pytest.approx(result["masked"]["lm"]["loss"], abs=1e-5)
    assert result["after"]["lm"]["loss"] != result["before"]["lm"]["loss"]
    sweep = result["sweep"]["lm"]
    assert sweep["heads"][0]["loss"] == pytest.approx(result["before"]["lm"]["loss"], abs=1e-6)
    assert (out / "sweep_lm_loss.png").is_file()

    reloaded = AutoModelForCausalLM.from_pretrained(out)  # plain transformers
    original = AutoModelForCausalLM.from_pretrained(model_dir)
    ids = _ids(original)
    with pr.masked(original, {"heads": result["pruned_heads"], "ffn": result["pruned_ffn"]}):
        torch.testing.assert_close(_logits(reloaded, ids), _logits(original, ids), rtol=0, atol=1e-6)


def test_cli_bad_input_is_one_line_and_keeps_outputs(tmp_path, tokenizer, capsys):
    from transformers import BloomConfig, BloomForCausalLM

    model_dir = save_tiny(tmp_path / "m", "llama", layers=2, tok=tokenizer)
    text = tmp_path / "t.txt"
    text.write_text(" ".join(generated_text(20)))
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "precious").write_text("x")
    for args, message in [
        (["prune", model_dir, "--text", text, "--heads", "150", "--out", tmp_path / "o"], "between 0 and 100"),
        (["prune", model_dir, "--text", text, "--ffn", "-1", "--out", tmp_path / "o"], "between 0 and 100"),
        (["prune", model_dir, "--text", text, "--sweep", "--steps", "0,x", "--out", tmp_path / "o"], "--steps"),
        (["importance", model_dir, "--out", tmp_path / "o"], "--data DIR or --text FILE"),
        (["prune", model_dir, "--text", text, "--by", tmp_path / "missing.json", "--out", tmp_path / "o"], "not found"),
        (["importance", model_dir, "--text", text, "--out", keep, "--overwrite", "--examples", "0"], "--examples"),
    ]:
        code, err = _cli(capsys, *args)
        assert code == 2, (args, err)
        assert err.startswith("inheritune: error:") and message in err and err.count("\n") == 1
    assert (keep / "precious").read_text() == "x"

    bloom = BloomForCausalLM(BloomConfig(vocab_size=320, hidden_size=16, n_layer=1, n_head=2))
    bloom.save_pretrained(tmp_path / "bloom")
    tokenizer.save_pretrained(tmp_path / "bloom")
    for command in (["induction"], ["importance", "--text", text], ["prune", "--text", text]):
        code, err = _cli(capsys, command[0], tmp_path / "bloom", *command[1:], "--out", tmp_path / "b")
        assert code == 2 and "unsupported architecture 'bloom'" in err and err.count("\n") == 1
    assert not (tmp_path / "b").exists()
