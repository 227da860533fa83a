"""One model-card writer (models/card.py): every command that writes a model writes the same
fields, and the hub model a chain started from stays its base_model through every step."""

from __future__ import annotations

import pytest
import yaml

from conftest import make_data_dir, save_tiny
from inheritune.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")
BASE = "someorg/tiny-base"


def _front(folder) -> dict:
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n"), text[:80]
    return yaml.safe_load(text[4 : text.index("\n---", 4)])


@pytest.fixture(scope="module")
def source(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("card")
    model = save_tiny(root / "m", "llama", layers=4, tok=tokenizer)
    (model / "README.md").write_text(f"---\nbase_model: {BASE}\nlibrary_name: transformers\n---\n\n# tiny\n")
    return model, make_data_dir(root / "data", tokenizer, n_docs=60, val_docs=20)


TRAIN = ["--seq-len", "16", "--batch-size", "2", "--no-progress"]


@pytest.mark.parametrize(
    "command, argv, folder",
    [
        ("derive", ["derive", "M", "--layers", "2", "--out", "OUT"], ""),
        ("train", ["train", "M", "--data", "D", "--out", "OUT", "--tokens", "64", *TRAIN], "final"),
        ("grow", ["grow", "M", "--data", "D", "--out", "OUT", "--start-layers", "3", "--tokens-per-round", "64",
                  "--margin", "100", *TRAIN], "model"),
        ("prune", ["prune", "M", "--data", "D", "--drop-layers", "1", "--by", "first-n", "--out", "OUT"], ""),
        ("prune", ["prune", "M", "--data", "D", "--width-ffn", "50", "--out", "OUT"], ""),
        ("prune", ["prune", "M", "--data", "D", "--params", "0.7", "--budget-by", "width", "--out", "OUT"], ""),
    ],
)
def test_every_command_writes_the_same_card_fields_and_keeps_the_base_model(
    source, tmp_path, capsys, command, argv, folder
):
    model, data = source
    out = tmp_path / "out"
    swap = {"M": str(model), "D": str(data), "OUT": str(out)}
    code = main([swap.get(a, a) for a in argv])
    assert code == 0, capsys.readouterr().err
    front = _front(out / folder if folder else out)
    assert front["base_model"] == BASE and front["library_name"] == "transformers"
    assert front["tags"] == ["inheritune", f"inheritune-{command}"]
    body = (out / folder / "README.md" if folder else out / "README.md").read_text(encoding="utf-8")
    assert f"- made from: {model}" in body and f"- command: {command}" in body
