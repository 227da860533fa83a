"""run: a tiny recipe end to end (report.md/html/png/json whose numbers are the runs' logs), resume
without retraining, equal token budgets, and bad recipes refused before any work, naming the key."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import generated_text, make_tokenizer, save_tiny
from inheritune.errors import InherituneError
from inheritune.recipe import load_recipe

ROUND_TOKENS = 4 * 128  # 4 steps of 4 x 32 tokens


def _recipe(root: Path) -> dict:
    tok = make_tokenizer()
    reference = save_tiny(root / "reference", "llama", 3, seed=2, tok=tok)
    docs = root / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": d}) + "\n" for d in generated_text(300, seed=5)))
    return {
        "reference": str(reference),
        "data": {"sources": [str(docs)], "val_tokens": 1000},
        "train": {"seq_len": 32, "batch_size": 4, "eval_every": 2, "checkpoint_every": 4, "precision": "fp32",
                  "peak_flops": 1e12, "progress": False,  # a given peak skips the trainer's matmul timing
                  "train_blocks": "last:1", "rest_lr_scale": 0.1},  # scratch arms train all blocks regardless
        "inherit": {"by": "angular"},  # so the paper's first-n arm runs beside it
        "grow": {"start_layers": 1, "step_layers": 1, "max_layers": 2, "tokens_per_round": ROUND_TOKENS, "margin": -100},
        "distill": {"enabled": True, "alpha": 0.5, "temperature": 2.0},  # main arm: inheritune-kd
        "arms": {"scratch": True, "other_loss": True, "scratch_full": True, "scratch_2x": True, "scratch_start": True,
                 "nogrow": ["attention"]},
        "budget": {"params": 0.5},  # depth, width and both: the reference cut to half its non-embedding parameters
        "analysis": {"enabled": True, "sequences": 4, "seq_len": 16},
        "eval": {"tasks": ["cloze-local"], "limit": 3},
        "export": {"gguf": "f32"},  # the main arm's model as RUN/model.gguf
    }


def _inheritune(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inheritune", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(_recipe(root)))
    r = _inheritune("run", str(recipe), "--out", str(root / "out"))
    assert r.returncode == 0, r.stderr
    return recipe, root / "out", r.stdout


def _log_curve(run_dir: Path) -> tuple[list[int], list[float]]:
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r.get("val_loss") is not None]
    return [r["tokens"] for r in rows], [r["val_loss"] for r in rows]


def test_report_files_exist_and_are_self_contained(finished):
    recipe, out, stdout = finished
    png = (out / "val_loss_vs_tokens.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    report = json.loads((out / "report.json").read_text())
    assert set(report["arms"]) == set(ARMS) | {"reference", "reference-trained"}
    for arm in report["arms"]:
        assert f"| {arm} |" in md and f"<td>{arm}</td>" in html
    assert "## Growth rounds: inheritune-kd" in md and "<h2>Growth rounds: inheritune</h2>" in html
    assert report["main_arm"] == "inheritune-kd" and report["verdict"] in md and report["verdict"] in stdout
    assert "scratch-kd (same depth, tokens and loss" in report["verdict"]
    # One yardstick, stated in the header of every rendering; time-to-target for every trained arm.
    assert report["yardstick"]["definition"] in md and "512 tokens" in report["yardstick"]["definition"]
    # The fixed levels plus the recipe's own margin, the level its verdict judges by.
    levels = {"+2", "+1", "+0.5", f"{report['recipe']['grow']['margin']:+g}"}
    assert "## Time to target" in md and all(set(arm["time_to_target"]) == levels
                                             for name, arm in report["arms"].items() if name != "reference")
    assert f"| arm | ref +2 | ref +1 | ref +0.5 | ref {report['recipe']['grow']['margin']:+g} |" in md
    # The curves plus the reference's analysis plots, all inlined: the page needs no other file.
    plots = report["analysis"]["plots"]
    assert plots and all((out / p).read_bytes().startswith(b"\x89PNG") for p in plots.values())
    assert html.count("data:image/png;base64,") == 2 + len(plots) and 'src="val_loss' not in html
    assert (out / "blocks_kept.png").read_bytes().startswith(b"\x89PNG") and "](blocks_kept.png)" in md
    assert all(f"]({p})" in md for p in plots.values())
    # Downstream evaluation: one row per arm, the harness's val loss agreeing with the run's.
    assert "## Downstream evaluation" in md and set(report["eval"]) == set(report["arms"])
    downstream = md.split("## Downstream evaluation")[1]
    for name, arm in report["arms"].items():
        assert f"| {name} |" in downstream
        assert report["eval"][name]["val"]["loss"] == pytest.approx(arm["final_val_loss"], abs=1e-4)


ARMS = ("inheritune-kd", "inheritune", "scratch-kd", "scratch", "scratch-full-kd", "scratch-2x-kd", "scratch-1L-kd",
        "first-n-kd", "inheritune-nogrow-attention-kd", "budget-depth-kd", "budget-width-kd", "budget-both-kd")


def test_eval_cli_gives_the_reports_val_loss(finished):
    """train's final val loss = `eval --data` on the final model = the report's figure."""
    recipe, out, _ = finished
    report = json.loads((out / "report.json").read_text())
    arm = report["arms"]["inheritune-kd"]
    r = _inheritune("eval", arm["model_dir"], "--data", str(out / "data"))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["val"]["loss"] == pytest.approx(arm["final_val_loss"], abs=1e-4)


def test_json_numbers_equal_the_runs_logs(finished):
    recipe, out, _ = finished
    report = json.loads((out / "report.json").read_text())
    arms = report["arms"]
    for name in ARMS[2:]:
        run_dir = out / "arms" / name
        result = json.loads((run_dir / "result.json").read_text())
        assert arms[name]["final_val_loss"] == result["final_val_loss"]
        assert arms[name]["tokens"] == result["tokens"] and arms[name]["wall_time"] == result["wall_time"]
        tokens, losses = _log_curve(run_dir)
        assert (arms[name]["curve"]["tokens"], arms[name]["curve"]["val_loss"]) == (tokens, losses)
        assert arms[name]["final_val_loss"] == losses[-1]
        config = json.loads((run_dir / "config.json").read_text())["config"]
        assert (config["distill_from"] is not None) == name.endswith("-kd"), name
    # The inheritune arms: their rounds' logs end to end, round r shifted by the tokens before it.
    for name in ("inheritune-kd", "inheritune"):
        summary = json.loads((out / "arms" / name / "summary.json").read_text())
        tokens, losses, offset = [], [], 0
        for r in summary["rounds"]:
            t, v = _log_curve(Path(r["run_dir"]))
            tokens += [offset + x for x in t]
            losses += v
            offset += r["tokens"]
        assert (arms[name]["curve"]["tokens"], arms[name]["curve"]["val_loss"]) == (tokens, losses)
        assert arms[name]["final_val_loss"] == losses[-1] == summary["rounds"][-1]["val_loss"]
        assert report["growth"][name]["rounds"] == summary["rounds"]
        cached = json.loads((out / "reference.json").read_text())["result"]  # measured once per run
        assert arms["reference"]["final_val_loss"] == cached["loss"] == summary["reference_val_loss"]
    # Equal budgets: scratch on the inheritune arm's total tokens, scratch-2x twice, scratch-1L one round.
    total = 2 * ROUND_TOKENS
    assert arms["inheritune-kd"]["tokens"] == arms["inheritune"]["tokens"] == total
    for name in ("scratch-kd", "scratch", "scratch-full-kd", "first-n-kd", "inheritune-nogrow-attention-kd",
                 "budget-depth-kd", "budget-width-kd", "budget-both-kd"):
        assert arms[name]["tokens"] == total, name
    # Which reference blocks each arm holds: angular's (a slice before the kept last block), the paper's first n.
    assert arms["first-n-kd"]["blocks"] == [0, 1] and arms["scratch-kd"]["blocks"] is None
    assert len(arms["inheritune-kd"]["blocks"]) == 2 and arms["inheritune-kd"]["blocks"][-1] == 2
    for name in ARMS:  # partial training for inherited arms only; scratch trains everything
        train_blocks = json.loads((out / "arms" / name / ("round-02-02" if name.startswith("inheritune-kd")
                                   or name == "inheritune" else "") / "config.json").read_text())["config"]["train_blocks"]
        assert train_blocks == ("all" if name.startswith("scratch") else "last:1"), name
    assert arms["scratch-2x-kd"]["tokens"] == 2 * total and arms["scratch-1L-kd"]["tokens"] == ROUND_TOKENS
    assert arms["scratch-kd"]["layers"] == arms["inheritune-kd"]["layers"] == 2 and arms["scratch-1L-kd"]["layers"] == 1
    assert arms["scratch-full-kd"]["layers"] == arms["reference"]["layers"] == 3
    assert arms["scratch-kd"]["params"] == arms["inheritune-kd"]["params"]


def test_the_reference_trained_on_the_same_tokens_is_the_yardstick(finished):
    """The reference, trained with cross-entropy on the same windows as the grown arm's rounds, runs
    first; its final val loss (plus the margin) is what the grow loop, the verdict and time-to-target
    judge against, and every arm carries its gap to both references."""
    _, out, _ = finished
    report = json.loads((out / "report.json").read_text())
    arms, margin = report["arms"], report["recipe"]["grow"]["margin"]
    trained = arms["reference-trained"]
    config = json.loads((out / "arms" / "reference-trained" / "config.json").read_text())["config"]
    assert trained["tokens"] == 2 * ROUND_TOKENS and trained["layers"] == arms["reference"]["layers"] == 3
    assert config["distill_from"] is None and config["train_blocks"] == "all" and config["skip_tokens"] == 0
    assert trained["final_val_loss"] < arms["reference"]["final_val_loss"]  # it learnt the data
    assert report["judged_by"]["loss"] == trained["final_val_loss"]
    assert "trained on the same" in report["judged_by"]["name"] and report["judged_by"]["name"] in report["verdict"]
    for name in ("inheritune-kd", "inheritune"):
        summary = json.loads((out / "arms" / name / "summary.json").read_text())
        assert summary["target"] == pytest.approx(trained["final_val_loss"] + margin)
        assert summary["yardstick"] == report["judged_by"]["name"]
    for name, arm in arms.items():
        assert arm["gap"] == pytest.approx(arm["final_val_loss"] - arms["reference"]["final_val_loss"])
        assert arm["gap_trained"] == pytest.approx(arm["final_val_loss"] - trained["final_val_loss"])
        if name != "reference":  # time to the yardstick's levels: the first evaluation at or below it
            curve, hits = arm["curve"], arm["time_to_target"]
            for level, hit in hits.items():
                below = [t for t, v in zip(curve["tokens"], curve["val_loss"], strict=True)
                         if v <= trained["final_val_loss"] + float(level)]
                assert (hit["tokens"] if hit else None) == (below[0] if below else None), (name, level)
    md = (out / "report.md").read_text()
    assert "| gap_trained |" in md


def test_every_arm_counts_its_training_and_teacher_flops(finished):
    """Training FLOPs = the run's FLOPs per token x tokens; a -kd arm is also charged the teacher's
    forward pass over its tokens; at the main arm's compute, the main arm is at its own final loss."""
    from inheritune.models.loading import load_model
    from inheritune.training.flops import flops_per_token

    _, out, _ = finished
    report = json.loads((out / "report.json").read_text())
    arms = report["arms"]
    reference = load_model(report["recipe"]["reference"])
    forward = flops_per_token(reference, report["recipe"]["train"]["seq_len"]) / 3
    for name in [*ARMS[2:], "reference-trained"]:
        per_token = json.loads((out / "arms" / name / "config.json").read_text())["flops_per_token"]
        arm = arms[name]
        assert arm["flops_per_token"] == per_token and arm["train_flops"] == pytest.approx(per_token * arm["tokens"])
        expected = forward * arm["tokens"] if name.endswith("-kd") else 0.0
        assert arm["teacher_flops"] == pytest.approx(expected), name
    main = arms["inheritune-kd"]
    assert main["at_main_flops"] == pytest.approx(main["final_val_loss"])
    deeper = arms["scratch-full-kd"]  # 3 layers on the same tokens: more FLOPs, so the budget falls inside its curve
    assert deeper["flops_per_token"] > main["flops_per_token"] and deeper["at_main_flops"] is not None
    assert min(deeper["curve"]["val_loss"]) - 1e-9 <= deeper["at_main_flops"] <= max(deeper["curve"]["val_loss"]) + 1e-9
    assert arms["scratch-1L-kd"]["at_main_flops"] is None  # it spent less than the main arm in all


