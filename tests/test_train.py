"""train: losses fall, logs and checkpoints are complete, kill/resume is exact, torchrun matches one process."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import FAMILY_NAMES, make_data_dir, make_tokenizer, save_tiny, tiny_model
from inheritune.errors import InherituneError
from inheritune.commands.train import train
from inheritune.training import TrainConfig
from inheritune.training.logs import COLUMNS

ROOT = Path(__file__).resolve().parents[1]
FAST = dict(seq_len=32, batch_size=4, lr=3e-3, precision="fp32", progress=False)
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # tiny matmuls: two threads only contend on a shared machine


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny matmuls: two threads only contend


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    tok = make_tokenizer()
    model = save_tiny(root / "model", "llama", layers=2, tok=tok)
    data = make_data_dir(root / "data", tok, n_docs=150, val_docs=15)
    return root, model, data


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inheritune", *args], capture_output=True, text=True,
                          env={**os.environ, **ONE_THREAD})


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_losses_fall_and_run_folder_is_complete(setup):
    root, model, data = setup
    result = train(model, data, root / "run", steps=24, eval_every=8, **FAST)
    vals = [h.val_loss for h in result.val_history]
    assert [h.step for h in result.val_history] == [0, 8, 16, 24]
    assert [h.tokens for h in result.val_history] == [0, 8 * 128, 16 * 128, 24 * 128]
    assert vals[-1] < vals[0] - 0.5, vals
    rows = _log(root / "run")
    train_losses = [r["train_loss"] for r in rows if r["train_loss"] is not None]
    assert len(train_losses) == 24 and sum(train_losses[-4:]) / 4 < sum(train_losses[:4]) / 4 - 0.5
    with (root / "run" / "log.csv").open() as f:
        table = list(csv.DictReader(f))
    assert tuple(table[0]) == COLUMNS and len(table) == 25
    assert all(float(r["mfu"]) > 0 and float(r["tokens_per_s"]) > 0 for r in table[1:])
    # Schedule: warmup to the peak, then cosine down to min_lr at the last step.
    lrs = [r["lr"] for r in rows[1:]]
    assert max(lrs) == pytest.approx(3e-3) and lrs[-1] == pytest.approx(TrainConfig().min_lr)
    ckpts = sorted(p.name for p in (root / "run" / "checkpoints").iterdir())
    assert ckpts == ["step-0000016", "step-0000024"]  # keep_checkpoints=2
    assert (root / "run" / "final" / "model.safetensors").is_file()
    assert (root / "run" / "final" / "tokenizer.json").is_file()
    stored = json.loads((root / "run" / "result.json").read_text())
    assert stored["final_val_loss"] == result.final_val_loss == vals[-1]
    # resume=True on a finished run returns the stored result without training ...
    again = train(model, data, root / "run", steps=24, eval_every=8, resume=True, **FAST)
    assert again.val_history == result.val_history
    # ... but a finished run asked for another length is refused, naming both numbers, never a silent no-op.
    for steps in (40, 12):
        with pytest.raises(InherituneError, match=f"finished at 24 steps .* cannot be extended to {steps} steps"):
            train(model, data, root / "run", steps=steps, eval_every=8, resume=True, **FAST)
    assert json.loads((root / "run" / "result.json").read_text()) == stored
    # Wall time is the optimizer steps' own, cumulative, in the log and in the result.
    assert 0 < result.wall_time == rows[-1]["wall_time"] and result.val_history[-1].wall_time == result.wall_time


def test_bad_inputs_are_clear_errors(setup, tmp_path):
    root, model, data = setup
    other = make_data_dir(tmp_path / "other", make_tokenizer(vocab_size=300), n_docs=40, val_docs=5)
    cases = [
        (dict(data=other), "tokenizer mismatch"),
        (dict(seq_len=4096), "larger than the model supports"),
        (dict(steps=None), "exactly one of steps"),
        (dict(precision="fp8"), "precision must be one of"),
        (dict(tokens_per_step=100), "not a multiple of"),
        (dict(learning_rate=0.1), "unknown training option 'learning_rate'"),
    ]
    for change, message in cases:
        kwargs = {**FAST, "steps": 2, "data": data, **change}
        with pytest.raises(InherituneError, match=message):
            train(model, out=tmp_path / "run", **kwargs)
    assert not (tmp_path / "run").exists()
    # --resume on a run killed before its first checkpoint: nothing to lose, so it starts over.
    (tmp_path / "early").mkdir()
    (tmp_path / "early" / "log.jsonl").write_text('{"step": 0, "tokens": 0, "val_loss": 9.0}\n')
    result = train(model, data, tmp_path / "early", steps=2, resume=True, **FAST)
    assert result.steps == 2 and _log(tmp_path / "early")[0]["val_loss"] != 9.0


def test_cli_errors_are_one_line(setup, tmp_path):
    root, model, data = setup
    (tmp_path / "recipe.yaml").write_text("seq_len: 32\nlearning_rate: 0.1\n")
    r = _cli("train", str(model), "--data", str(data), "--out", str(tmp_path / "run"), "--steps", "2",
             "--config", str(tmp_path / "recipe.yaml"))
    assert r.returncode == 2 and r.stderr.startswith("inheritune: error: ") and "unknown key 'learning_rate'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "run").exists()


def test_yaml_recipe_keys_apply_and_command_line_options_override_them(setup, tmp_path):
    from inheritune.cli import main

    root, model, data = setup
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("seq_len: 32\nbatch_size: 4\nlr: 3.0e-3\nbetas: [0.9, 0.99]\nprecision: fp32\n"
                      "tokens: 300\neval_every: 2\nprogress: false\n")
    assert main(["train", str(model), "--data", str(data), "--out", str(tmp_path / "run"),
                 "--config", str(recipe), "--batch-size", "2", "--min-lr", "1e-4"]) == 0
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["config"]["seq_len"] == 32 and stored["config"]["betas"] == [0.9, 0.99]  # from the recipe
    assert stored["config"]["batch_size"] == 2 and stored["config"]["min_lr"] == 1e-4  # the command line wins
    assert stored["tokens_per_step"] == 64 and stored["total_steps"] == 5  # ceil(300 / 64)
    assert [h["step"] for h in json.loads((tmp_path / "run" / "result.json").read_text())["val_history"]] == [0, 2, 4, 5]


LONG = dict(steps=40, eval_every=4, keep_checkpoints=3, **FAST)


@pytest.fixture(scope="module")
def uninterrupted(setup):
    root, model, data = setup
    train(model, data, root / "reference", **LONG)
    return _log(root / "reference")


def _curve(rows: list[dict]) -> list[tuple]:
    return [(r["step"], r["tokens"], r["lr"], r["train_loss"], r["val_loss"]) for r in rows]


def _assert_same_curve(rows: list[dict], reference: list[dict]) -> None:
    assert [r[:3] for r in _curve(rows)] == [r[:3] for r in _curve(reference)]
    for a, b in zip(_curve(rows), _curve(reference)):
        for x, y in zip(a[3:], b[3:]):
            assert (x is None and y is None) or abs(x - y) <= 1e-6, (a, b)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_sigkill_then_resume_gives_the_same_curve_even_past_a_corrupt_checkpoint(setup, uninterrupted, tmp_path):
    root, model, data = setup
    run = tmp_path / "run"
    args = ["train", str(model), "--data", str(data), "--out", str(run), "--steps", "40", "--eval-every", "4",
            "--keep-checkpoints", "3", "--seq-len", "32", "--batch-size", "4", "--lr", "3e-3", "--precision", "fp32"]
    proc = subprocess.Popen([sys.executable, "-m", "inheritune", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **ONE_THREAD})
    _wait_for(run / "checkpoints" / "step-0000008", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "result.json").exists(), "the run finished before it could be killed"
    # Damage the newest checkpoint: resume must skip it and use the one before.
    newest = sorted((run / "checkpoints").glob("step-*"))[-1]
    (newest / "model.safetensors").write_bytes(b"\0" * 100)
    result = train(model, data, run, resume=True, **LONG)
    assert result.steps == 40
    _assert_same_curve(_log(run), uninterrupted)
    assert [h.step for h in result.val_history] == list(range(0, 41, 4))


def test_sigterm_finishes_the_step_checkpoints_and_resumes(setup, uninterrupted, tmp_path):
    import threading

    from inheritune.errors import TrainingInterrupted

    root, model, data = setup
    run = tmp_path / "run"

    def terminate_after_first_checkpoint():
        while not (run / "checkpoints" / "step-0000004").exists():
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)  # handled by train(): the main thread finishes its step

    threading.Thread(target=terminate_after_first_checkpoint, daemon=True).start()
    with pytest.raises(TrainingInterrupted, match="continue with --resume"):
        train(model, data, run, **LONG)
    stopped = _log(run)[-1]["step"]
    assert 4 <= stopped < 40 and (run / "checkpoints" / f"step-{stopped:07d}").is_dir()
    assert not (run / "result.json").exists()
    with pytest.raises(InherituneError, match="was started with lr=0.003, not 0.001"):
        train(model, data, run, resume=True, **{**LONG, "lr": 1e-3})
    train(model, data, run, resume=True, **LONG)
    _assert_same_curve(_log(run), uninterrupted)


def test_nonfinite_loss_stops_naming_the_step_or_skips_the_batch(setup, tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    root, model_dir, data = setup
    calls = {"n": 0}

    def poison(module, args, output):  # the 3rd training forward (step 3) returns inf activations
        calls["n"] += 1
        return output * float("inf") if module.training and calls["n"] == 3 else output

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.get_input_embeddings().register_forward_hook(poison)
    # eval runs (step 0, 2, 4) are in eval mode: count training forwards only
    model.get_input_embeddings().register_forward_pre_hook(lambda m, a: calls.__setitem__("n", calls["n"] - (not m.training)))
    with pytest.raises(InherituneError, match="non-finite loss at step 3.*step-0000002"):
        train(model, data, tmp_path / "stop", tokenizer=tokenizer, steps=6, eval_every=2, **FAST)
    assert sorted(p.name for p in (tmp_path / "stop" / "checkpoints").iterdir()) == ["step-0000002"]

    calls["n"] = 0
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.get_input_embeddings().register_forward_hook(poison)
    model.get_input_embeddings().register_forward_pre_hook(lambda m, a: calls.__setitem__("n", calls["n"] - (not m.training)))
    result = train(model, data, tmp_path / "skip", tokenizer=tokenizer, steps=6, eval_every=2, on_nonfinite="skip", **FAST)
    rows = _log(tmp_path / "skip")
    assert [r["step"] for r in rows if r.get("skipped")] == [3]
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert result.final_val_loss < result.val_history[0].val_loss


def test_torchrun_two_ranks_ddp_fsdp_and_lora_match_one_process_with_the_same_global_batch(setup, tmp_path):
    from safetensors.torch import load_file

    root, model, data = setup
    teacher = save_tiny(tmp_path / "teacher", "llama", layers=3, seed=5, tok=make_tokenizer())
    common = dict(steps=6, eval_every=3, seq_len=32, lr=3e-3, precision="fp32")
    kd = dict(distill_from=str(teacher), distill_alpha=0.5, distill_temperature=2.0)
    lora = dict(lora=4)
    singles = {loss: train(model, data, tmp_path / f"single{loss}", batch_size=2, tokens_per_step=4 * 32,
                           progress=False, **common, **extra) for loss, extra in (("", {}), ("-kd", kd), ("-lora", lora))}
    assert all(s.val_history[-1].val_loss < s.val_history[0].val_loss for s in singles.values())
    flags = {name: [f"--{k.replace('_', '-')}={v}" for k, v in extra.items()] for name, extra in (("kd", kd), ("lora", lora))}
    for name, extra in (("ddp", []), ("fsdp", ["--fsdp"]), ("ddp-kd", flags["kd"]), ("ddp-lora", flags["lora"])):
        single = singles["".join(name.partition("-")[1:])]  # ddp-kd: the single "-kd" run
        args = [f"--{k.replace('_', '-')}={v}" for k, v in common.items()]
        r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                            "-m", "inheritune", "train", str(model), "--data", str(data), "--out", str(tmp_path / name),
                            "--batch-size=2", *args, *extra], capture_output=True, text=True, timeout=300,
                           env={**os.environ, **ONE_THREAD})
        assert r.returncode == 0, r.stderr[-3000:]
        assert r.stdout.count("trained 6 steps") == 1  # rank 0 speaks for the run
        result = json.loads((tmp_path / name / "result.json").read_text())
        config = json.loads((tmp_path / name / "config.json").read_text())
        assert config["world"] == 2 and config["micro_steps"] == 1 and config["tokens_per_step"] == 128
        assert result["tokens"] == single.tokens == 6 * 128
        if name == "ddp-kd":  # each rank read its own windows' teacher states, stored by the single-process run
            assert (result["teacher_cache"]["windows_read"], result["teacher_cache"]["windows_computed"]) == (6 * 2, 0)
        for a, b in zip(result["val_history"], single.val_history, strict=True):
            assert a["step"] == b.step and a["val_loss"] == pytest.approx(b.val_loss, abs=1e-4), name
        # The final model is a whole (unsharded) HF model equal, tensor for tensor, to the single-process one.
        mine, theirs = load_file(tmp_path / name / "final" / "model.safetensors"), load_file(single.model_dir / "model.safetensors")
        assert mine.keys() == theirs.keys(), name
        for key in mine:
            assert torch.allclose(mine[key], theirs[key], atol=1e-4), (name, key)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_fused_chunked_loss_equals_plain_cross_entropy(family):
    from inheritune.training.objective import CausalLMLoss

    model = tiny_model(family, 2).train()
    if family == "gemma3_text":
        model.config.final_logit_softcapping = 5.0  # exercise the soft-cap gradient too
    tokens = torch.randint(0, model.config.vocab_size, (3, 17))
    results = []
    for fused in (False, True):
        model.zero_grad()
        loss_fn = CausalLMLoss(model, fused=fused, chunk=7)  # chunks that do not divide the 48 rows
        assert loss_fn.fused == fused
        loss = loss_fn(tokens)
        loss.backward()
        results.append((loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    assert results[1][0] == pytest.approx(results[0][0], abs=1e-5)
    for name, grad in results[0][1].items():
        assert torch.allclose(results[1][1][name], grad, atol=1e-6), name
