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

from conftest import make_data_dir, make_tokenizer, save_tiny
from inheritune.errors import InherituneError
from inheritune.training import TrainConfig, train
from inheritune.training.logs import COLUMNS

ROOT = Path(__file__).resolve().parents[1]
FAST = dict(seq_len=32, batch_size=4, lr=3e-3, precision="fp32", progress=False)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    tok = make_tokenizer()
    model = save_tiny(root / "model", "llama", layers=2, tok=tok)
    data = make_data_dir(root / "data", tok, n_docs=150, val_docs=15)
    return root, model, data


def _cli(*args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inheritune", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, **kwargs)


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_losses_fall_and_run_folder_is_complete(setup):
    root, model, data = setup
    result = train(model, data, root / "run", steps=24, eval_every=8, **FAST)
    vals = [h["val_loss"] for h in result.val_history]
    assert [h["step"] for h in result.val_history] == [0, 8, 16, 24]
    assert [h["tokens"] for h in result.val_history] == [0, 8 * 128, 16 * 128, 24 * 128]
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
    # resume=True on a finished run returns the stored result without training.
    again = train(model, data, root / "run", steps=24, eval_every=8, resume=True, **FAST)
    assert again.val_history == result.val_history


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
    # --resume on a run folder without any checkpoint: nothing to resume.
    (tmp_path / "empty").mkdir()
    with pytest.raises(InherituneError, match="no checkpoint to resume"):
        train(model, data, tmp_path / "empty", steps=2, resume=True, **FAST)


def test_cli_errors_are_one_line(setup, tmp_path):
    root, model, data = setup
    (tmp_path / "recipe.yaml").write_text("seq_len: 32\nlearning_rate: 0.1\n")
    r = _cli("train", str(model), "--data", str(data), "--out", str(tmp_path / "run"), "--steps", "2",
             "--config", str(tmp_path / "recipe.yaml"))
    assert r.returncode == 2 and r.stderr.startswith("inheritune: error: ") and "unknown key 'learning_rate'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = _cli("train", str(model), "--data", str(data), "--out", str(tmp_path / "run"), "--steps", "2", "--seq-len", "4096")
    assert r.returncode == 2 and "larger than the model supports (128 positions)" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "run").exists()
