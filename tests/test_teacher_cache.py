"""The teacher cache: the same loss and gradients as running the teacher, computed once and read back
by later runs, never stale (other weights, data or precision recompute with one line), a torn write
ignored and a damaged file refused naming it."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import make_data_dir, make_tokenizer, save_tiny, tiny_model
from inheritune.data.loader import TrainLoader
from inheritune.data.shards import open_data
from inheritune.errors import InherituneError
from inheritune.commands.train import train
from inheritune.training.objective import CausalLMLoss, Teacher
from inheritune.training.teacher_cache import open_cache

FAST = dict(seq_len=32, batch_size=4, lr=3e-3, precision="fp32", progress=False, distill_alpha=0.7,
            distill_temperature=1.5)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    tok = make_tokenizer()
    student = save_tiny(root / "student", "llama", layers=2, seed=1, tok=tok)
    teacher = save_tiny(root / "teacher", "llama", layers=4, seed=2, tok=tok)
    data = make_data_dir(root / "data", tok, n_docs=150, val_docs=15)
    return root, student, teacher, data


def weights(result) -> dict:
    return load_file(result.model_dir / "model.safetensors")


def test_loader_starts_name_the_windows_of_the_batch(setup):
    data = open_data(setup[3])
    loader = TrainLoader(data, seq_len=32, batch_size=4, sequences_per_step=8, seed=3)
    stream = data.tokens("train")
    for step, micro in ((0, 0), (0, 1), (5, 1), (40, 0)):  # step 40 is past the first epoch
        starts, batch = loader.starts(step, micro), loader.batch(step, micro)
        assert [list(stream[s:s + 33]) for s in starts] == batch.tolist()


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_loss_and_gradients_from_stored_states_equal_the_teachers_own(family, tmp_path, setup):
    student, teacher = tiny_model(family, 2, seed=0).train(), tiny_model(family, 3, seed=1).eval()
    loss = CausalLMLoss(student, chunk=7, teacher=Teacher(teacher, 0.6, 2.0))
    tokens = torch.randint(0, student.config.vocab_size, (4, 33))
    data = open_data(setup[3])
    cache = open_cache(tmp_path, "t", teacher, data, 32, torch.float32)
    states = cache.states([0, 32, 64, 96], tokens[:, :-1], loss.teacher.hidden)
    read_back = open_cache(tmp_path, "t", teacher, data, 32, torch.float32).states(
        [0, 32, 64, 96], tokens[:, :-1], lambda x: pytest.fail("a stored window was computed again"))
    assert torch.equal(states, read_back)
    results = []
    for given in (None, read_back):
        student.zero_grad()
        value = loss(tokens, given)
        value.backward()
        results.append((value.detach(), {n: p.grad.clone() for n, p in student.named_parameters()}))
    assert torch.equal(results[0][0], results[1][0])
    assert all(torch.equal(results[0][1][n], results[1][1][n]) for n in results[0][1])


def test_bf16_states_are_the_values_the_loss_casts_to(tmp_path, setup):
    teacher = tiny_model("llama", 3, seed=1).eval()
    tokens = torch.randint(0, teacher.config.vocab_size, (2, 32))
    cache = open_cache(tmp_path, "t", teacher, open_data(setup[3]), 32, torch.bfloat16)
    hidden = Teacher(teacher).hidden
    cache.states([0, 32], tokens, hidden)
    again = open_cache(tmp_path, "t", teacher, open_data(setup[3]), 32, torch.bfloat16)
    stored = again.states([0, 32], tokens, lambda x: pytest.fail("recomputed"))
    assert stored.dtype == torch.bfloat16 and torch.equal(stored, hidden(tokens).to(torch.bfloat16))
    assert again.stats().bytes_per_token == 2 * teacher.config.hidden_size


def test_a_cached_run_is_the_uncached_run_bit_for_bit_and_the_teacher_runs_once(setup, tmp_path):
    root, student, teacher, data = setup
    kd = dict(distill_from=str(teacher), steps=6, tokens_per_step=256, **FAST)
    plain = train(student, data, tmp_path / "plain", teacher_cache="off", **kd)
    cold = train(student, data, tmp_path / "cold", teacher_cache=str(tmp_path / "c"), **kd)
    warm = train(student, data, tmp_path / "warm", teacher_cache=str(tmp_path / "c"), **kd)
    assert plain.teacher_cache is None and not (tmp_path / "c" / "x").exists()
    windows = 6 * 256 // 32
    assert (cold.teacher_cache.windows_computed, cold.teacher_cache.windows_read) == (windows, 0)
    assert (warm.teacher_cache.windows_computed, warm.teacher_cache.windows_read) == (0, windows)
    assert [h.val_loss for h in warm.val_history] == [h.val_loss for h in plain.val_history]
    a, b, c = weights(plain), weights(cold), weights(warm)
    assert all(torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]) for k in a)
    # another student on the same windows (a scratch arm, a growth round) reads them too
    other = train(save_tiny(tmp_path / "s3", "llama", 3, seed=5, tok=make_tokenizer()), data, tmp_path / "other",
                  teacher_cache=str(tmp_path / "c"), **kd)
    assert other.teacher_cache.windows_computed == 0
    assert json.loads((warm.run_dir / "result.json").read_text())["teacher_cache"]["windows_read"] == windows


def test_the_auto_cache_lives_under_inheritune_cache(setup, tmp_path, private_cache):
    root, student, teacher, data = setup
    result = train(student, data, tmp_path / "run", distill_from=str(teacher), steps=2, **FAST)
    assert result.teacher_cache is not None
    assert str(private_cache) in result.teacher_cache.folder
    assert list((private_cache / "teacher").rglob("meta.json"))


def change_teacher(folder):
    model = tiny_model("llama", 4, seed=9)
    model.save_pretrained(folder)


@pytest.mark.parametrize("change,words", [
    ("teacher", "teacher weights"),
    ("precision", "precision"),
    ("data", "data"),
])
def test_other_weights_data_or_precision_recompute_with_one_line(change, words, setup, tmp_path, capfd):
    root, student, _, _ = setup
    tok = make_tokenizer()
    teacher = save_tiny(tmp_path / "teacher", "llama", 4, seed=2, tok=tok)
    data = make_data_dir(tmp_path / "data", tok, n_docs=150, val_docs=15)
    kd = dict(distill_from=str(teacher), steps=2, teacher_cache=str(tmp_path / "c"), **FAST)
    train(student, data, tmp_path / "a", **kd)
    capfd.readouterr()
    if change == "teacher":
        change_teacher(teacher)
    elif change == "data":
        make_data_dir(tmp_path / "data", tok, n_docs=150, val_docs=15, seed=4)
    if change == "precision":
        # bf16 states for the same teacher and windows: not the fp32 ones
        cache = open_cache(tmp_path / "c", str(teacher), tiny_model("llama", 4, seed=2), open_data(data), 32,
                           torch.bfloat16)
        assert cache.entries == {}
    else:
        again = train(student, data, tmp_path / "b", **kd)
        assert again.teacher_cache.windows_computed == 2 * 4 and again.teacher_cache.windows_read == 0
        fresh = train(student, data, tmp_path / "c2", teacher_cache="off", **{k: v for k, v in kd.items()
                                                                             if k != "teacher_cache"})
        assert [h.val_loss for h in again.val_history] == [h.val_loss for h in fresh.val_history]
    lines = [line for line in capfd.readouterr().err.splitlines() if "teacher cache" in line]
    assert len(lines) == 1 and words in lines[0] and "computing it again" in lines[0], lines


def cache_folder(result) -> "os.PathLike":
    from pathlib import Path
    return Path(result.teacher_cache.folder)


def test_a_torn_write_is_ignored_and_recomputed(setup, tmp_path):
    root, student, teacher, data = setup
    kd = dict(distill_from=str(teacher), steps=2, teacher_cache=str(tmp_path / "c"), **FAST)
    first = train(student, data, tmp_path / "a", **kd)
    folder = cache_folder(first)
    (idx,) = folder.glob("seg-*.idx")
    raw = idx.read_bytes()
    idx.write_bytes(raw[:-30])  # the last record torn mid-write, the one before it lost too
    with open(idx.with_suffix(".bin"), "ab") as f:
        f.write(b"\x01" * 1000)  # bytes of a window whose record was never written
    again = train(student, data, tmp_path / "b", **kd)
    assert again.teacher_cache.windows_computed == 2 and again.teacher_cache.windows_read == 6
    assert [h.val_loss for h in again.val_history] == [h.val_loss for h in first.val_history]


@pytest.mark.parametrize("damage", ["flip", "truncate", "meta"])
def test_a_damaged_cache_file_is_refused_naming_it(damage, setup, tmp_path):
    root, student, teacher, data = setup
    kd = dict(distill_from=str(teacher), steps=2, teacher_cache=str(tmp_path / "c"), **FAST)
    folder = cache_folder(train(student, data, tmp_path / "a", **kd))
    (segment,) = folder.glob("seg-*.bin")
    if damage == "flip":
        raw = bytearray(segment.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        segment.write_bytes(bytes(raw))
        named = segment
    elif damage == "truncate":
        segment.write_bytes(segment.read_bytes()[:100])
        named = segment
    else:
        (folder / "meta.json").write_text("{not json")
        named = folder / "meta.json"
    with pytest.raises(InherituneError, match=f"{named.name}.*corrupt") as caught:
        train(student, data, tmp_path / "b", **kd)
    assert str(named) in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "b").exists() or damage != "meta"


def test_cli_takes_teacher_cache_and_refuses_an_empty_one(setup, tmp_path):
    root, student, teacher, data = setup
    base = [sys.executable, "-m", "inheritune", "train", str(student), "--data", str(data), "--steps", "2",
            "--seq-len", "32", "--distill-from", str(teacher), "--precision", "fp32", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ok = subprocess.run(base + ["--out", str(tmp_path / "run"), "--teacher-cache", str(tmp_path / "c")],
                        capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert list((tmp_path / "c").rglob("seg-*.bin"))
    bad = subprocess.run(base + ["--out", str(tmp_path / "bad"), "--teacher-cache", " "], capture_output=True,
                         text=True, env=env)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "teacher_cache" in bad.stderr
    assert not (tmp_path / "bad").exists()


def top_k_setup(family="llama", k=8, temperature=1.0, alpha=1.0):
    student, teacher = tiny_model(family, 2, seed=0).train(), tiny_model(family, 3, seed=1).eval()
    tokens = torch.randint(0, student.config.vocab_size, (2, 25))
    t = Teacher(teacher, alpha, temperature)
    loss = CausalLMLoss(student, chunk=16, teacher=t)
    return student, t, loss, tokens, t.top_k(t.hidden(tokens[:, :-1]), k, torch.float32)


def loss_and_grad(student, loss, tokens, states):
    student.zero_grad()
    value = loss(tokens, states)
    value.backward()
    return value.item(), torch.cat([p.grad.flatten() for p in student.parameters()])


@pytest.mark.parametrize("family,temperature", [("llama", 1.0), ("llama", 2.0), ("gemma3_text", 1.0)])
def test_top_k_with_every_token_is_the_exact_loss(family, temperature):
    student, t, loss, tokens, _ = top_k_setup(family, temperature=temperature)
    full = t.top_k(t.hidden(tokens[:, :-1]), student.config.vocab_size, torch.float32)
    exact, g_exact = loss_and_grad(student, loss, tokens, None)
    top, g_top = loss_and_grad(student, loss, tokens, full)
    assert top == pytest.approx(exact, abs=1e-5) and torch.allclose(g_top, g_exact, atol=1e-6)


@pytest.mark.parametrize("k", [1, 8, 64])
def test_top_k_never_overstates_the_kl_and_its_logit_gradient_is_within_2r(k):
    """The stated rule: KL_topk = KL - r * KL(tails) <= KL, and per token the gradient with respect to
    the logits differs from the exact one by at most 2r in L1 (r: the teacher's mass off its top k)."""
    student, t, loss, tokens, top = top_k_setup(k=k)
    inputs = tokens[:, :-1]
    with torch.no_grad():
        z = student(input_ids=inputs).logits.flatten(0, 1).float()
        zt = teacher_logits = t.model(input_ids=inputs).logits.flatten(0, 1).float()
    p, q = z.softmax(-1), teacher_logits.softmax(-1)
    assert torch.allclose(top.values, zt.topk(k, -1).values, atol=1e-5)
    r = 1 - q.gather(1, top.indices.long()).sum(-1)
    exact, _ = loss_and_grad(student, loss, tokens, None)
    approx, _ = loss_and_grad(student, loss, tokens, top)
    assert approx <= exact + 1e-6
    # the logit gradient of each form: p - q (exact) and p - q~ (q~: the top k, then the tail as the student's)
    q_tilde = p * (r / (1 - p.gather(1, top.indices.long()).sum(-1)))[:, None]
    q_tilde.scatter_(1, top.indices.long(), q.gather(1, top.indices.long()))
    assert ((q_tilde - q).abs().sum(-1) <= 2 * r + 1e-5).all()
    assert (q_tilde.sum(-1) - 1).abs().max() < 1e-5


def test_a_top_k_run_is_the_same_cached_or_not(setup, tmp_path):
    root, student, teacher, data = setup
    kd = dict(distill_from=str(teacher), steps=4, teacher_states="top:8", **FAST)
    plain = train(student, data, tmp_path / "plain", teacher_cache="off", **kd)
    cold = train(student, data, tmp_path / "cold", teacher_cache=str(tmp_path / "c"), **kd)
    warm = train(student, data, tmp_path / "warm", teacher_cache=str(tmp_path / "c"), **kd)
    assert warm.teacher_cache.windows_computed == 0 and warm.teacher_cache.form == "top:8"
    assert warm.teacher_cache.bytes_per_token == 8 * 4 + 8 * 4 + 4
    a, b, c = weights(plain), weights(cold), weights(warm)
    assert all(torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]) for k in a)
    exact = train(student, data, tmp_path / "exact", teacher_cache="off", **kd | {"teacher_states": "hidden"})
    assert warm.final_val_loss != exact.final_val_loss  # approximate: not the exact run
    assert warm.final_val_loss == pytest.approx(exact.final_val_loss, abs=0.05)


def test_a_bad_teacher_states_value_is_one_line():
    with pytest.raises(InherituneError, match=r"^teacher_states 'top:0': must be hidden or top:K"):
        train("x", "y", "z", steps=1, teacher_states="top:0")
