"""Distillation: the chunked KD loss is exact, alpha 0 is CE bit for bit, a self-teacher starts at 0,
a foreign tokenizer is refused, and a killed KD run resumes on the same curve."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from conftest import make_data_dir, make_tokenizer, save_tiny, tiny_model
from inheritune.errors import InherituneError
from inheritune.commands.train import train
from inheritune.training.objective import CausalLMLoss, Teacher, plain_loss

FAST = dict(seq_len=32, batch_size=4, lr=3e-3, precision="fp32", progress=False)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny matmuls: two threads only contend


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    tok = make_tokenizer()
    student = save_tiny(root / "student", "llama", layers=2, seed=1, tok=tok)
    teacher = save_tiny(root / "teacher", "llama", layers=4, seed=2, tok=tok)
    data = make_data_dir(root / "data", tok, n_docs=150, val_docs=15)
    return root, student, teacher, data


@pytest.mark.parametrize("family,alpha,temperature", [("llama", 0.5, 2.0), ("llama", 1.0, 1.0),
                                                      ("gemma3_text", 0.7, 1.5), ("gpt2", 0.3, 3.0)])
def test_chunked_kd_loss_and_gradients_equal_kl_div_on_full_logits(family, alpha, temperature):
    student, teacher = tiny_model(family, 2, seed=0).train(), tiny_model(family, 3, seed=1).eval()
    if family == "gemma3_text":
        student.config.final_logit_softcapping = teacher.config.final_logit_softcapping = 5.0
    tokens = torch.randint(0, student.config.vocab_size, (3, 17))
    fused = CausalLMLoss(student, chunk=7, teacher=Teacher(teacher, alpha, temperature))  # 48 rows, ragged chunks
    assert fused.fused
    loss = fused(tokens)
    loss.backward()
    got = {n: p.grad.clone() for n, p in student.named_parameters()}
    student.zero_grad()
    with torch.no_grad():
        t_logits = teacher(input_ids=tokens[:, :-1]).logits.flatten(0, 1)
    logits = student(input_ids=tokens[:, :-1]).logits.flatten(0, 1)
    expected = plain_loss(logits, tokens[:, 1:].flatten(), t_logits, alpha, temperature)
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)
    for name, param in student.named_parameters():
        assert torch.allclose(got[name], param.grad, atol=1e-5), name


def test_alpha_zero_is_cross_entropy_bit_for_bit(setup, tmp_path):
    root, student, teacher, data = setup
    ce = train(student, data, tmp_path / "ce", steps=6, **FAST)
    kd0 = train(student, data, tmp_path / "kd0", steps=6, distill_from=str(teacher), distill_alpha=0.0, **FAST)
    assert [h.val_loss for h in kd0.val_history] == [h.val_loss for h in ce.val_history]
    a, b = load_file(ce.model_dir / "model.safetensors"), load_file(kd0.model_dir / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_teacher_equal_to_the_student_starts_at_zero_and_kd_trains(setup, tmp_path):
    root, student, teacher, data = setup
    same = train(student, data, tmp_path / "self", steps=2, distill_from=str(student), **FAST)
    first = json.loads((same.run_dir / "log.jsonl").read_text().splitlines()[1])
    assert first["step"] == 1 and abs(first["train_loss"]) < 1e-6
    kd = train(student, data, tmp_path / "kd", steps=12, distill_from=str(teacher), distill_alpha=0.5,
               distill_temperature=2.0, **FAST)
    assert kd.final_val_loss < kd.val_history[0].val_loss
    assert json.loads((kd.run_dir / "config.json").read_text())["config"]["distill_from"] == str(teacher)


def test_a_teacher_with_another_tokenizer_is_refused_in_one_line(setup, tmp_path):
    root, student, teacher, data = setup
    other = save_tiny(tmp_path / "other", "llama", layers=2, tok=make_tokenizer(vocab_size=300))
    with pytest.raises(InherituneError, match="tokenizer mismatch.*the teacher"):
        train(student, data, tmp_path / "run", steps=2, distill_from=str(other), **FAST)
    assert not (tmp_path / "run").exists()
    r = subprocess.run([sys.executable, "-m", "inheritune", "train", str(student), "--data", str(data), "--out",
                        str(tmp_path / "run"), "--steps", "2", "--seq-len", "32", "--distill-from", str(other)],
                       capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "teacher" in r.stderr, r.stderr


def test_sigkill_then_resume_with_kd_stays_on_the_same_curve(setup, tmp_path):
    root, student, teacher, data = setup
    kd = dict(distill_from=str(teacher), distill_alpha=0.5, distill_temperature=2.0)
    steps = dict(steps=24, eval_every=4)
    whole = train(student, data, tmp_path / "whole", **steps, **kd, **FAST)
    run = tmp_path / "run"
    args = ["train", str(student), "--data", str(data), "--out", str(run), "--steps", "24", "--eval-every", "4",
            "--seq-len", "32", "--batch-size", "4", "--lr", "3e-3", "--precision", "fp32",
            "--distill-from", str(teacher), "--distill-alpha", "0.5", "--distill-temperature", "2"]
    proc = subprocess.Popen([sys.executable, "-m", "inheritune", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while not (run / "checkpoints" / "step-0000008").exists():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() is not None else "timeout"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "result.json").exists(), "the run finished before it could be killed"
    resumed = train(student, data, run, resume=True, **steps, **kd, **FAST)
    for a, b in zip(resumed.val_history, whole.val_history, strict=True):
        assert a.step == b.step and a.val_loss == pytest.approx(b.val_loss, abs=1e-6)
