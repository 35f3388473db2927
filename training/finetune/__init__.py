"""Fine-tuning of open_clip models with R-Adapter and the baselines it is compared against."""

from .config import METHODS, TASKS, TrainConfig, config_from_args, load_recipe, read_config
from .loop import train

__all__ = ["METHODS", "TASKS", "TrainConfig", "config_from_args", "load_recipe", "read_config", "train"]
