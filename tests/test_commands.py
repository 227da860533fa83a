"""Every command is a library function (issue 13): the CLI only maps arguments.

The commands are enumerated from the parser, so a new command fails here until it has a Python
counterpart in ``cli.PYTHON`` (or is listed below as a known gap). For each counterpart, a CLI
invocation and the Python call with the same arguments write the same files (byte-identical apart
from timings) and the call returns a typed result. ``--help`` shows every option's default; list
options are comma-separated; every command that loads a model takes ``--trust-remote-code``.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import json
from pathlib import Path

import pytest

from conftest import make_data_dir, save_tiny
from inheritune.cli import PYTHON, build_parser, main

# Commands whose Python counterpart does not yet take the command's arguments and return a typed
# result (issue 13, item 1). Each is an expected failure: giving one a counterpart means moving
# it from here to ``cli.PYTHON``.
NOT_YET = {"derive", "data prepare", "analyze", "eval", "train", "grow", "run"}
# Commands that load a model but whose parser has no --trust-remote-code yet (issue 13, item 2).
NO_TRUST_YET: set[str] = set()
# Options whose default comes from TrainConfig (argparse.SUPPRESS) do not show it in --help yet.
HELP_YET: set[str] = set()
TIMINGS = {"seconds", "time_s", "wall_time"}


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
    if command in NOT_YET:
        assert command not in PYTHON
        pytest.xfail(f"{command}: no library function with the command's arguments and a typed result yet")
    assert command in PYTHON, f"`inheritune {command}` has no Python counterpart in inheritune.cli.PYTHON"


def test_the_known_gaps_are_commands():
    assert NOT_YET <= set(COMMANDS) and set(PYTHON) <= set(COMMANDS)
    assert not NOT_YET & set(PYTHON), "a command with a counterpart is still listed as a gap"


@pytest.mark.parametrize("command", sorted(PYTHON))
def test_python_counterpart_takes_the_cli_arguments_with_the_same_defaults(command):
    import inheritune

    function = _function(command)
    assert getattr(inheritune, function.__name__) is function  # exported at the top level
    parameters = inspect.signature(function).parameters
    options = _options(COMMANDS[command])
    assert set(parameters) == set(options) - {"func"}, command
    for name, action in options.items():
        if name == "func" or action.required or not action.option_strings:
            continue
        default = parameters[name].default
        expected = action.default
        assert (list(default) if isinstance(default, tuple) else default) == expected, (command, name)


def _tree(folder: Path) -> dict[str, object]:
    """Every file: JSON without timing keys, other text and binary files as bytes; PNGs by name
    only (matplotlib output is not what is compared)."""
    def drop(obj):
        if isinstance(obj, dict):
            return {k: drop(v) for k, v in obj.items() if k not in TIMINGS}
        return [drop(v) for v in obj] if isinstance(obj, list) else obj

    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            name = str(path.relative_to(folder))
            if path.suffix == ".json":
                files[name] = drop(json.loads(path.read_text()))
            elif path.suffix == ".png":
                files[name] = "png"
            else:
                files[name] = path.read_bytes()
    return files


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, request):
    from conftest import make_tokenizer

    tmp = tmp_path_factory.mktemp("commands")
    tok = make_tokenizer()
    model = save_tiny(tmp / "m", "llama", layers=2, tok=tok)
    data = make_data_dir(tmp / "data", tok, n_docs=40, val_docs=12)
    return {"tmp": tmp, "model": model, "data": data}


def _importance_argv(w, out):
    return ["importance", w["model"], "--data", w["data"], "--tasks", "mmlu-local", "--examples", "2",
            "--seq-len", "16", "--shots", "1", "--out", out]


def _prune_argv(w, out):
    return ["prune", w["model"], "--data", w["data"], "--examples", "2", "--seq-len", "16", "--heads", "25",
            "--ffn", "50", "--sweep", "--steps", "0,50", "--out", out]


def _induction_argv(w, out):
    return ["induction", w["model"], "--out", out, "--seeds", "2", "--seg-len", "6", "--top", "3"]


def _study_argv(w, out):
    return ["study", w["model"], "--data", w["data"], "--tasks", "mmlu-stem", "--shots", "0", "--examples", "2",
            "--seq-len", "16", "--sequences", "2", "--seeds", "2", "--out", out]


INVOCATIONS = {"importance": _importance_argv, "study": _study_argv, "prune": _prune_argv,
               "induction": _induction_argv}


def test_every_counterpart_is_invoked_here():
    assert set(INVOCATIONS) == set(PYTHON)


@pytest.mark.parametrize("command", sorted(INVOCATIONS))
def test_cli_and_python_call_write_the_same_files_and_return_a_typed_result(command, inputs, capsys):
    w = inputs
    argv = [str(a) for a in INVOCATIONS[command](w, w["tmp"] / f"{command}-cli")]
    assert main(argv) == 0, capsys.readouterr().err

    args = build_parser().parse_args(argv)
    kwargs = {k: v for k, v in vars(args).items() if k not in ("func", "command", "debug", "model")}
    kwargs["out"] = str(w["tmp"] / f"{command}-py")
    result = _function(command)(args.model, **kwargs)

    cli, py = _tree(w["tmp"] / f"{command}-cli"), _tree(w["tmp"] / f"{command}-py")
    assert cli.keys() == py.keys()
    for name in cli:
        assert cli[name] == py[name], f"{command}: {name} differs between the CLI and the Python call"

    assert dataclasses.is_dataclass(result) and result.out == Path(kwargs["out"]) and result.seconds > 0
    report = json.loads((Path(kwargs["out"]) / f"{command}.json").read_text())
    assert result.report() == report
    assert type(result).from_json(json.loads(json.dumps(result.to_json()))) == result


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_of_every_command_shows_every_default(command):
    parser = COMMANDS[command]
    formatter = parser._get_formatter()
    missing = [action.option_strings[0] for action in parser._actions
               if action.option_strings and not isinstance(action, argparse._HelpAction) and not action.required
               and "default" not in formatter._get_help_string(action).lower()]
    if command in HELP_YET:
        assert missing, f"{command} shows every default now: drop it from HELP_YET"
        pytest.xfail(f"{command}: options defaulting to the config's value do not show it: {missing}")
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
    if command in NO_TRUST_YET:
        pytest.xfail(f"{command}: --trust-remote-code not wired yet")
    options = _options(COMMANDS[command])
    assert "trust_remote_code" in options, command
    default = options["trust_remote_code"].default
    if default == argparse.SUPPRESS:  # a training option: its default is TrainConfig's
        from inheritune.training import TrainConfig

        default = TrainConfig().trust_remote_code
    assert default is False, command
