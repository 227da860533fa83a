"""Option strings parsed once (inheritune.specs, the block selector spec): the parts a value holds,
one-line refusals that name the option as the user typed it, the value and the model whose shape
makes it wrong, and every such refusal made before anything is created or renamed."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import pytest
import yaml

from conftest import make_data_dir, save_tiny
from inheritune.analysis.selection import BlockSelector
from inheritune.cli import main
from inheritune.errors import InherituneError
from inheritune.specs import BlockList, LoraTargets, TeacherStates, TrainBlocks
from inheritune.training.train_config import make_config

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- the values ---------------------------------------------------------------------------------


def test_a_spec_is_its_text_with_its_parts_and_keeps_its_key_through_copies():
    blocks = TrainBlocks("last:3", "--train-blocks")
    assert blocks == "last:3" and (blocks.kind, blocks.k, blocks.blocks) == ("last", 3, None)
    assert json.dumps({"b": blocks}) == '{"b": "last:3"}'
    for clone in (copy.deepcopy(blocks), pickle.loads(pickle.dumps(blocks))):
        assert clone == blocks and clone.key == "--train-blocks" and clone.k == 3
    listed = TrainBlocks([0, 1, 5], "train_blocks")
    assert listed == "0,1,5" and listed.kind == "list" and listed.blocks is not None
    assert listed.blocks.indices == (0, 1, 5)
    assert BlockList("0-2,7", "k").indices == (0, 1, 2, 7)
    assert LoraTargets(" q_proj, v_proj ", "k").names == ("q_proj", "v_proj") and LoraTargets("all-linear").names is None
    assert TeacherStates("top:64", "k").k == 64 and TeacherStates("hidden", "k").k is None
    assert (BlockSelector("first-last:3", "--by").name, BlockSelector("first-last:3", "--by").tail) == ("first-last", 3)
    assert BlockSelector("list:0-2,5", "--by").listed == (0, 1, 2, 5)


@pytest.mark.parametrize(
    "kind, text, message",
    [
        (TrainBlocks, "last:0", r"^--x 'last:0': must be all, last:K, cuts:K \(K >= 1\) or block indices like 0-3,20$"),
        (TrainBlocks, "cuts:x", r"^--x 'cuts:x': must be all, last:K"),
        (TrainBlocks, "first:2", r"^--x 'first:2': must be all, last:K"),
        (TrainBlocks, "3-1", r"^--x '3-1': must be all, last:K"),
        (TrainBlocks, "", r"^--x '': must be all"),
        (TeacherStates, "top:0", r"^--x 'top:0': must be hidden or top:K \(K >= 1\)$"),
        (TeacherStates, "top64", r"^--x 'top64': must be hidden or top:K"),
        (LoraTargets, "q_proj,,v_proj", r"^--x 'q_proj,,v_proj': must be all-linear or module names like q_proj,v_proj$"),
        (LoraTargets, "", r"^--x '': must be all-linear"),
        (LoraTargets, "q_proj;v_proj", r"^--x 'q_proj;v_proj': must be all-linear"),
        (BlockList, "0-3,2", r"^--x '0-3,2': block 2 is listed twice$"),
        (BlockList, "5-2", r"^--x '5-2': the range 5-2 runs backwards$"),
        (BlockList, "a,b", r"^--x 'a,b': must be block indices like 0-11,27-29"),
        (BlockSelector, "angualr", r"^--x 'angualr': not a block selector \(did you mean 'angular'\?\); one of first-n"),
        (BlockSelector, "first-last:-1", r"^--x 'first-last:-1': K must be a whole number >= 0"),
        (BlockSelector, "first-last", r"^--x 'first-last': first-last needs a parameter \(first-last:K\)$"),
        (BlockSelector, "angular:3", r"^--x 'angular:3': angular takes no parameter$"),
        (BlockSelector, "list:0,,1", r"^--x 'list:0,,1': must be block indices like 0-11,27-29"),
    ],
)
def test_bad_syntax_is_one_line_naming_the_option_and_value(kind, text, message):
    with pytest.raises(InherituneError, match=message):
        kind(text, "--x")


def test_checks_against_a_model_name_the_option_the_value_and_the_model():
    with pytest.raises(InherituneError, match=r"^--train-blocks 'last:99': m has 4 blocks; last:4 trains them all"):
        TrainBlocks("last:99", "--train-blocks").check_depth(4, "m")
    TrainBlocks("last:4", "--train-blocks").check_depth(4, "m")  # every block but not the embeddings: allowed
    with pytest.raises(InherituneError, match=r"^train.train_blocks '0-9': block 4 is out of range: m has 4 blocks"):
        TrainBlocks("0-9", "train.train_blocks").check_depth(4, "m")
    with pytest.raises(InherituneError, match=r"^--teacher-states 'top:400': K is larger than the vocabulary of the "
                                              r"teacher t \(320 tokens\)$"):
        TeacherStates("top:400", "--teacher-states").check_vocabulary(320, "t")
    with pytest.raises(InherituneError, match=r"^--by 'first-last:4': K must be in 0..3 for m \(4 blocks\)$"):
        BlockSelector("first-last:4", "--by").check(layers=4, keep=[2], model="m")
    with pytest.raises(InherituneError, match=r"^--by 'list:0,1,3': keeps 3 blocks, so it cannot make a 2-block model"):
        BlockSelector("list:0,1,3", "--by").check(layers=4, keep=[2], model="m")
    with pytest.raises(InherituneError, match=r"^--by 'list:0-9': block 4 is out of range: m has 4 blocks"):
        BlockSelector("list:0-9", "--by").check(layers=4, keep=[10], model="m")


def test_python_keywords_recipe_keys_and_cli_options_each_name_themselves(tmp_path):
    with pytest.raises(InherituneError, match=r"^train_blocks 'last:x': must be"):
        make_config(tokens=1, train_blocks="last:x")
    with pytest.raises(InherituneError, match=r"^teacher_states 'top:': must be"):
        make_config(tokens=1, teacher_states="top:")
    from inheritune.recipe import recipe_from_dict

    with pytest.raises(InherituneError, match=r"^train.train_blocks 'cuts:0': must be"):
        recipe_from_dict({"reference": "x", "train": {"train_blocks": "cuts:0"}})
    with pytest.raises(InherituneError, match=r"^inherit.by 'first-last:x': K must be a whole number >= 0"):
        recipe_from_dict({"reference": "x", "inherit": {"by": "first-last:x"}})
    assert make_config(tokens=1, train_blocks="last:2").train_blocks.k == 2
    assert recipe_from_dict({"reference": "x", "train": {"train_blocks": 3}}).train["train_blocks"].blocks.indices == (3,)
    with pytest.raises(InherituneError, match=r"^recipe key 'train.train_blocks' must be all, last:K, .* not True$"):
        recipe_from_dict({"reference": "x", "train": {"train_blocks": True}})


# ---- checked before anything is created or renamed ----------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("specs")
    model = save_tiny(root / "m", "llama", layers=4, tok=tokenizer)
    data = make_data_dir(root / "data", tokenizer, n_docs=60, val_docs=20)
    return model, data


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def _refused(capsys, argv: list, expected: str, work: Path) -> None:
    """The command exits 2 with one line matching ``expected``, and ``work`` is exactly as it was."""
    before = _snapshot(work)
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("inheritune: error: "), err
    assert expected in err, err
    assert _snapshot(work) == before, "the refused command created, renamed or changed something"


TRAIN = ["--tokens", "64", "--seq-len", "16", "--batch-size", "2", "--no-progress"]


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--train-blocks", "0-9"], "--train-blocks '0-9': block 4 is out of range: "),
        (["--train-blocks", "last:99"], "--train-blocks 'last:99': "),
        (["--train-blocks", "cuts:9"], "--train-blocks 'cuts:9': "),
        (["--train-blocks", "last:0"], "--train-blocks 'last:0': must be"),
        (["--teacher-states", "top:99999", "--distill-from", "TEACHER"], "K is larger than the vocabulary of the teacher"),
        (["--teacher-states", "top:x", "--distill-from", "TEACHER"], "--teacher-states 'top:x': must be hidden or top:K"),
    ],
)
@pytest.mark.parametrize("existing", [False, True])
def test_train_refuses_a_spec_the_model_cannot_take_before_anything_is_written(
    world, tmp_path, capsys, extra, expected, existing
):
    model, data = world
    out = tmp_path / "run"
    if existing:
        out.mkdir()
        (out / "keep.txt").write_text("an earlier run")
    extra = [str(model) if e == "TEACHER" else e for e in extra]
    argv = ["train", model, "--data", data, "--out", out, *TRAIN, *extra, "--teacher-cache", tmp_path / "cache"]
    _refused(capsys, argv + (["--overwrite"] if existing else []), expected, tmp_path)


@pytest.mark.parametrize(
    "by, expected",
    [
        ("first-last:-1", "--by 'first-last:-1': K must be a whole number >= 0"),
        ("first-last:4", "--by 'first-last:4': K must be in 0..3 for "),
        ("list:0,1,3", "--by 'list:0,1,3': keeps 3 blocks"),
        ("list:0-9", "--by 'list:0-9': block 4 is out of range"),
        ("angularr", "--by 'angularr': not a block selector"),
    ],
)
def test_grow_derive_and_prune_refuse_a_selector_before_anything_is_written(world, tmp_path, capsys, by, expected):
    model, data = world
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "keep.txt").write_text("an earlier output")
    grow = ["grow", model, "--data", data, "--start-layers", "2", "--tokens-per-round", "64", "--seq-len", "16"]
    for argv in (
        [*grow, "--batch-size", "2", "--by", by, "--out", tmp_path / "new"],
        [*grow, "--batch-size", "2", "--by", by, "--out", tmp_path / "old", "--overwrite"],
        ["derive", model, "--layers", "2", "--by", by, "--out", tmp_path / "new"],
        ["derive", model, "--layers", "2", "--by", by, "--out", tmp_path / "old", "--overwrite"],
        ["prune", model, "--data", data, "--drop-layers", "2", "--by", by, "--out", tmp_path / "old", "--overwrite"],
    ):
        _refused(capsys, argv, expected, tmp_path)


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--width-ffn", "0"], "removes nothing"),
        (["--width-heads", "0", "--width-ffn", "0"], "removes nothing"),
        (["--width-ffn", "100"], "--width-ffn"),
        (["--drop-layers", "0", "--by", "angular"], "--drop-layers"),
        (["--drop-layers", "4", "--by", "angular"], "--drop-layers"),
    ],
)
def test_prune_refuses_a_cut_that_removes_nothing_or_everything(world, tmp_path, capsys, argv, expected):
    model, data = world
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "keep.txt").write_text("an earlier output")
    _refused(capsys, ["prune", model, "--data", data, *argv, "--out", tmp_path / "old", "--overwrite"], expected,
             tmp_path)


def _recipe(tmp_path: Path, model: Path, data: Path, **sections) -> Path:
    recipe = {
        "reference": str(model),
        "data": {"dir": str(data)},
        "train": {"seq_len": 16, "batch_size": 2, "progress": False, **sections.pop("train", {})},
        "grow": {"start_layers": 2, "step_layers": 1, "max_layers": 2, "tokens_per_round": 64},
        "arms": {"scratch": False, "first_n": False},
        **sections,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.parametrize(
    "sections, expected",
    [
        ({"inherit": {"by": "first-last:-1"}}, "inherit.by 'first-last:-1': K must be a whole number >= 0"),
        ({"inherit": {"by": "first-last:5"}}, "inherit.by 'first-last:5': K must be in 0..3 for "),
        ({"inherit": {"by": "list:0-9"}}, "inherit.by 'list:0-9': block 4 is out of range"),
        ({"train": {"train_blocks": "0-9"}}, "train.train_blocks '0-9': block 2 is out of range"),
        ({"train": {"train_blocks": "last:9"}}, "train.train_blocks 'last:9': "),
        ({"train": {"train_blocks": "lst:2"}}, "train.train_blocks 'lst:2': must be"),
        ({"train": {"lora": 4, "lora_targets": "q_proj,"}}, "train.lora_targets 'q_proj,': must be all-linear"),
        ({"train": {"lora": 4, "lora_targets": "qproj"}}, "train.lora_targets 'qproj': llama has no module named qproj"),
        ({"train": {"lora": 4, "lora_targets": "lm_head"}}, "train.lora_targets 'lm_head': lm_head is an embedding"),
        ({"train": {"teacher_states": "top:99999"}, "distill": {"enabled": True}},
         "train.teacher_states 'top:99999': K is larger than the vocabulary of the teacher"),
    ],
)
def test_run_and_run_check_refuse_a_recipe_spec_before_out_exists(world, tmp_path, capsys, sections, expected):
    model, data = world
    recipe = _recipe(tmp_path, model, data, **sections)
    out = tmp_path / "run"
    _refused(capsys, ["run", recipe, "--out", out], expected, tmp_path)
    _refused(capsys, ["run", recipe, "--out", out, "--check"], expected, tmp_path)
    assert not out.exists()
