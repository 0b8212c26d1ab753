"""Training loops for the generators in :mod:`models.nets`, and the guard that rolls a diverged
run back (:mod:`models.training.guard`)."""

from models.training.diffusion import DiffusionSettings, DiffusionTrainer
from models.training.gan import GANSettings, GANTrainer, TrainingBatch
from models.training.guard import DivergenceError, GuardSettings, TrainingGuard

__all__ = ["GANSettings", "GANTrainer", "TrainingBatch", "DiffusionSettings", "DiffusionTrainer",
           "GuardSettings", "TrainingGuard", "DivergenceError"]
