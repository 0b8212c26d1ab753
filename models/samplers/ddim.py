"""DDIM (Song et al. 2021) as a :class:`~cfx.models.samplers.base.Sampler`: MONAI's
``DDIMScheduler`` steps, on timesteps that land where its steps go.

Timesteps
    ``T`` training steps and ``n`` DDIM steps: from the start (:func:`start_timestep`) down by
    ``T // n`` to the last timestep >= 0, then to the clean image (exactly ``n`` timesteps from
    noise when ``n`` divides ``T``, one more otherwise). MONAI's own ``set_timesteps`` spaces its
    timesteps by ``(T - 1) / (n - 1)`` while its ``step`` moves back by ``T // n``, so its steps
    would not land on one another; these do (MONAI's scheduler is handed them).

Stochasticity
    ``eta`` in [0, 1]: 0 is deterministic; above 0 each step adds ``eta`` times the DDPM posterior
    standard deviation of noise drawn from the step's ``generator`` (MONAI draws it in the
    model output's dtype, on its device).
"""

from __future__ import annotations

import torch
from monai.networks.schedulers import DDIMScheduler

from cfx.models.samplers.base import check_request, start_timestep

__all__ = ["DDIMSampler", "ddim_timesteps"]


def ddim_timesteps(num_train_timesteps: int, num_steps: int,
                   strength: float = 1.0) -> torch.Tensor:
    """The DDIM timesteps, first to last.

    Parameters
    ----------
    num_train_timesteps : int
        ``T``.
    num_steps : int
        Steps of a full run, ``1 <= num_steps <= T``.
    strength : float
        In (0, 1]: start at :func:`start_timestep`.

    Returns
    -------
    Tensor of int64, shape (K,)
        ``t_start, t_start - T // n, ...`` down to the last value >= 0:
        ``K = floor(t_start / (T // n)) + 1``.
    """
    start = start_timestep(num_train_timesteps, strength)
    return torch.arange(start, -1, -(num_train_timesteps // num_steps), dtype=torch.long)


class DDIMSampler:
    """DDIM over a network's noise schedule.

    Parameters
    ----------
    eta : float
        Stochasticity in [0, 1]; 0 is deterministic.
    **schedule
        MONAI ``DDIMScheduler`` arguments: the network's noise schedule and prediction type
        (:attr:`cfx.models.nets.cond_diffusion3d.CondDiffusion3D.noise_schedule`).

    Raises
    ------
    ValueError
        ``eta`` out of range.
    """

    def __init__(self, eta: float = 0.0, **schedule):
        if not 0 <= eta <= 1:
            raise ValueError(f"eta: got {eta}; give a value in [0, 1] (0 is deterministic DDIM)")
        self.eta = float(eta)
        self._scheduler = DDIMScheduler(**schedule)
        self.num_train_timesteps = self._scheduler.num_train_timesteps
        self.timesteps = self._scheduler.timesteps

    def set_timesteps(self, num_steps: int, strength: float = 1.0) -> None:
        """Timesteps of :func:`ddim_timesteps`; raises ``ValueError`` for a request out of range
        (:func:`~cfx.models.samplers.base.check_request`)."""
        check_request(self.num_train_timesteps, num_steps, strength)
        self._scheduler.set_timesteps(num_steps)  # its step() moves back by T // num_steps
        self.timesteps = ddim_timesteps(self.num_train_timesteps, num_steps, strength)
        self._scheduler.timesteps = self.timesteps

    def step(self, model_output: torch.Tensor, t: int, sample: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """One DDIM step from ``t`` (MONAI ``DDIMScheduler.step``, clean-image estimate clipped
        to [-1, 1])."""
        return self._scheduler.step(model_output, t, sample, self.eta, generator)[0]

    def add_noise(self, original: torch.Tensor, noise: torch.Tensor,
                  t: torch.Tensor) -> torch.Tensor:
        """``sqrt(abar_t) original + sqrt(1 - abar_t) noise`` (MONAI ``add_noise``)."""
        return self._scheduler.add_noise(original, noise, t)
