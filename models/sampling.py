"""DDIM sampling of :class:`models.nets.cond_diffusion3d.CondDiffusion3D`: paired counterfactuals
that share all their noise, classifier-free guidance, and edits of a real CT.

Guidance
    With ``W = guidance``, the network's prediction (velocity or noise, see
    :class:`~models.nets.cond_diffusion3d.CondDiffusion3D`) is ``p = p_u + W * (p_c - p_u)``,
    where ``p_c`` reads the record and ``p_u`` the record with every field missing. Both are
    linear in the clean-image estimate at a given noisy image, so W acts alike on either. ``W = 0``
    ignores the text (every record gives the same volume), ``W = 1`` is the plain conditional
    model (one forward pass per step; the default, and the one whose attribute effects are not
    scaled), ``W > 1`` pushes samples towards the record (two passes per step): at the same noisy
    image two records' predictions then differ by ``W`` times their conditional difference, so
    attribute effects are amplified, no longer an estimate of the model's own.

Shared noise
    :func:`draw_diffusion_noise` draws from one seed, up front, the initial noise field and the
    seed of the steps' noise. Every row (one record each) starts from that field and, with
    ``eta > 0``, adds at step ``k`` the noise of a generator seeded with
    :func:`step_noise_seed` ``(step_seed, k)`` on the sample's device, the same for every row
    (so with ``eta > 0`` the volumes differ between CPU and CUDA; at ``eta = 0``, the default,
    only the initial field is random, drawn on the CPU). Rows differ only through their records,
    so a null pair (the same record twice) is identical.

Timesteps
    ``T`` training steps and ``steps`` DDIM steps: from ``t_start`` down by ``T // steps`` to the
    last timestep >= 0, then to the clean image (:func:`sampling_timesteps`; exactly ``steps``
    of them from noise when ``steps`` divides ``T``, one more otherwise). MONAI's own
    ``DDIMScheduler.set_timesteps`` spaces its timesteps by ``(T - 1) / (steps - 1)`` while its
    ``step`` moves back by ``T // steps``, so its steps would not land on one another; these do.

From a CT (real-scan counterfactuals)
    With ``strength = s`` in (0, 1], the CT (HU -> window units, ``x_0``) is noised to
    ``t_start = min(floor(s * T), T - 1)`` with the shared initial noise ``n``,
    ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) n`` (MONAI ``add_noise``), and denoised under each
    record over the timesteps ``<= t_start`` (about ``s * steps`` of them). ``s = 1`` keeps
    little of the CT; at the smallest strength (``t_start = 0``) the output is the CT up to
    ``sqrt((1 - abar_0) / abar_0)`` (0.022 window units, 23 HU in the default window) times the
    model's prediction error. Comparing an edited record with the unedited one at the same
    strength isolates the attribute from the reconstruction error. Without a CT, sampling starts
    from the noise at ``t_start = T - 1``.

Whole volumes
    The UNet normalises over space and attends over every voxel of its input, so a window's output
    depends on the whole window. A volume up to ``roi`` is denoised in one window (padded by
    replication to a multiple of the network's ``multiple`` and cropped back); a larger one runs
    MONAI ``sliding_window_inference`` (Gaussian blending) on the prediction at every step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.networks.schedulers import DDIMScheduler

from models.nets.cond_diffusion3d import CondDiffusion3D

__all__ = ["DiffusionNoise", "draw_diffusion_noise", "step_noise_seed", "sampling_timesteps",
           "sample_volumes"]


@dataclass(frozen=True, eq=False)
class DiffusionNoise:
    """All the noise of one sampling run, shared by every row.

    Attributes
    ----------
    initial : Tensor of float32, shape (1, 1, X, Y, Z)
        Standard normal, on the CPU: the starting point (or the noise added to a CT).
    step_seed : int
        Seeds the noise of the DDIM steps (used when ``eta > 0``, see
        :func:`step_noise_seed`).
    """

    initial: torch.Tensor
    step_seed: int


def draw_diffusion_noise(shape: Sequence[int], seed: int) -> DiffusionNoise:
    """The noise of one volume of ``shape`` ``(X, Y, Z)``, a pure function of ``seed``
    (non-negative; reduced modulo 2**63)."""
    rng = torch.Generator(device="cpu").manual_seed(int(seed) % 2**63)
    initial = torch.randn((1, 1, *map(int, shape)), generator=rng)
    return DiffusionNoise(initial, int(torch.randint(0, 2**62, (1,), generator=rng)))


def step_noise_seed(step_seed: int, step: int) -> int:
    """The seed of the noise that DDIM step ``step`` (from 0) adds, independent across steps."""
    state = np.random.SeedSequence([int(step_seed), int(step)]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def sampling_timesteps(train_timesteps: int, steps: int, strength: float = 1.0) -> torch.Tensor:
    """The DDIM timesteps, first to last.

    Parameters
    ----------
    train_timesteps : int
        ``T``.
    steps : int
        DDIM steps of a full run, ``1 <= steps <= T``.
    strength : float
        In (0, 1]: start at ``min(floor(strength * T), T - 1)``.

    Returns
    -------
    Tensor of int64, shape (K,)
        ``t_start, t_start - T // steps, ...`` down to the last value >= 0:
        ``K = floor(t_start / (T // steps)) + 1``, which is ``steps`` at strength 1 when
        ``steps`` divides ``T``, and about ``strength * steps`` otherwise.
    """
    start = min(math.floor(strength * train_timesteps), train_timesteps - 1)
    return torch.arange(start, -1, -(train_timesteps // steps), dtype=torch.long)


def _check_inputs(model: CondDiffusion3D, labels: torch.Tensor, context: torch.Tensor,
                  noise: DiffusionNoise, steps: int, guidance: float, eta: float,
                  ct: torch.Tensor | None, strength: float,
                  roi: Sequence[int] | None, overlap: float) -> None:
    grid = tuple(labels.shape[2:])
    if labels.ndim != 5 or labels.shape[0] != 1 or noise.initial.shape != (1, 1, *grid):
        raise ValueError(f"labels (1, C, X, Y, Z) and noise.initial (1, 1, X, Y, Z) must share "
                         f"a grid, got {tuple(labels.shape)} and {tuple(noise.initial.shape)}")
    if context.ndim != 3 or context.shape[1:] != (len(model.fields), model.context_dims):
        raise ValueError(f"context: expected shape (R, {len(model.fields)}, "
                         f"{model.context_dims}), got {tuple(context.shape)}")
    if not 1 <= steps <= model.config["train_timesteps"]:
        raise ValueError(f"steps: must be from 1 to {model.config['train_timesteps']}, got "
                         f"{steps}")
    if not guidance >= 0:
        raise ValueError(f"guidance: must be >= 0, got {guidance}")
    if not 0 <= eta <= 1:
        raise ValueError(f"eta: must be in [0, 1], got {eta}")
    if not 0 < strength <= 1:
        raise ValueError(f"strength: must be in (0, 1], got {strength}")
    if ct is None and strength != 1:
        raise ValueError(f"strength: {strength} needs a ct to start from; without one use 1")
    if ct is not None and ct.shape != (1, 1, *grid):
        raise ValueError(f"ct: expected shape (1, 1, {', '.join(map(str, grid))}), got "
                         f"{tuple(ct.shape)}")
    if roi is not None and (len(roi) != 3 or any(r < 1 or r % model.multiple for r in roi)):
        raise ValueError(f"roi: need 3 positive multiples of {model.multiple}, got {tuple(roi)}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap: must be in [0, 1), got {overlap}")


def _window(model: CondDiffusion3D, grid: Sequence[int],
            roi: Sequence[int] | None) -> tuple[int, ...]:
    """The window: ``roi``, but no larger than the grid rounded up to ``model.multiple``."""
    whole = [-(-n // model.multiple) * model.multiple for n in grid]
    return tuple(whole if roi is None else (min(r, w) for r, w in zip(roi, whole, strict=True)))


def _prediction(model: CondDiffusion3D, sample: torch.Tensor, labels: torch.Tensor,
                      timestep: int, context: torch.Tensor, null: torch.Tensor, guidance: float,
                      window: tuple[int, ...], overlap: float, window_batch: int) -> torch.Tensor:
    """Guided prediction (velocity or noise) of one row, shape (1, 1, X, Y, Z)."""
    def predict(inputs: torch.Tensor) -> torch.Tensor:
        n = inputs.shape[0]
        x, mask = inputs[:, :1], inputs[:, 1:]
        t = torch.full((n,), timestep, dtype=torch.long, device=inputs.device)
        if guidance in (0, 1):
            return model(x, mask, t, (null if guidance == 0 else context).expand(n, -1, -1))
        both = model(x.repeat(2, 1, 1, 1, 1), mask.repeat(2, 1, 1, 1, 1), t.repeat(2),
                     torch.cat([context.expand(n, -1, -1), null.expand(n, -1, -1)]))
        conditional, unconditional = both.float().chunk(2)
        return unconditional + guidance * (conditional - unconditional)

    return sliding_window_inference(torch.cat([sample, labels], dim=1), window, window_batch,
                                    predict, overlap=overlap, mode="gaussian",
                                    padding_mode="replicate").float()


@torch.no_grad()
def sample_volumes(model: CondDiffusion3D, labels: torch.Tensor, context: torch.Tensor,
                   noise: DiffusionNoise, steps: int = 20, guidance: float = 1.0,
                   eta: float = 0.0, ct: torch.Tensor | None = None, strength: float = 1.0,
                   roi: Sequence[int] | None = None, overlap: float = 0.25,
                   window_batch: int = 1) -> torch.Tensor:
    """One CT per context row, all from the same label map and noise.

    Parameters
    ----------
    model : CondDiffusion3D
        In eval mode (the EMA weights of a checkpoint).
    labels : Tensor of float32, shape (1, label_channels, X, Y, Z)
        One-hot label map of the whole volume.
    context : Tensor of float32, shape (R, F, context_dims)
        One record per row (:meth:`CondDiffusion3D.condition`).
    noise : DiffusionNoise
        From :func:`draw_diffusion_noise`.
    steps : int
        DDIM steps of a full run (fewer from a CT, see :func:`sampling_timesteps`).
    guidance : float
        ``W >= 0`` of ``p_u + W (p_c - p_u)``; 1 reads the record without guidance.
    eta : float
        DDIM stochasticity in [0, 1]; 0 is deterministic.
    ct : Tensor of float32, shape (1, 1, X, Y, Z), optional
        A CT in HU to start from (real-scan counterfactuals).
    strength : float
        In (0, 1]; below 1 only with ``ct``.
    roi : sequence of 3 int, optional
        Largest window, multiples of ``model.multiple``; default the whole volume.
    overlap : float
        Fraction of a window shared with its neighbour, in [0, 1) (only for volumes larger
        than ``roi``).
    window_batch : int
        Windows per forward pass.

    Returns
    -------
    Tensor of float32, shape (R, X, Y, Z)
        HU, clipped to the model's window, on the labels' device.

    Raises
    ------
    ValueError
        Mismatched shapes or an argument out of range.
    """
    # 1. check inputs and set the timesteps
    _check_inputs(model, labels, context, noise, steps, guidance, eta, ct, strength, roi,
                  overlap)
    scheduler = DDIMScheduler(**model.noise_schedule)
    scheduler.set_timesteps(steps)
    timesteps = sampling_timesteps(model.config["train_timesteps"], steps, strength)
    device = labels.device
    window = _window(model, labels.shape[2:], roi)
    null = model.null_condition().to(device)
    # 2. the shared start: the noise, or the CT noised to the first timestep
    start = noise.initial.to(device)
    if ct is not None:
        start = scheduler.add_noise(model.from_hu(ct.to(device).float()), start, timesteps[:1])
    # 3. denoise each record from that start, every step adding the same noise to every row
    out = []
    for row in range(context.shape[0]):
        sample, condition = start, context[row:row + 1].to(device)
        for k, t in enumerate(timesteps.tolist()):
            predicted = _prediction(model, sample, labels, t, condition, null, guidance, window,
                                    overlap, window_batch)
            generator = torch.Generator(device=device).manual_seed(
                step_noise_seed(noise.step_seed, k)) if eta > 0 else None
            sample = scheduler.step(predicted, t, sample, eta, generator)[0]
        out.append(model.to_hu(sample)[0, 0])
    return torch.stack(out)
