"""Training with timm's parts: recipes, transforms, checkpoints, distributed helpers, outputs and plots.

The command line front end is `timm-shakedrop train` (`timm_shakedrop.cli.train`).
"""
from .checkpoint import ResumableCheckpointSaver, atomic_torch_save, load_training_checkpoint
from .recipes import RECIPES, get_recipe
from .trainer import NonFiniteLossError, Trainer, TrainingInterrupted, TrainResult

__all__ = [
    'RECIPES',
    'NonFiniteLossError',
    'ResumableCheckpointSaver',
    'Trainer',
    'TrainingInterrupted',
    'TrainResult',
    'atomic_torch_save',
    'get_recipe',
    'load_training_checkpoint',
]
