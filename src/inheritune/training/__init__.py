"""The machinery the ``train`` command (``inheritune.commands.train``) runs: its config, the loss,
the optimizer, checkpoints, the teacher and its cache, partial healing, data parallelism."""

from inheritune.training.train_config import TrainConfig

__all__ = ["TrainConfig"]
