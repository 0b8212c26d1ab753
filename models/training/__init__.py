"""Training loops for the generators in :mod:`cfx.models.nets`, and the guard that rolls a diverged
run back (:mod:`cfx.models.training.guard`)."""

from cfx.models.training.diffusion import DiffusionSettings, DiffusionTrainer
from cfx.models.training.gan import GANSettings, GANTrainer, TrainingBatch
from cfx.models.training.guard import DivergenceError, GuardSettings, TrainingGuard

__all__ = ["GANSettings", "GANTrainer", "TrainingBatch", "DiffusionSettings", "DiffusionTrainer",
           "GuardSettings", "TrainingGuard", "DivergenceError"]
