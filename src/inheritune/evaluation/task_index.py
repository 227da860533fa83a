"""lm-eval's index of task names, plus the user's own task folder (``--include-path``).

The folder travels as an argument (``include_path``) from the command down to every lookup: two
calls with different folders never see each other's tasks. The index (thousands of YAMLs) is built
once per folder and process.
"""

from __future__ import annotations

import functools
from pathlib import Path

import yaml

from inheritune.error_lines import held_back, one_line
from inheritune.errors import InherituneError


def include_folder(path: str | Path | None) -> Path | None:
    """``--include-path`` checked and resolved (None: lm-eval's own tasks only). Commands call it
    before their slow loads; every lookup calls it again, so a Python caller is checked the same."""
    if path is None:
        return None
    if not Path(path).is_dir():
        raise InherituneError(f"--include-path {path} is not a folder of lm-eval task YAMLs")
    return Path(path).resolve()


@functools.lru_cache(maxsize=4)
def _manager(folder: Path | None):
    from lm_eval.tasks import TaskManager  # lm_eval: its task index is slow to import and to build

    with held_back():  # e.g. a user's task overriding one of lm-eval's: a notice, then maybe our error
        return TaskManager(include_path=None if folder is None else [str(folder)])


def harness_manager(include_path: str | Path | None = None):
    """The harness's task index: lm-eval's tasks and those of ``include_path``."""
    return _manager(include_folder(include_path))


def check_include_yamls(include_path: str | Path | None) -> None:
    """Before a task is called unknown: name a task YAML of the user's folder that does not load.
    lm-eval's index skips it without a word, and it is likely the one meant to define the task."""
    from lm_eval.tasks._yaml_loader import load_yaml  # lm_eval: what its index loads the YAMLs with

    folder = include_folder(include_path)
    for path in sorted(folder.rglob("*.yaml")) if folder is not None else ():
        try:
            load_yaml(path, resolve_func=False)
        except Exception as error:  # bad YAML, not a mapping, a missing include
            raise InherituneError(f"task YAML {path} in --include-path does not parse: {_why(error)}") from None


def _why(error: Exception) -> str:
    """A YAML error's problem and where (its text spans lines and repeats the path), else its message."""
    mark = getattr(error, "problem_mark", None)
    if isinstance(error, yaml.MarkedYAMLError) and error.problem and mark is not None:
        return f"{error.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return one_line(str(error), 200)
