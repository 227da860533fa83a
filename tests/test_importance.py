"""importance and prune: exact zeros for dead heads/FFNs, batched scores equal to one-example ones
for every family, overlaps across sources, masks that change nothing or exactly remove what they
should, baked weights equal to hooks for every family, and one-line CLI errors."""
from __future__ import annotations

import json
import numpy as np
import pytest
import torch

from conftest import FAMILY_NAMES, generated_text, make_data_dir, needs_tasks, save_tiny, tiny_model
from inheritune.analysis import unit_importance as imp
from inheritune.analysis import overlap as ov
from inheritune.analysis import unit_pruning as pr
from inheritune.analysis.hooks import ffn_knockout
from inheritune.evaluation.prompt_format import Prompt
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
    task = imp.task_examples(tokenizer, [Prompt(d[:-8], d[-8:], ()) for d in docs], max_len=64)  # the ending only
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
    prompts = [Prompt(text, answer, options) for text, answer in pairs] + [Prompt("The cat", " on", (" the", " on"))]
    examples = imp.task_examples(tokenizer, prompts, max_len=64)
    assert [len(ex.choices) for ex in examples] == [3, 3, 3, 0, 2]  # " cat" is two tokens: no accuracy
    assert [ex.answer for ex in examples] == [0, 1, 2, -1, 1]  # each prompt's own options, any count
    expected_loss, hits = [], []
    for ex in examples:
        logits = _logits(model, ex.ids[None])[0]
        expected_loss.append(torch.nn.functional.cross_entropy(logits[ex.start - 1:-1], ex.ids[ex.start:]).item())
        if ex.choices:
            hits.append(int(logits[ex.start - 1, list(ex.choices)].argmax()) == ex.answer)
    result = imp.evaluate(model, examples)
    assert result["loss"] == pytest.approx(np.mean(expected_loss)) and result["accuracy"] == np.mean(hits)
    assert len(imp.task_examples(tokenizer, prompts[:1], max_len=3)[0].ids) == 3


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


