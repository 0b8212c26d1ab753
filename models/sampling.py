"""Sampling of :class:`cfx.models.nets.cond_diffusion3d.CondDiffusion3D` with any
:class:`~cfx.models.samplers.base.Sampler` (DDIM by default): paired counterfactuals that share all
their noise, classifier-free guidance, and edits of a real CT.

Guidance
    With ``W = guidance``, the network's prediction (velocity or noise, see
    :class:`~cfx.models.nets.cond_diffusion3d.CondDiffusion3D`) is ``p = p_u + W * (p_c - p_u)``,
    where ``p_c`` reads the record and ``p_u`` the record with every field missing. Both are
    linear in the clean-image estimate at a given noisy image, so W acts alike on either. ``W = 0``
    ignores the text (every record gives the same volume), ``W = 1`` is the plain conditional
    model (one forward pass per step; the default, and the one whose attribute effects are not
    scaled), ``W > 1`` pushes samples towards the record (two passes per step): at the same noisy
    image two records' predictions then differ by ``W`` times their conditional difference, so
    attribute effects are amplified, no longer an estimate of the model's own.

Shared noise
    :func:`draw_diffusion_noise` draws from one seed, up front, the initial noise field and the
    seed of the steps' noise. Every row (one record each) starts from that field, and step ``k``
    of every row gets a generator seeded with :func:`step_noise_seed` ``(step_seed, k)`` on the
    sample's device, from which a stochastic sampler (DDIM with ``eta > 0``) draws what it adds
    (so such volumes differ between CPU and CUDA; a deterministic sampler draws nothing and only
    the initial field, drawn on the CPU, is random). Rows differ only through their records, so
    a null pair (the same record twice) is identical.

From a CT (real-scan counterfactuals)
    With ``strength = s`` in (0, 1], the CT (HU -> window units, ``x_0``) is noised to the
    sampler's first timestep ``t_start = min(floor(s * T), T - 1)`` with the shared initial noise
    ``n``, ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) n`` (:meth:`Sampler.add_noise`), and
    denoised under each record over the timesteps ``<= t_start`` (about ``s * steps`` of them).
    ``s = 1`` keeps little of the CT; at the smallest strength (``t_start = 0``) the output is the
    CT up to ``sqrt((1 - abar_0) / abar_0)`` (0.022 window units, 23 HU in the default window)
    times the model's prediction error. Comparing an edited record with the unedited one at the
    same strength isolates the attribute from the reconstruction error. Without a CT, sampling
    starts from the noise at ``t_start = T - 1``.

Label levels
    For a model with label levels (:meth:`CondDiffusion3D.level_map`) the sampler draws the
    residual and adds each row's level map ``m`` (under guidance, ``m_u + W (m_c - m_u)``, as
    the prediction) to the last sample. From a CT, the residual it starts from and holds is the
    CT less the level map of the record the CT shows (``source``; the record with every field
    missing when it is not known), so an edit moves each label's level by the two records'
    difference at any strength, and the record of the CT itself gives back its levels.
    The residual network reads the record too (it must place a pattern within a label), and
    on a small cohort it also learns record-dependent label means that the levels already
    hold (issue 16: 0.79-1.62 of planted lung effects where the levels alone gave 0.86-1.14).
    So the record moves a label's mean only through its level: one more run, under the
    record with every field missing, draws the record-free residual from the same start, and
    each row's residual is shifted, label by label over the voxels not held, to that run's
    label means. Two records' volumes then differ in each label's mean by exactly their
    levels' difference (before clipping to the window); within a label the network's pattern
    stays.

Held voxels (keep-mask editing)
    With ``keep`` (True where the CT must stay), after every step the held voxels of the sample
    are replaced by the CT noised to that step's next timestep with the shared noise (the
    RePaint scheme, as RadEdit edits 2-D images), and the last sample holds the CT itself there:
    the edit acts only outside ``keep``, every row is exactly the CT there, and the region where
    the record may act sees the held voxels as its context at every step.

Whole volumes
    The UNet normalises over space and attends over every voxel of its input, so a window's output
    depends on the whole window. A volume up to ``roi`` is denoised in one window (padded by
    replication to a multiple of the network's ``multiple`` and cropped back); a larger one runs
    MONAI ``sliding_window_inference`` (Gaussian blending) on the prediction at every step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from cfx.models.inference import count_windows, label_means
from cfx.models.nets.cond_diffusion3d import CondDiffusion3D
from cfx.models.samplers import DEFAULT_SAMPLER, Sampler, check_request, make_sampler

__all__ = ["DiffusionNoise", "draw_diffusion_noise", "step_noise_seed", "check_sampling",
           "sample_volumes", "count_passes", "OVERLAP"]

OVERLAP = 0.25  # default share of a window overlapping its neighbour


@dataclass(frozen=True, eq=False)
class DiffusionNoise:
    """All the noise of one sampling run, shared by every row.

    Attributes
    ----------
    initial : Tensor of float32, shape (1, 1, X, Y, Z)
        Standard normal, on the CPU: the starting point (or the noise added to a CT).
    step_seed : int
        Seeds the generators of the sampler's steps (see :func:`step_noise_seed`).
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
    """The seed of the generator of step ``step`` (from 0), independent across steps."""
    state = np.random.SeedSequence([int(step_seed), int(step)]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def check_sampling(train_timesteps: int, steps: int, guidance: float,
                   strength: float = 1.0) -> None:
    """The one check of the sampling options (a sampler's own options are checked when it is
    made, :func:`~cfx.models.samplers.make_sampler`).

    Raises
    ------
    ValueError
        ``"<option>: got <value>; give ..."``: ``steps`` outside ``[1, train_timesteps]``,
        ``guidance`` below 0 or ``strength`` outside (0, 1].
    """
    check_request(train_timesteps, steps, strength)
    if not guidance >= 0:
        raise ValueError(f"guidance: got {guidance}; give a weight >= 0 (0 ignores the record, "
                         "1 reads it without guidance)")


def _check_inputs(model: CondDiffusion3D, labels: torch.Tensor, context: torch.Tensor,
                  noise: DiffusionNoise, steps: int, guidance: float, ct: torch.Tensor | None,
                  strength: float, roi: Sequence[int] | None, overlap: float,
                  keep: torch.Tensor | None, source: torch.Tensor | None) -> None:
    grid = tuple(labels.shape[2:])
    if labels.ndim != 5 or labels.shape[0] != 1 or noise.initial.shape != (1, 1, *grid):
        raise ValueError(f"labels (1, C, X, Y, Z) and noise.initial (1, 1, X, Y, Z) must share "
                         f"a grid, got {tuple(labels.shape)} and {tuple(noise.initial.shape)}")
    if context.ndim != 3 or context.shape[1:] != (len(model.fields), model.context_dims):
        raise ValueError(f"context: expected shape (R, {len(model.fields)}, "
                         f"{model.context_dims}), got {tuple(context.shape)}")
    check_sampling(model.config["train_timesteps"], steps, guidance, strength)
    if ct is None and strength != 1:
        raise ValueError(f"strength: {strength} needs a ct to start from; without one use 1")
    if ct is not None and ct.shape != (1, 1, *grid):
        raise ValueError(f"ct: expected shape (1, 1, {', '.join(map(str, grid))}), got "
                         f"{tuple(ct.shape)}")
    if keep is not None and (ct is None or keep.shape != (1, 1, *grid)
                             or keep.dtype != torch.bool):
        raise ValueError(f"keep: expected a bool mask of shape (1, 1, "
                         f"{', '.join(map(str, grid))}) with a ct to hold, got "
                         f"{tuple(keep.shape)} {keep.dtype}" + ("" if ct is not None
                                                                else " and no ct"))
    if source is not None and (ct is None or source.shape != (1, *context.shape[1:])):
        raise ValueError(f"source: expected the record of a ct, shape (1, {len(model.fields)}, "
                         f"{model.context_dims}), got {tuple(source.shape)}"
                         + ("" if ct is not None else " and no ct"))
    if roi is not None and (len(roi) != 3 or any(r < 1 or r % model.multiple for r in roi)):
        raise ValueError(f"roi: need 3 positive multiples of {model.multiple}, got {tuple(roi)}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap: must be in [0, 1), got {overlap}")


def _window(model: CondDiffusion3D, grid: Sequence[int],
            roi: Sequence[int] | None) -> tuple[int, ...]:
    """The window: ``roi``, but no larger than the grid rounded up to ``model.multiple``."""
    whole = [-(-n // model.multiple) * model.multiple for n in grid]
    return tuple(whole if roi is None else (min(r, w) for r, w in zip(roi, whole, strict=True)))


def _prediction(model: CondDiffusion3D, inputs: torch.Tensor, timestep: int,
                context: torch.Tensor, null: torch.Tensor, guidance: float,
                window: tuple[int, ...], overlap: float, window_batch: int) -> torch.Tensor:
    """Guided prediction (velocity or noise) of one row, shape (1, 1, X, Y, Z), from
    ``inputs`` (1, 1 + label_channels, X, Y, Z): the sample, then the label map."""
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

    return sliding_window_inference(inputs, window, window_batch, predict, overlap=overlap,
                                    mode="gaussian", padding_mode="replicate").float()


def count_passes(model: CondDiffusion3D, shape: Sequence[int], roi: Sequence[int] | None,
                 timesteps: int, guidance: float, rows: int = 1,
                 overlap: float = OVERLAP) -> tuple[tuple[int, ...], int]:
    """The window :func:`sample_volumes` uses over a volume of ``shape`` ``(X, Y, Z)`` and how
    many network passes over one such window a call with ``rows`` records takes: windows x
    ``timesteps`` (the sampler's, after ``set_timesteps``) x (``rows``, twice with guidance
    other than 0 and 1, plus the record-free run of a model with label levels)."""
    window = _window(model, shape, roi)
    runs = rows * (1 if guidance in (0, 1) else 2) + (model.levels is not None)
    return window, count_windows(shape, window, overlap) * int(timesteps) * runs


@torch.no_grad()
def sample_volumes(model: CondDiffusion3D, labels: torch.Tensor, context: torch.Tensor,
                   noise: DiffusionNoise, steps: int = 20, guidance: float = 1.0,
                   ct: torch.Tensor | None = None, strength: float = 1.0,
                   roi: Sequence[int] | None = None, overlap: float = OVERLAP,
                   window_batch: int = 1, sampler: Sampler | None = None,
                   keep: torch.Tensor | None = None,
                   source: torch.Tensor | None = None) -> torch.Tensor:
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
        Sampler steps of a full run (fewer from a CT at a strength below 1).
    guidance : float
        ``W >= 0`` of ``p_u + W (p_c - p_u)``; 1 reads the record without guidance.
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
    sampler : Sampler, optional
        Built on ``model.noise_schedule`` (:func:`~cfx.models.samplers.make_sampler`); default
        deterministic DDIM. Its timesteps are set here.
    keep : Tensor of bool, shape (1, 1, X, Y, Z), optional
        Voxels held to ``ct`` (see the module docstring); needs ``ct``.
    source : Tensor of float32, shape (1, F, context_dims), optional
        The record ``ct`` shows (label levels, see the module docstring); needs ``ct``.

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
    _check_inputs(model, labels, context, noise, steps, guidance, ct, strength, roi, overlap,
                  keep, source)
    if sampler is None:
        sampler = make_sampler(DEFAULT_SAMPLER, model.noise_schedule)
    sampler.set_timesteps(steps, strength)
    timesteps = sampler.timesteps
    device = labels.device
    window = _window(model, labels.shape[2:], roi)
    null = model.null_condition().to(device)
    # 2. the shared start: the noise, or the CT (less its record's level map for a model with
    #    label levels) noised to the first timestep
    initial = noise.initial.to(device)
    clean = None
    if ct is not None:
        ct = model.from_hu(ct.to(device).float())
        shown = null if source is None else source.to(device)
        clean = ct - _levels(model, labels, shown, null, guidance)
    if keep is not None:
        keep = keep.to(device)
    # 3. denoise each record from that start, every step drawing from the same generator state;
    #    one input buffer (its first channel rewritten with each step's sample) and one output
    inputs = torch.cat([initial, labels], dim=1)

    def residual(condition: torch.Tensor, weight: float) -> torch.Tensor:
        sample = initial if ct is None else sampler.add_noise(clean, initial, timesteps[:1])
        for k, t in enumerate(timesteps.tolist()):
            inputs[:, :1] = sample
            predicted = _prediction(model, inputs, t, condition, null, weight, window,
                                    overlap, window_batch)
            generator = torch.Generator(device=device).manual_seed(
                step_noise_seed(noise.step_seed, k))
            sample = sampler.step(predicted, t, sample, generator)
            if keep is not None:  # the held voxels: the CT at the next timestep, or itself
                held = (clean if k + 1 == len(timesteps) else sampler.add_noise(
                    clean, initial, timesteps[k + 1:k + 2]))
                sample = torch.where(keep, held, sample)
            del predicted
        return sample

    # 4. with label levels, every row's residual takes the record-free residual's label means
    #    over the voxels not held (the held ones become the CT below), then its own level map
    anchor = None if model.levels is None else label_means(residual(null, 0.0), labels, keep)
    out = torch.empty((context.shape[0], *labels.shape[2:]), dtype=torch.float32, device=device)
    for row in range(context.shape[0]):
        condition = context[row:row + 1].to(device)
        sample = residual(condition, guidance)
        if anchor is not None:
            shift = anchor - label_means(sample, labels, keep)
            sample = sample + torch.einsum("l,nlxyz->nxyz", shift, labels)[:, None]
        sample = sample + _levels(model, labels, condition, null, guidance)
        out[row] = model.to_hu(sample if keep is None else torch.where(keep, ct, sample))[0, 0]
    return out


def _levels(model: CondDiffusion3D, labels: torch.Tensor, condition: torch.Tensor,
            null: torch.Tensor, guidance: float) -> torch.Tensor:
    """The level map of one row under guidance ``W``, ``m_u + W (m_c - m_u)`` (zeros for a
    model without label levels), shape (1, 1, X, Y, Z)."""
    levels = model.level_map(labels, condition)
    if guidance != 1 and model.levels is not None:
        unconditional = model.level_map(labels, null)
        levels = unconditional + guidance * (levels - unconditional)
    return levels
