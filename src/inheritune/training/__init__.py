"""The training components: the config, the run into a folder (trainer, loop, resume), the loss,
the optimizer, checkpoints, the teacher and its cache, partial healing, data parallelism."""

from inheritune.training.train_config import TrainConfig

__all__ = ["TrainConfig"]
