"""The README's Python examples run: each ```python block is executed as written, except that its
first assignment (the packaged SmolLM2, the packaged corpus, the sizes and the recipe) is replaced
by a tiny reference, a generated corpus and a tiny recipe, so that the block runs in seconds."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from conftest import generated_text, make_tokenizer, needs_tasks, tiny_model
from inheritune.commands.study import TASKS as STUDY_TASKS

README = Path(__file__).resolve().parents[1] / "README.md"
FIRST = re.compile(r"^REFERENCE, CORPUS, LAYERS, TOKENS, RECIPE = .*$", re.M)


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def _tiny(root: Path) -> str:
    """The values of the block's first line, for a 3-layer model and a short corpus."""
    model = tiny_model("llama", 3)
    model.config.max_position_embeddings = 512  # rotary positions: the README's seq_len 256 fits
    reference = root / "reference"
    model.save_pretrained(reference)
    make_tokenizer().save_pretrained(reference)
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in generated_text(1500, seed=3)))
    recipe = root / "recipe.yaml"
    recipe.write_text(json.dumps({
        "reference": str(reference), "data": {"sources": [str(corpus)], "val_tokens": 600},
        "train": {"seq_len": 32, "batch_size": 2, "precision": "fp32", "peak_flops": 1e12, "progress": False},
        "grow": {"start_layers": 1, "step_layers": 1, "max_layers": 2, "tokens_per_round": 128, "margin": -100},
        "arms": {"scratch": True}, "analysis": {"enabled": False}, "eval": {"tasks": []}}))
    return f"REFERENCE, CORPUS, LAYERS, TOKENS, RECIPE = {str(reference)!r}, {str(corpus)!r}, 2, 128, {str(recipe)!r}"


def test_the_readme_has_a_python_example_per_command():
    from inheritune.cli import PYTHON

    code = "\n".join(python_blocks())
    missing = [name for name in PYTHON.values() if f"{name}(" not in code]
    assert not missing, f"README Python examples lack {missing}"


@needs_tasks(*STUDY_TASKS)  # the block runs study with its default tasks
@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_block_runs(index, tmp_path, monkeypatch):
    block = python_blocks()[index]
    assert FIRST.search(block), "a README Python block must start with the line the test substitutes"
    code = FIRST.sub(_tiny(tmp_path).replace("\\", "\\\\"), block, count=1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    namespace: dict = {}
    exec(compile(code, f"README.md python block {index}", "exec"), namespace)
    assert (tmp_path / "work" / "derived" / "config.json").is_file()
    assert namespace["report"].out == Path("work/run")
