"""Counts as the README writes them (1e6, 1_000_000) and one-line argparse errors."""
from __future__ import annotations

import argparse

import pytest

from inheritune.cli import main
from inheritune.options import count


@pytest.mark.parametrize("text", ["1000000", "1_000_000", "1e6", "1E6", "10e5", "1e+6"])
def test_count_spellings_agree(text):
    assert count(text) == 1_000_000


@pytest.mark.parametrize("text, value", [("0", 0), ("25e4", 250_000), ("15e2", 1500), ("1e9", 10**9)])
def test_count_values(text, value):
    assert count(text) == value


@pytest.mark.parametrize("text, hint", [("1.5e3", "1500, 1_500 or 15e2"), ("1.0", "(write 1)"), ("2e3.0", "1e6"),
                                        ("2.5", "1e6"), ("abc", "1e6"), ("1e-3", "1e6"), ("1_", "1e6"),
                                        ("1e99", "too large")])
def test_count_refusals_say_what_to_write(text, hint):
    with pytest.raises(argparse.ArgumentTypeError, match=f"'{text}'") as e:
        count(text)
    assert hint in str(e.value)


def _one_line_exit(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "usage:" not in err and "Traceback" not in err
    return err


def test_a_fractional_count_on_the_command_line_is_one_line(capsys, tmp_path):
    err = _one_line_exit(capsys, ["data", "prepare", "x.txt", "--tokenizer", "t", "--out", str(tmp_path / "d"),
                                  "--max-tokens", "1.5e3"])
    assert err.startswith("inheritune: error: --max-tokens: '1.5e3' is not a whole count (write 1500, 1_500 or 15e2)")
    assert "(see inheritune data prepare --help)" in err


@pytest.mark.parametrize("argv, words", [
    (["derive", "ref", "--out", "x", "--layers", "2", "--bogus"], "unrecognized arguments: --bogus"),
    (["derive", "ref"], "required"),
    (["nonsense"], "invalid choice"),
    ([], "required: COMMAND"),
    (["data"], "ACTION"),
    (["analyze", "m", "--data", "d", "--out", "o", "--sequences", "ten"], "--sequences: 'ten' is not a count"),
])
def test_argparse_errors_are_one_line(capsys, argv, words):
    assert words in _one_line_exit(capsys, argv)


def test_counts_reach_the_commands_as_ints():
    from inheritune.cli import build_parser

    args = build_parser().parse_args(["data", "prepare", "s", "--tokenizer", "t", "--out", "o",
                                      "--max-tokens", "1e6", "--val-tokens", "2_000"])
    assert (args.max_tokens, args.val_tokens) == (1_000_000, 2000)
    args = build_parser().parse_args(["importance", "m", "--out", "o", "--examples", "1e2", "--seq-len", "2_56"])
    assert (args.examples, args.seq_len) == (100, 256)
