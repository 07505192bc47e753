"""Pretraining: config, optimizer and schedule, one step with global load balancing, checkpoints, loop."""

from emomoe.train.config import TrainConfig, load_train_config
from emomoe.train.loop import train

__all__ = ["TrainConfig", "load_train_config", "train"]
