"""The recipe's trainer: ``train(model, data, out, config)`` -> ``TrainResult``."""
from inheritune.training.config import TrainConfig
from inheritune.training.trainer import TrainingInterrupted, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "TrainingInterrupted", "train"]
