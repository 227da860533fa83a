"""`inheritune train`: parse the options into a TrainConfig, then run ``training.trainer.train_model``.

The run itself (set up, resume, the loop, the final folder) is the component in ``training/``;
this module is the edge: the CLI's and Python's arguments, read once into their types.
"""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedModel

from inheritune.training.train_config import TrainConfig, make_config, read_recipe
from inheritune.training.train_result import TrainResult
from inheritune.training.trainer import train_model

HELP = {"resume": "continue the run in --out from its latest valid checkpoint"}  # shared: inheritune.commands.HELP

__all__ = ["HELP", "TrainResult", "train"]


def train(
    model: str | Path | PreTrainedModel,
    data: str | Path,
    out: str | Path,
    config: TrainConfig | dict | str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    tokenizer=None,
    teacher: PreTrainedModel | None = None,
    **options,
) -> TrainResult:
    """Train ``model`` on the prepared data folder ``data``; the run folder ``out`` holds everything.

    ``inheritune train MODEL --data DIR --out RUN [--config YAML] [--OPTION VALUE ...]`` with the
    same arguments: ``config`` is a TrainConfig, a dict of its fields or a YAML recipe, and every
    TrainConfig field is also a keyword (``seq_len=1024``, or the CLI's string ``"1e6"``),
    overriding it. ``teacher`` (Python only) is an in-memory model for ``distill_from``. What
    ``resume`` and ``overwrite`` do: ``training.trainer.train_model``, which runs it.
    """
    config = make_config(read_recipe(config) if isinstance(config, (str, Path)) else config, **options)
    return train_model(
        model, data, out, config, resume=resume, overwrite=overwrite, tokenizer=tokenizer, teacher=teacher
    )
