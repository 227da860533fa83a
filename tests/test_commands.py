"""Every command is a library function (issue 13) and its CLI is generated from it (issue 22).

The commands are enumerated from the parser and each is checked against its function the same
way: every parameter a command line can spell is an option with the function's own default (the
generator's contract, not a list kept by hand). A CLI invocation and the Python call with the same
arguments write the same files (byte-identical apart from timings) and the call returns a typed
result. ``--help`` shows every option's default; list options are comma-separated; every command
that loads a model takes ``--trust-remote-code``.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import json
import re
from pathlib import Path

import pytest

from conftest import make_data_dir, save_tiny
from inheritune.cli import COMMANDS as GENERATED, PYTHON, build_parser, main
from inheritune.cli.generate import keywords

# In-memory objects a command line cannot pass (the generator must find them unspellable).
PYTHON_ONLY = {"train": {"teacher"}}
DURATION = re.compile(r"\b\d+(\.\d+)? (s|min)\b")  # "took 3 s" in prose
TIMINGS = {"seconds", "time_s", "wall_time", "load", "tokens_per_s", "mfu", "time", "step_time", "elapsed"}


def _subparsers(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """Every leaf command (``data prepare`` included) and its parser."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update(_subparsers(sub, f"{prefix}{name} "))
    return found or {prefix.strip(): parser}


COMMANDS = _subparsers(build_parser())


def _function(command: str):
    module, name = PYTHON[command].rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if not isinstance(a, argparse._HelpAction)}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_a_python_counterpart(command):
    assert command in PYTHON, f"`inheritune {command}` has no Python counterpart in inheritune.cli.PYTHON"


def test_every_counterpart_is_a_command():
    assert set(PYTHON) <= set(COMMANDS), set(PYTHON) - set(COMMANDS)


@pytest.mark.parametrize("command", sorted(PYTHON))
def test_the_generated_options_are_the_function_parameters_with_their_defaults(command):
    import inheritune

    from inheritune.training.train_config import FIELDS

    function = _function(command)
    assert getattr(inheritune, function.__name__) is function  # exported at the top level
    parameters = dict(inspect.signature(function).parameters)
    options = {name: a for name, a in _options(COMMANDS[command]).items() if not name.startswith("_")}
    training = {name for name, a in options.items() if a.default is argparse.SUPPRESS}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        # every TrainConfig field is a keyword, as it is an option (train, grow), but those the function sets
        assert training == set(FIELDS) - set(GENERATED[command].fixed), command
        parameters = {k: p for k, p in parameters.items() if p.kind is not inspect.Parameter.VAR_KEYWORD}
    assert not training - set(FIELDS), command
    assert set(options) - training == set(parameters) - PYTHON_ONLY.get(command, set()), command
    for name, action in options.items():
        if name in training:
            continue
        default = parameters[name].default
        if default is inspect.Parameter.empty:
            assert action.required or not action.option_strings, (command, name)
        else:  # the function's own default object: the CLI and Python cannot drift apart
            assert action.default is default and not action.required, (command, name)


def _tree(out: Path) -> dict[str, object]:
    """Every file of ``out`` (a folder, or one file): JSON (and JSON lines) without timing keys and
    with the output's own path written ``<out>``, CSV and Markdown as text the same way, PNGs by
    name only (matplotlib output is not what is compared), trainer states (.pt) too (they hold
    timings), weights and other binary files as bytes."""
    def drop(obj):
        if isinstance(obj, dict):
            return {k: drop(v) for k, v in obj.items() if k not in TIMINGS}
        if isinstance(obj, list):
            return [drop(v) for v in obj]
        return DURATION.sub("<t>", obj.replace(str(out), "<out>")) if isinstance(obj, str) else obj

    files = {}
    for path in sorted(out.rglob("*")) if out.is_dir() else [out]:
        if path.is_file() and "tensorboard" not in path.parts:
            name = str(path.relative_to(out)) if out.is_dir() else "<out>"
            if path.suffix == ".json":
                files[name] = drop(json.loads(path.read_text()))
            elif path.suffix == ".jsonl":
                files[name] = [drop(json.loads(line)) for line in path.read_text().splitlines()]
            elif path.suffix in (".csv", ".md", ".html") and path.parent.name != "checkpoints":
                files[name] = "text" if path.name in TIMED_TEXT else drop(path.read_text())
            elif path.suffix in (".png", ".pt"):  # plots; trainer states hold their wall time
                files[name] = path.suffix
            else:
                files[name] = path.read_bytes()
    return files


# Text files holding timings in their cells (compared by name only).
TIMED_TEXT = {"log.csv", "report.md", "report.html"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, request):
    from conftest import generated_text, make_tokenizer

    tmp = tmp_path_factory.mktemp("commands")
    tok = make_tokenizer()
    model = save_tiny(tmp / "m", "llama", layers=2, tok=tok)
    data = make_data_dir(tmp / "data", tok, n_docs=40, val_docs=12)
    docs = tmp / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": d}) + "\n" for d in generated_text(60, seed=5)))
    recipe = tmp / "recipe.yaml"
    recipe.write_text(json.dumps({
        "reference": str(model), "data": {"dir": str(data)},
        "train": {"seq_len": 16, "batch_size": 2, "precision": "fp32", "peak_flops": 1e12, "progress": False},
        "grow": {"start_layers": 1, "step_layers": 1, "max_layers": 2, "tokens_per_round": 64, "margin": -100},
        "arms": {"scratch": False}, "analysis": {"enabled": False}, "eval": {"tasks": []}}))
    return {"tmp": tmp, "model": model, "data": data, "docs": docs, "recipe": recipe}


