"""What the diffusion sampling loop asks of a sampler (:class:`Sampler`), and the rules every
sampler shares: where a run at a strength starts (:func:`start_timestep`) and which requests are
valid (:func:`check_request`).

The contract follows diffusers' schedulers: build the sampler from the network's noise schedule,
call :meth:`Sampler.set_timesteps` once, then loop over :attr:`Sampler.timesteps` calling
:meth:`Sampler.step`. A sampler imports no network: it sees the network's output only.
Randomness enters through a ``torch.Generator`` argument, so the loop decides which draws are
shared (every row of a paired run gets a generator seeded alike at each step).
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch

__all__ = ["Sampler", "start_timestep", "check_request"]


@runtime_checkable
class Sampler(Protocol):
    """A reverse-diffusion sampler over a noise schedule of ``T`` training timesteps.

    Attributes
    ----------
    num_train_timesteps : int
        ``T``.
    timesteps : Tensor of int64, shape (K,)
        Set by :meth:`set_timesteps`: the timesteps to denoise at, first to last, strictly
        decreasing, in ``[0, T)``, the first at :func:`start_timestep` ``(T, strength)``.
    """

    num_train_timesteps: int
    timesteps: torch.Tensor

    def set_timesteps(self, num_steps: int, strength: float = 1.0) -> None:
        """Set :attr:`timesteps` for a run of ``num_steps`` steps from noise (``1 <= num_steps
        <= T``), started at ``strength`` in (0, 1] (fewer steps below 1)."""

    def step(self, model_output: torch.Tensor, t: int, sample: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """The sample at the timestep after ``t`` (the clean image after the last).

        ``model_output`` is the network's prediction (noise or velocity, as the schedule's
        ``prediction_type`` says) at ``sample``, both of shape (N, C, X, Y, Z); ``generator``
        draws whatever noise a stochastic step adds (unused by a deterministic one).
        """

    def add_noise(self, original: torch.Tensor, noise: torch.Tensor,
                  t: torch.Tensor) -> torch.Tensor:
        """``original`` noised to timestep ``t`` (shape (1,)) with ``noise`` by the forward
        process: the start of a run from an image."""


def start_timestep(num_train_timesteps: int, strength: float) -> int:
    """The first timestep of a run at ``strength``: ``min(floor(strength * T), T - 1)``."""
    return min(math.floor(strength * num_train_timesteps), num_train_timesteps - 1)


def check_request(num_train_timesteps: int, num_steps: int, strength: float) -> None:
    """Raise ``ValueError`` (``"<argument>: got <value>; give ..."``) unless ``1 <= num_steps <=
    T`` and ``0 < strength <= 1``: the requests :meth:`Sampler.set_timesteps` accepts."""
    if not 1 <= num_steps <= num_train_timesteps:
        raise ValueError(f"steps: got {num_steps}; give 1 to {num_train_timesteps} steps")
    if not 0 < strength <= 1:
        raise ValueError(f"strength: got {strength}; give a value in (0, 1]")