def test_the_main_arms_model_is_also_written_as_gguf(finished):
    import torch
    from transformers import AutoModelForCausalLM

    from inheritune.models.loading import load_model

    _, out, _ = finished
    report = json.loads((out / "report.json").read_text())
    main = load_model(report["arms"]["inheritune-kd"]["model_dir"]).eval()
    back = AutoModelForCausalLM.from_pretrained(out, gguf_file="model.gguf").eval()
    tokens = torch.randint(0, main.config.vocab_size, (1, 16))
    with torch.no_grad():
        assert torch.allclose(main(tokens).logits, back(tokens).logits, atol=1e-5)


@pytest.mark.parametrize("own_tokens", [False, True])
def test_teacher_correction_distils_from_the_reference_trained_on_the_train_split(tmp_path, own_tokens):
    """distill.teacher: corrected: the -kd arms distil from the reference after it trained on the
    run's train split. On the arms' own tokens and lr it is the reference-trained arm (trained once);
    with its own correction_tokens it is a run of its own in RUN/teacher. Its training FLOPs are
    charged to every arm that distils from it."""
    from inheritune.models.loading import load_model

    recipe = _recipe(tmp_path)
    recipe["arms"] = {"scratch": False, "first_n": False}
    recipe["grow"] = {**recipe["grow"], "max_layers": 1}
    recipe |= {"distill": {"enabled": True, "teacher": "corrected"}, "analysis": {}, "eval": {}, "budget": {}, "export": {}}
    if own_tokens:
        recipe["distill"]["correction_tokens"] = 2 * ROUND_TOKENS
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    r = _inheritune("run", str(path), "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    report = json.loads((out / "report.json").read_text())
    corrected = out / ("teacher" if own_tokens else "arms/reference-trained")
    assert (out / "teacher").exists() == own_tokens
    teacher_run = json.loads((corrected / "result.json").read_text())
    assert teacher_run["tokens"] == (2 if own_tokens else 1) * ROUND_TOKENS
    config = json.loads((out / "arms" / "inheritune-kd" / "round-01-01" / "config.json").read_text())["config"]
    assert config["distill_from"] == str(corrected / "final")
    teacher, reference = load_model(corrected / "final"), load_model(recipe["reference"])
    assert any(not torch_equal(a, b) for a, b in zip(teacher.parameters(), reference.parameters(), strict=True))
    arm = report["arms"]["inheritune-kd"]
    charged = json.loads((corrected / "config.json").read_text())["flops_per_token"] * teacher_run["tokens"]
    assert arm["correction_flops"] == pytest.approx(charged) and arm["teacher_flops"] > charged
    assert "corrected first" in report["setup"]


def test_a_recipe_heals_with_lora_and_scratch_arms_still_train_in_full(tmp_path):
    """train: {lora: R}: every inherited arm heals through adapters merged into plain folders; a
    scratch arm has no inherited weights to freeze, so it trains every weight."""
    from safetensors.torch import load_file

    recipe = _recipe(tmp_path)
    recipe["train"] = {k: v for k, v in recipe["train"].items() if k not in ("train_blocks", "rest_lr_scale")}
    recipe["train"]["lora"] = 4
    recipe["arms"] = {"scratch": True, "first_n": False}
    recipe["grow"] = {**recipe["grow"], "max_layers": 1}
    recipe |= {"distill": {"enabled": False}, "analysis": {}, "eval": {}, "budget": {}, "export": {}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    r = _inheritune("run", str(path), "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    arms = tmp_path / "out" / "arms"
    main = json.loads((arms / "inheritune" / "round-01-01" / "config.json").read_text())
    scratch = json.loads((arms / "scratch" / "config.json").read_text())
    assert main["config"]["lora"] == 4 and main["trainable_parameters"] < main["parameters"]
    assert scratch["config"]["lora"] == 0 and scratch["trainable_parameters"] == scratch["parameters"]
    weights = load_file(arms / "inheritune" / "round-01-01" / "final" / "model.safetensors")
    assert not any("lora" in key for key in weights)


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a, b)


def test_budget_arms_are_cut_to_the_budget_and_reported_side_by_side(finished):
    """Depth, width and both cut the reference to at most half its non-embedding parameters (exact
    counts), start from the cut model's own loss, and sit in one table with the reference."""
    from inheritune.models.budget import non_embedding
    from inheritune.models.loading import load_model

    _, out, _ = finished
    report = json.loads((out / "report.json").read_text())
    arms, total = report["arms"], report["arms"]["reference"]["non_embedding"]
    assert total == non_embedding(load_model(report["recipe"]["reference"]).config)
    shapes = {}
    for shape in ("depth", "width", "both"):
        arm, cut = arms[f"budget-{shape}-kd"], json.loads((out / "budget" / shape / "prune.json").read_text())
        final = load_model(arm["model_dir"])
        assert arm["non_embedding"] == non_embedding(final.config) <= 0.5 * total
        assert arm["curve"]["val_loss"][0] == pytest.approx(cut["after"]["val"]["loss"], abs=1e-4)  # untrained = cut
        shapes[shape] = (final.config.num_hidden_layers, final.config.intermediate_size)
    full = load_model(report["recipe"]["reference"]).config
    assert shapes["depth"][0] < full.num_hidden_layers and shapes["depth"][1] == full.intermediate_size
    assert shapes["width"][0] == full.num_hidden_layers and shapes["width"][1] < full.intermediate_size
    assert shapes["depth"][0] < shapes["both"][0] < full.num_hidden_layers
    assert shapes["both"][1] < full.intermediate_size
    md = (out / "report.md").read_text()
    assert "## Equal parameters: depth, width, both" in md
    for name in ("reference", "inheritune-kd", "budget-depth-kd", "budget-width-kd", "budget-both-kd"):
        share = arms[name]["non_embedding"] / total
        assert f"| {name} | {arms[name]['layers']} | {arms[name]['non_embedding']:,} | {share:.3f} |" in md, name


def test_scratch_model_is_the_reference_architecture_with_fresh_weights():
    import torch

    from conftest import tiny_model
    from inheritune.arms import scratch_model

    ref = tiny_model("gemma3_text", 6)
    scratch = scratch_model(ref, 4, seed=0)
    assert scratch.config.num_hidden_layers == 4
    assert scratch.config.layer_types == ref.config.layer_types[:4]  # per-layer lists cut to the depth
    assert type(scratch) is type(ref) and scratch.config.hidden_size == ref.config.hidden_size
    for name, p in scratch.named_parameters():  # nothing inherited: every matrix differs from the reference's
        if p.dim() == 2:
            assert not torch.equal(p, ref.get_parameter(name)), name
    again = scratch_model(ref, 4, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(scratch.state_dict().values(), again.state_dict().values()))


def test_rerun_resumes_without_retraining(finished):
    from inheritune import run

    recipe, out, _ = finished
    results = sorted(out.glob("arms/**/result.json"))
    stamps = [p.stat().st_mtime_ns for p in results]
    before = json.loads((out / "report.json").read_text())
    after = run(recipe, out=out)
    assert [p.stat().st_mtime_ns for p in results] == stamps
    assert {n: a.to_json() for n, a in after.arms.items()} == before["arms"] and after.verdict == before["verdict"]
    assert after.out == out
    # Another recipe in the same folder is refused, and the finished run is left as it was.
    other = yaml.safe_load(recipe.read_text()) | {"seed": 1}
    changed = recipe.with_name("other.yaml")
    changed.write_text(yaml.safe_dump(other))
    with pytest.raises(InherituneError, match="different recipe"):
        run(changed, out=out)
    assert json.loads((out / "report.json").read_text())["arms"] == before["arms"]


BAD = [
    ({"reference": "x", "grwo": {}}, "unknown recipe key 'grwo'"),
    ({"reference": "x", "grow": {"strat_layers": 3}}, "unknown recipe key 'grow.strat_layers'"),
    ({"reference": "x", "grow": {"start_layers": "fifteen"}}, "recipe key 'grow.start_layers' must be int"),
    ({"reference": "x", "arms": {"scratch": "yes"}}, "recipe key 'arms.scratch' must be bool"),
    ({"reference": "x", "train": {"lr": "high"}}, "recipe key 'train.lr' must be float"),
    ({"reference": "x", "train": {"sequence_length": 256}}, "unknown recipe key 'train.sequence_length'"),
    ({"reference": "x", "train": {"tokens": 1000}}, "recipe key 'train.tokens'"),
    ({"reference": "x", "grow": {"mode": "sideways"}}, "recipe key 'grow.mode'"),
    ({"reference": "x", "distill": {"correction_tokens": 4096}}, "recipe key 'distill.correction_tokens' sets the corrected teacher"),
    ({"reference": "x", "distill": {"teacher": "corrected", "correction_lr": -1.0}}, "recipe key 'distill.correction_lr' must be positive"),
    ({"reference": "x", "distill": {"teacher": "corrected", "correction_tokens": "many"}}, "recipe key 'distill.correction_tokens' must be int"),
    ({"reference": "x", "export": {"gguf": "q4"}}, "recipe key 'export.gguf' must be one of f32, f16, bf16, q8_0"),
    ({"grow": {"start_layers": 3}}, "missing the required key 'reference'"),
    ([1, 2], "must be a YAML mapping"),
]


@pytest.mark.parametrize("values,message", BAD, ids=[m for _, m in BAD])
def test_bad_recipes_are_rejected_naming_the_key(tmp_path, values, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(InherituneError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_recipe(path)


def test_bad_recipe_fails_on_the_command_line_before_any_work(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("reference: smollm2-135m\ngrow:\n  start_layers: 15\n  step: 3\n")
    r = _inheritune("run", str(path), "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "'grow.step'" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


def test_default_recipe_is_valid_and_compares_like_with_like(capsys):
    """The embedded default: what --show-default prints, heals with cross-entropy (the dev-split
    sweep's winner), and has the same-depth, same-loss scratch arm its verdict needs, at a budget
    every arm can take exactly."""
    from importlib import resources

    from inheritune.cli import main

    assert main(["run", "--show-default"]) == 0
    assert capsys.readouterr().out == resources.files("inheritune").joinpath("recipes/default.yaml").read_text()
    recipe = load_recipe()
    assert recipe.reference == "smollm2-135m" and recipe.grow.max_layers <= 24  # at most 24 of 30 layers
    assert not recipe.distill.enabled and recipe.arms.scratch
    assert recipe.inherit.by != "first-n" and recipe.arms.first_n  # the paper's choice runs beside it
    assert recipe.grow.tokens_per_round % recipe.train["tokens_per_step"] == 0
    assert recipe.data.val_tokens and not recipe.eval.tasks