def _random_examples(n: int = 4, seed: int = 0) -> list[imp.Example]:
    """Sequences of different lengths scored from different starts (LM windows and task-like tails)."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(12, 1), (9, 5), (20, 18), (7, 3), (15, 14), (10, 1)][:n]
    return [imp.Example(torch.randint(0, 320, (length,), generator=g), start) for length, start in shapes]


def _one_at_a_time_loss(model, ex):
    logits = model(input_ids=ex.ids[None]).logits[0]
    return torch.nn.functional.cross_entropy(logits[ex.start - 1:-1], ex.ids[ex.start:])


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_batched_scores_equal_one_example_at_a_time(family, one_thread):
    model = tiny_model(family, 3)
    examples = _random_examples()
    mask = torch.ones(3, 4, requires_grad=True)
    with head_mask(model, mask):
        grads = [torch.autograd.grad(_one_at_a_time_loss(model, ex), mask)[0].abs() for ex in examples]
    batched = imp.head_importance(model, examples, tokens=40)  # padded batches of 2 and of 1
    np.testing.assert_allclose(batched, torch.stack(grads).mean(0).numpy(), rtol=1e-5, atol=1e-7)

    with torch.no_grad():
        base = np.mean([_one_at_a_time_loss(model, ex).item() for ex in examples])
        knocked = []
        for layer in range(3):
            with ffn_knockout(model, [layer]):
                knocked.append(np.mean([_one_at_a_time_loss(model, ex).item() for ex in examples]) - base)
    ffn = imp.ffn_importance(model, examples)
    np.testing.assert_allclose(ffn["loss_increase"], knocked, rtol=1e-5, atol=1e-6)
    assert ffn["loss"] == pytest.approx(base, abs=1e-6) and imp.evaluate(model, examples, 30)["loss"] == pytest.approx(base, abs=1e-6)


def test_knockouts_split_into_passes_when_the_logits_would_not_fit(monkeypatch, one_thread):
    model = tiny_model("llama", 5)
    examples = _random_examples(2)
    whole = imp.ffn_importance(model, examples)
    assert whole["loss_increase"] == imp.ffn_importance(model, examples, limit=10**12)["loss_increase"]
    passes = []
    branching = imp.branching_knockouts
    monkeypatch.setattr(imp, "branching_knockouts", lambda m, layers: passes.append(list(layers)) or branching(m, layers))
    limit = 3 * imp.row_bytes(model, examples[0])  # the intact row and two knocked-out layers per pass at most
    split = imp.ffn_importance(model, examples[:1], limit=limit)
    assert passes == [[0, 1], [2, 3], [4]]
    np.testing.assert_allclose(split["loss_increase"], imp.ffn_importance(model, examples[:1])["loss_increase"], atol=1e-6)


def test_wired_heads_rank_first_on_every_task(tokenizer, one_thread):
    model = tiny_model("llama", 3)
    wired = [(0, 1), (1, 3), (2, 0)]
    for layer in range(3):
        for head in range(4):
            if (layer, head) not in wired:
                _kill_head(model, layer, head)  # the other heads cannot reach the answer
    docs = generated_text(12, seed=2)
    tasks = {"ending": [Prompt(d[:-6], d[-6:], ()) for d in docs[:4]],
             "middle": [Prompt(d[:len(d) // 2], d[len(d) // 2:len(d) // 2 + 4], ()) for d in docs[4:8]],
             "choice": [Prompt(d[:20], " the", (" the", " dog", " mat")) for d in docs[8:]]}
    for name, prompts in tasks.items():
        scores = imp.head_importance(model, imp.task_examples(tokenizer, prompts, max_len=64))
        top = {divmod(int(i), 4) for i in np.argsort(-scores.ravel(), kind="stable")[:3]}
        assert top == set(wired), name
        assert (np.delete(scores.ravel(), [l * 4 + h for l, h in wired]) == 0).all(), name


def test_identical_tasks_agree_fully_and_the_overlap_measures_are_right(tokenizer, one_thread):
    model = tiny_model("llama", 3)
    prompts = [Prompt(d[:-6], d[-6:], ()) for d in generated_text(3, seed=4)]
    same = [imp.head_importance(model, imp.task_examples(tokenizer, prompts, max_len=64)) for _ in range(2)]
    other = imp.head_importance(model, imp.lm_examples(_ids(model, 3, 16)))
    c = ov.compare({"a": same[0], "b": same[1], "lm": other})
    assert c["spearman"][0][1] == pytest.approx(1.0) and c["jaccard"][0][1] == 1.0 and c["top_k"] == 2
    assert c["mean_spearman"] == pytest.approx((1 + 2 * c["spearman"][0][2]) / 3)

    assert ov.spearman(np.arange(6), -np.arange(6.0)) == pytest.approx(-1.0)
    assert ov.spearman(np.arange(5), np.full(5, 2.0)) is None
    assert ov.ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]  # ties share their mean
    assert ov.jaccard(np.array([4, 3, 0, 0]), np.array([0, 0, 3, 4]), 2) == 0.0
    assert ov.jaccard(np.array([4, 3, 2, 0]), np.array([4, 0, 3, 2]), 2) == pytest.approx(1 / 3)
    np.testing.assert_allclose(ov.aggregate({"x": np.array([1.0, 3.0]), "y": np.array([-5.0, 10.0])}), [0.125, 0.875])


def _cli(capsys, *args) -> tuple[int, str]:
    """Run the CLI in-process (one interpreter start for all cases); exit code and stderr."""
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


@needs_tasks("mmlu-stem", "bb-navigate")
def test_importance_cli_writes_every_task_and_shot_source_and_the_overlaps(tmp_path, tokenizer, capsys, one_thread):
    from inheritune.analysis.example_sources import query_ids
    from inheritune.evaluation import suite

    model_dir = save_tiny(tmp_path / "m", "llama", layers=3, tok=tokenizer)
    data = make_data_dir(tmp_path / "data", tokenizer, n_docs=60, val_docs=20)
    code = main([str(a) for a in ("importance", model_dir, "--data", data, "--tasks", "mmlu-stem,bb-navigate",
                                  "--examples", "3", "--seq-len", "32", "--shots", "0,2", "--out", tmp_path / "imp")])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "mean Spearman" in printed.out and "aggregate heads importance by depth" in printed.out
    out = tmp_path / "imp"
    report = json.loads((out / "importance.json").read_text())
    names = ["lm", "mmlu-stem/0shot", "mmlu-stem/2shot", "bb-navigate/0shot", "bb-navigate/2shot"]
    assert list(report["sources"]) == names and report["shots"] == [0, 2]
    for name, source in report["sources"].items():
        assert np.asarray(source["head_importance"]).shape == (3, 4) and len(source["ffn_loss_increase"]) == 3
        assert source["clusters"]["heads"]["peak"] in ("early", "middle", "late")
        assert sum(source["clusters"]["heads"]["layer_mass_share"]) == pytest.approx(1.0)
    lm = report["sources"]["lm"]  # windows of the first half of the val tokens, as prune's rank split
    assert lm["split"] == "rank" and len(lm["ids"]) == 3
    val_tokens = sum(1 for _ in np.fromfile(data / "val-00000.bin", dtype=np.uint16))
    assert all(int(i.split("-")[1]) <= val_tokens // 2 for i in lm["ids"])
    for task in ("mmlu-stem", "bb-navigate"):  # ranked on the rank split, on the questions asked
        source = report["sources"][f"{task}/2shot"]
        assert source["split"] == "rank" and source["ids"] == query_ids(task, 3, 0, "rank")
        asked = {q.id: q for q in suite.questions(task, "rank")}
        prompts = suite.prompts(task, 3, 2, 0, "rank")
        assert all(asked[i].question in p.text for i, p in zip(source["ids"], prompts))
    for kind in ("heads", "ffn"):
        o = report["overlap"][kind]
        assert o["sources"] == names and np.asarray(o["spearman"]).shape == (5, 5)
        assert all(o["jaccard"][i][i] == 1.0 for i in range(5)) and o["mean_jaccard"] is not None
        header = (out / f"spearman_{kind}.csv").read_text().splitlines()[0]
        assert header == "source," + ",".join(names) and (out / f"jaccard_{kind}.png").is_file()
    aggregate = np.asarray(report["aggregate"]["head_importance"])
    expected = np.mean([ov.normalised(np.asarray(s["head_importance"])) for s in report["sources"].values()], 0)
    np.testing.assert_allclose(aggregate, expected)
    assert len((out / "heads.csv").read_text().splitlines()) == 1 + 6 * 12  # five sources and the aggregate
    assert (out / "heads_mmlu-stem_2shot.png").is_file() and (out / "ffn_aggregate.png").is_file()


def test_device_cpu_and_device_map_auto_give_the_same_scores(tmp_path, tokenizer, one_thread):
    from inheritune.analysis.importance_job import importance

    model_dir = save_tiny(tmp_path / "m", "llama", layers=2, tok=tokenizer)
    data = make_data_dir(tmp_path / "data", tokenizer, n_docs=40, val_docs=12)
    runs = [importance(model_dir, data=data, examples=2, seq_len=16, out=tmp_path / key, **option)
            for key, option in (("cpu", {"device": "cpu"}), ("auto", {"device_map": "auto"}))]
    assert runs[0].sources["lm"]["head_importance"] == runs[1].sources["lm"]["head_importance"]
    assert runs[0].sources["lm"]["ffn_loss_increase"] == runs[1].sources["lm"]["ffn_loss_increase"]


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
        (["prune", model_dir, "--text", text, "--heads", "10", "--scores", tmp_path / "missing.json", "--out",
          tmp_path / "o"], "not found"),
        (["importance", model_dir, "--text", text, "--out", keep, "--overwrite", "--examples", "0"], "--examples"),
        (["importance", model_dir, "--text", text, "--shots", "1,1", "--out", tmp_path / "o"], "--shots"),
        (["importance", model_dir, "--tasks", "mmlu-nope", "--out", tmp_path / "o"], "--tasks"),
    ]:
        code, err = _cli(capsys, *args)
        assert code == 2, (args, err)
        assert err.startswith("inheritune: error:") and message in err and err.count("\n") == 1
    assert (keep / "precious").read_text() == "x"

    bloom = BloomForCausalLM(BloomConfig(vocab_size=320, hidden_size=16, n_layer=1, n_head=2))
    bloom.save_pretrained(tmp_path / "bloom")
    tokenizer.save_pretrained(tmp_path / "bloom")
    for command in (["induction"], ["importance", "--text", text], ["prune", "--text", text, "--heads", "10"]):
        code, err = _cli(capsys, command[0], tmp_path / "bloom", *command[1:], "--out", tmp_path / "b")
        assert code == 2 and "unsupported architecture 'bloom'" in err and err.count("\n") == 1
    assert not (tmp_path / "b").exists()
