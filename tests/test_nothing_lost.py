"""Nothing lost, ever: every command that takes --out, asked to replace a previous good output
(--overwrite) with bad data, a bad model, an out-of-range argument or a mismatched tokenizer,
fails with one line (exit 2, no traceback) and leaves the previous output byte-identical, with
nothing created beside it. A failure late in training leaves the previous run as it was too,
and rerunning the same command then completes the replacement.

Every command runs in-process through ``inheritune.cli.main`` on tiny models and data.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, LlamaConfig

from conftest import generated_text, make_data_dir, make_tokenizer, save_tiny
from inheritune.cli import main

os.environ.setdefault("OMP_NUM_THREADS", "1")

FAST = ["--seq-len", "32", "--batch-size", "4", "--precision", "fp32", "--peak-flops", "1e12", "--no-progress"]


@dataclass
class World:
    """Inputs, good and bad, shared by every case."""

    root: Path
    model: Path  # 2-layer llama with its tokenizer
    data: Path
    docs: Path  # a jsonl source for data prepare
    truncated: Path  # data whose val shard lost its last bytes
    random: Path  # data whose train shard is random bytes of the right size
    other_data: Path  # data tokenized with another tokenizer
    other_tok: Path  # a model folder whose tokenizer differs from ``model``'s
    missing: Path  # no such folder
    lying: Path  # config names 4 layers, the weights hold 2
    small_vocab: Path  # weights-only model embedding 300 tokens: ``model``'s tokenizer (320) does not fit
    bad_docs: Path  # jsonl whose text values are numbers
    not_utf8: Path  # a .txt that is not UTF-8


def _copy_data(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("inputs")
    tok, other = make_tokenizer(), make_tokenizer(300)
    model = save_tiny(root / "model", "llama", 2, tok=tok)
    data = make_data_dir(root / "data", tok, n_docs=80, val_docs=10)
    truncated = _copy_data(data, root / "truncated")
    with open(truncated / "val-00000.bin", "r+b") as f:
        f.truncate((truncated / "val-00000.bin").stat().st_size - 3)
    random = _copy_data(data, root / "random")
    shard = random / "train-00000.bin"
    shard.write_bytes(np.random.default_rng(0).integers(0, 256, shard.stat().st_size, dtype=np.uint8).tobytes())
    lying = save_tiny(root / "lying", "llama", 2, tok=tok)
    config = json.loads((lying / "config.json").read_text())
    (lying / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 4}))
    small = LlamaConfig(num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                        num_key_value_heads=2, vocab_size=300, max_position_embeddings=128, bos_token_id=1, eos_token_id=1)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(small).save_pretrained(root / "small-vocab")
    docs = root / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": d}) + "\n" for d in generated_text(60, seed=3)))
    bad_docs = root / "numbers.jsonl"
    bad_docs.write_text("".join(json.dumps({"text": i}) + "\n" for i in range(20)))
    not_utf8 = root / "latin1.txt"
    not_utf8.write_bytes("caf\xe9 cr\xe8me ".encode("latin-1") * 50)
    return World(root, model, data, docs, truncated, random, make_data_dir(root / "other-data", other),
                 save_tiny(root / "other-tok", "llama", 2, tok=other), root / "missing", lying, root / "small-vocab",
                 bad_docs, not_utf8)


def _recipe(w: World, path: Path, reference: Path | None = None, data: Path | None = None, **grow) -> Path:
    """A tiny run recipe: one growth round of 2 steps, no other arms, no analysis or evaluation."""
    recipe = {
        "reference": str(reference or w.model),
        "data": {"dir": str(data or w.data)},
        "train": {"seq_len": 32, "batch_size": 4, "eval_every": 2, "precision": "fp32", "peak_flops": 1e12,
                  "progress": False},
        "grow": {"start_layers": 1, "step_layers": 1, "max_layers": 1, "tokens_per_round": 256, "margin": -100, **grow},
        "arms": {"scratch": False},
    }
    path.write_text(yaml.safe_dump(recipe))
    return path


# command -> (argv of a good run into OUT, {case: argv of a bad run into OUT}); argv builders take (world, out, tmp).
COMMANDS = {
    "derive": (
        lambda w, out, tmp: ["derive", w.model, "--layers", "1", "--out", out],
        {
            "missing model": lambda w, out, tmp: ["derive", w.missing, "--layers", "1", "--out", out],
            "config/weights mismatch": lambda w, out, tmp: ["derive", w.lying, "--layers", "1", "--out", out],
            "layers out of range": lambda w, out, tmp: ["derive", w.model, "--layers", "9", "--out", out],
            "tokenizer mismatch": lambda w, out, tmp: ["derive", w.small_vocab, "--layers", "1", "--tokenizer",
                                                       w.model, "--out", out],
        },
    ),
    "data prepare": (
        lambda w, out, tmp: ["data", "prepare", w.docs, "--tokenizer", w.model, "--out", out, "--val-tokens", "200"],
        {
            "missing source": lambda w, out, tmp: ["data", "prepare", w.root / "nope.jsonl", "--tokenizer", w.model,
                                                   "--out", out],
            "numbers for text": lambda w, out, tmp: ["data", "prepare", w.bad_docs, "--tokenizer", w.model, "--out", out],
            "not UTF-8": lambda w, out, tmp: ["data", "prepare", w.not_utf8, "--tokenizer", w.model, "--out", out],
            "missing tokenizer": lambda w, out, tmp: ["data", "prepare", w.docs, "--tokenizer", w.missing, "--out", out],
            "max tokens out of range": lambda w, out, tmp: ["data", "prepare", w.docs, "--tokenizer", w.model,
                                                            "--out", out, "--max-tokens", "0"],
            "tokenizer mismatch": lambda w, out, tmp: ["data", "prepare", w.docs, "--tokenizer", w.other_tok,
                                                       "--out", out],
        },
    ),
    "train": (
        lambda w, out, tmp: ["train", w.model, "--data", w.data, "--out", out, "--steps", "4", "--eval-every", "2", *FAST],
        {
            "truncated shard": lambda w, out, tmp: ["train", w.model, "--data", w.truncated, "--out", out, "--steps", "4", *FAST],
            "random shard": lambda w, out, tmp: ["train", w.model, "--data", w.random, "--out", out, "--steps", "4", *FAST],
            "missing model": lambda w, out, tmp: ["train", w.missing, "--data", w.data, "--out", out, "--steps", "4", *FAST],
            "config/weights mismatch": lambda w, out, tmp: ["train", w.lying, "--data", w.data, "--out", out, "--steps", "4", *FAST],
            "seq-len out of range": lambda w, out, tmp: ["train", w.model, "--data", w.data, "--out", out, "--steps", "4",
                                                         *FAST, "--seq-len", "4096"],
            "tokenizer mismatch": lambda w, out, tmp: ["train", w.model, "--data", w.other_data, "--out", out, "--steps", "4", *FAST],
        },
    ),
    "grow": (
        lambda w, out, tmp: ["grow", w.model, "--data", w.data, "--out", out, "--start-layers", "1", "--max-layers", "2",
                             "--step-layers", "1", "--tokens-per-round", "256", "--margin", "-100", *FAST],
        {
            "truncated shard": lambda w, out, tmp: ["grow", w.model, "--data", w.truncated, "--out", out, "--start-layers", "1", *FAST],
            "random shard": lambda w, out, tmp: ["grow", w.model, "--data", w.random, "--out", out, "--start-layers", "1", *FAST],
            "missing model": lambda w, out, tmp: ["grow", w.missing, "--data", w.data, "--out", out, "--start-layers", "1", *FAST],
            "config/weights mismatch": lambda w, out, tmp: ["grow", w.lying, "--data", w.data, "--out", out, "--start-layers", "1", *FAST],
            "start layers out of range": lambda w, out, tmp: ["grow", w.model, "--data", w.data, "--out", out,
                                                              "--start-layers", "5", "--max-layers", "6", *FAST],
            "tokenizer mismatch": lambda w, out, tmp: ["grow", w.model, "--data", w.other_data, "--out", out, "--start-layers", "1", *FAST],
        },
    ),
    "run": (
        lambda w, out, tmp: ["run", _recipe(w, tmp / "good.yaml"), "--out", out],
        {
            "truncated shard": lambda w, out, tmp: ["run", _recipe(w, tmp / "r.yaml", data=w.truncated), "--out", out],
            "random shard": lambda w, out, tmp: ["run", _recipe(w, tmp / "r.yaml", data=w.random), "--out", out],
            "missing model": lambda w, out, tmp: ["run", _recipe(w, tmp / "r.yaml", reference=w.missing), "--out", out],
            "config/weights mismatch": lambda w, out, tmp: ["run", _recipe(w, tmp / "r.yaml", reference=w.lying), "--out", out],
            "start layers out of range": lambda w, out, tmp: ["run", _recipe(w, tmp / "r.yaml", start_layers=5, max_layers=6),
                                                              "--out", out],
            "tokenizer mismatch": lambda w, out, tmp: ["run", _recipe(w, tmp / "r.yaml", data=w.other_data), "--out", out],
        },
    ),
}


def _scoring(command: str, good_extra: list[str], bad_extra: list[str]):
    """analyze / importance / prune: MODEL --data DIR --out OUT plus options; the same six bad inputs."""
    def argv(model_attr: str = "model", data_attr: str = "data", extra: list[str] = good_extra):
        return lambda w, out, tmp: [command, getattr(w, model_attr), "--data", getattr(w, data_attr), "--out", out, *extra]

    return argv(), {
        "truncated shard": argv(data_attr="truncated"),
        "random shard": argv(data_attr="random"),
        "missing model": argv(model_attr="missing"),
        "config/weights mismatch": argv(model_attr="lying"),
        "argument out of range": argv(extra=bad_extra),
        "tokenizer mismatch": argv(data_attr="other_data"),
    }


COMMANDS["analyze"] = _scoring("analyze", ["--sequences", "2", "--seq-len", "16"], ["--sequences", "2", "--tau", "2"])
COMMANDS["importance"] = _scoring("importance", ["--examples", "2", "--seq-len", "16"], ["--examples", "0"])
COMMANDS["prune"] = _scoring("prune", ["--examples", "2", "--seq-len", "16", "--heads", "25"],
                             ["--examples", "2", "--seq-len", "16", "--heads", "150"])
COMMANDS["induction"] = (
    lambda w, out, tmp: ["induction", w.model, "--out", out, "--seeds", "2", "--seg-len", "8"],
    {
        "missing model": lambda w, out, tmp: ["induction", w.missing, "--out", out, "--seeds", "2"],
        "config/weights mismatch": lambda w, out, tmp: ["induction", w.lying, "--out", out, "--seeds", "2"],
        "repeats out of range": lambda w, out, tmp: ["induction", w.model, "--out", out, "--repeats", "1"],
        "tokenizer mismatch": lambda w, out, tmp: ["induction", w.small_vocab, "--tokenizer", w.model, "--out", out,
                                                   "--seeds", "2"],
    },
)
# eval --out is a file (no --overwrite: it is replaced atomically); the previous one must survive.
COMMANDS["eval"] = (
    lambda w, out, tmp: ["eval", w.model, "--data", w.data, "--out", out / "eval.json"],
    {
        "truncated shard": lambda w, out, tmp: ["eval", w.model, "--data", w.truncated, "--out", out / "eval.json"],
        "random shard": lambda w, out, tmp: ["eval", w.model, "--data", w.random, "--out", out / "eval.json"],
        "missing model": lambda w, out, tmp: ["eval", w.missing, "--data", w.data, "--out", out / "eval.json"],
        "config/weights mismatch": lambda w, out, tmp: ["eval", w.lying, "--data", w.data, "--out", out / "eval.json"],
        "batch size out of range": lambda w, out, tmp: ["eval", w.model, "--data", w.data, "--batch-size", "0",
                                                        "--out", out / "eval.json"],
        "tokenizer mismatch": lambda w, out, tmp: ["eval", w.model, "--data", w.other_data, "--out", out / "eval.json"],
    },
)
CASES = [(command, case) for command, (_, cases) in COMMANDS.items() for case in cases]
# What each refusal must name: its cause, not a side issue such as the non-empty --out.
CAUSES = {"missing model": "no such model", "missing tokenizer": "no such model", "missing source": "no such file",
          "config/weights mismatch": "is missing from", "truncated shard": "val-00000.bin is truncated",
          "random shard": "train-00000.bin holds token id", "tokenizer mismatch": "tokenizer",
          "numbers for text": "field 'text' holds a int", "not UTF-8": "invalid UTF-8"}
OUT_OF_RANGE = {"derive": "--layers 9", "data prepare": "--max-tokens", "train": "seq_len 4096",
                "grow": "--start-layers (5)", "run": "'grow.start_layers' (5)", "analyze": "--tau",
                "importance": "--examples", "prune": "--heads", "induction": "2 repeats", "eval": "--batch-size"}


def _cli(capsys, argv) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse refusals exit from inside main
        code = e.code
    return code, capsys.readouterr().err


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every entry under ``folder``: a file's bytes, None for a folder."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def previous(world, tmp_path_factory):
    """One previous good output per command (made lazily), copied into each case."""
    made = {}

    def get(command: str) -> Path:
        if command not in made:
            tmp = tmp_path_factory.mktemp(command.replace(" ", "-"))
            out = tmp / "out"
            if command == "eval":
                out.mkdir()
            code = main([str(a) for a in COMMANDS[command][0](world, out, tmp)])
            assert code in (0, None), f"the good {command} run failed"
            made[command] = out
        return made[command]

    return get


def _overwrite(command: str) -> list[str]:
    return [] if command == "eval" else ["--overwrite"]


@pytest.mark.parametrize("command,case", CASES, ids=[f"{c}-{k}".replace(" ", "_") for c, k in CASES])
def test_bad_input_leaves_the_previous_output_as_it_was(command, case, world, previous, tmp_path, capsys):
    out = tmp_path / "case" / "out"
    shutil.copytree(previous(command), out)
    before = _snapshot(tmp_path / "case")
    code, err = _cli(capsys, [*COMMANDS[command][1][case](world, out, tmp_path), *_overwrite(command)])
    assert code == 2, err
    assert err.startswith("inheritune: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert CAUSES.get(case, OUT_OF_RANGE[command]) in err, err
    assert _snapshot(tmp_path / "case") == before  # the old output as it was, nothing created beside it


class Injected(RuntimeError):
    pass


def test_a_late_failure_in_training_leaves_the_previous_run_and_a_rerun_completes_it(world, previous, tmp_path,
                                                                                    capsys, monkeypatch):
    from inheritune.training import trainer

    out = tmp_path / "case" / "out"
    shutil.copytree(previous("train"), out)
    before = _snapshot(out)
    make = trainer.make_optimizer

    def failing_optimizer(model, **settings):
        optimizer = make(model, **settings)
        step, calls = optimizer.step, []

        def third_step_fails(*args, **kwargs):
            calls.append(1)
            if len(calls) == 3:
                raise Injected("injected failure at optimizer step 3")
            return step(*args, **kwargs)

        optimizer.step = third_step_fails
        return optimizer

    argv = ["train", world.model, "--data", world.data, "--out", out, "--steps", "6", "--eval-every", "2",
            "--checkpoint-every", "2", *FAST, "--overwrite"]
    monkeypatch.setattr(trainer, "make_optimizer", failing_optimizer)
    code, err = _cli(capsys, argv)
    assert code == 1 and "injected failure at optimizer step 3" in err and err.count("\n") == 1, err
    assert _snapshot(out) == before
    monkeypatch.setattr(trainer, "make_optimizer", make)

    # --resume means the run in --out: the old 4-step run, untouched.
    resume = ["train", world.model, "--data", world.data, "--out", out, "--steps", "4", "--eval-every", "2", *FAST,
              "--resume"]
    code, err = _cli(capsys, resume)
    assert code == 0, err
    assert _snapshot(out) == before

    # The same command again continues the replacement from its step-2 checkpoint, then swaps it in.
    code, err = _cli(capsys, argv)
    assert code == 0 and "continuing the replacement run" in err and "step-0000002" in err, err
    result = json.loads((out / "result.json").read_text())
    assert result["steps"] == 6 and result["run_dir"] == str(out) and result["model_dir"] == str(out / "final")
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]  # no sibling, no old copy left


REPLACEMENTS = {
    "train": lambda w, out, tmp: ["train", w.model, "--data", w.data, "--out", out, "--steps", "6", "--eval-every", "2",
                                  *FAST],
    "grow": lambda w, out, tmp: ["grow", w.model, "--data", w.data, "--out", out, "--start-layers", "1",
                                 "--max-layers", "2", "--step-layers", "1", "--tokens-per-round", "384", "--margin",
                                 "-100", *FAST],
    "run": lambda w, out, tmp: ["run", _recipe(w, tmp / "new.yaml", tokens_per_round=384), "--out", out],
}


@pytest.mark.parametrize("command", sorted(REPLACEMENTS))
def test_a_replacement_is_swapped_in_whole_and_names_its_final_paths(command, world, previous, tmp_path, capsys):
    out = tmp_path / "case" / "out"
    shutil.copytree(previous(command), out)
    old = _snapshot(out)
    code, err = _cli(capsys, [*REPLACEMENTS[command](world, out, tmp_path), "--overwrite"])
    assert code == 0, err
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]
    new = _snapshot(out)
    assert new != old
    written = [(name, data.decode()) for name, data in new.items() if name.endswith((".json", ".md", ".html"))]
    assert written and not [name for name, text in written if ".out.new" in text]  # only final paths
    result = {"train": "result.json", "grow": "summary.json", "run": "report.json"}[command]
    stored = json.loads((out / result).read_text())
    assert str(out) in json.dumps(stored)