TRAIN = ["--seq-len", "16", "--batch-size", "2", "--precision", "fp32", "--peak-flops", "1e12", "--no-progress"]


def _derive_argv(w, out):
    return ["derive", w["model"], "--layers", "1", "--out", out]


def _prepare_argv(w, out):
    return ["data", "prepare", w["docs"], "--tokenizer", w["model"], "--val-tokens", "300", "--out", out]


def _analyze_argv(w, out):
    return ["analyze", w["model"], "--data", w["data"], "--sequences", "2", "--seq-len", "12", "--out", out]


def _eval_argv(w, out):
    return ["eval", w["model"], "--data", w["data"], "--tasks", "cloze-local", "--limit", "2", "--out", f"{out}.json"]


def _train_argv(w, out):
    return ["train", w["model"], "--data", w["data"], "--steps", "2", *TRAIN, "--out", out]


def _grow_argv(w, out):
    return ["grow", w["model"], "--data", w["data"], "--start-layers", "1", "--max-layers", "2",
            "--tokens-per-round", "64", "--margin", "-100", *TRAIN, "--out", out]


def _run_argv(w, out):
    return ["run", w["recipe"], "--out", out]


def _importance_argv(w, out):
    return ["importance", w["model"], "--data", w["data"], "--tasks", "mmlu-local", "--examples", "2",
            "--seq-len", "16", "--shots", "1", "--out", out]


def _prune_argv(w, out):
    return ["prune", w["model"], "--data", w["data"], "--examples", "2", "--seq-len", "16", "--heads", "25",
            "--ffn", "50", "--sweep", "--steps", "0,50", "--out", out]


def _induction_argv(w, out):
    return ["induction", w["model"], "--out", out, "--seeds", "2", "--seg-len", "6", "--top", "3"]


def _export_argv(w, out):
    return ["export", w["model"], "--type", "q8_0", "--gguf", f"{out}.gguf"]


def _study_argv(w, out):
    return ["study", w["model"], "--data", w["data"], "--tasks", "mmlu-stem", "--shots", "0", "--examples", "2",
            "--seq-len", "16", "--sequences", "2", "--seeds", "2", "--out", out]


INVOCATIONS = {"importance": _importance_argv, "study": _study_argv, "prune": _prune_argv, "induction": _induction_argv,
               "derive": _derive_argv, "data prepare": _prepare_argv, "analyze": _analyze_argv, "eval": _eval_argv,
               "train": _train_argv, "grow": _grow_argv, "run": _run_argv, "export": _export_argv}
# The JSON file holding ``result.report()`` (relative to the output; "" = the output itself).
REPORTS = {"importance": "importance.json", "study": "study.json", "prune": "prune.json", "induction": "induction.json",
           "derive": "derive.json", "analyze": "analysis.json", "eval": "", "run": "report.json"}


def _out(args) -> Path:
    """Where a command writes: --out, or export's --gguf file."""
    return Path(args.gguf if args._name == "export" else args.out)


def test_every_counterpart_is_invoked_here():
    assert set(INVOCATIONS) == set(PYTHON)


@pytest.mark.parametrize("command", sorted(INVOCATIONS))
def test_cli_and_python_call_write_the_same_files_and_return_a_typed_result(command, inputs, capsys):
    w = inputs
    name = command.replace(" ", "-")
    argv = [str(a) for a in INVOCATIONS[command](w, w["tmp"] / f"{name}-cli")]
    assert main(argv) == 0, capsys.readouterr().err
    cli_out = _out(build_parser().parse_args(argv))

    args = build_parser().parse_args([str(a) for a in INVOCATIONS[command](w, w["tmp"] / f"{name}-py")])
    result = _function(command)(**keywords(args))
    py_out = _out(args)

    cli, py = _tree(cli_out), _tree(py_out)
    assert cli.keys() == py.keys()
    for file in cli:
        assert cli[file] == py[file], f"{command}: {file} differs between the CLI and the Python call"

    assert dataclasses.is_dataclass(result)
    assert type(result).from_json(json.loads(json.dumps(result.to_json()))) == result
    if command in REPORTS:
        assert result.out == py_out and result.seconds > 0
        assert result.report() == json.loads((py_out / REPORTS[command] if REPORTS[command] else py_out).read_text())


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_of_every_command_shows_every_default(command):
    parser = COMMANDS[command]
    formatter = parser._get_formatter()
    missing = [action.option_strings[0] for action in parser._actions
               if action.option_strings and not isinstance(action, argparse._HelpAction) and not action.required
               and "default" not in formatter._get_help_string(action).lower()]
    assert not missing, (command, missing)
    assert "(default: " in parser.format_help()


def test_a_list_option_is_comma_separated_and_never_swallows_the_model():
    parser = build_parser()
    args = parser.parse_args(["importance", "--tasks", "mmlu-local", "MODEL", "--out", "o"])
    assert args.model == "MODEL" and args.tasks == ["mmlu-local"]
    assert parser.parse_args(["eval", "M", "--tasks", "a, b,"]).tasks == ["a", "b"]
    for command, p in COMMANDS.items():
        for action in p._actions:
            if action.option_strings:
                assert action.nargs not in ("+", "*"), (command, action.option_strings)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_that_loads_a_model_trusts_remote_code_only_when_asked(command):
    options = _options(COMMANDS[command])
    assert "trust_remote_code" in options, command
    default = options["trust_remote_code"].default
    if default == argparse.SUPPRESS:  # a training option: its default is TrainConfig's
        from inheritune.training import TrainConfig

        default = TrainConfig().trust_remote_code
    assert default is False, command
