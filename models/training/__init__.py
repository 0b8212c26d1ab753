"""Training loops for the generators in :mod:`models.nets`."""

from models.training.diffusion import DiffusionSettings, DiffusionTrainer
from models.training.gan import GANSettings, GANTrainer, TrainingBatch

__all__ = ["GANSettings", "GANTrainer", "TrainingBatch", "DiffusionSettings", "DiffusionTrainer"]
