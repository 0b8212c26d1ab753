"""Whole-volume generation: a generator trained on patches, run by sliding window.

The noise is drawn once for the whole volume (by the caller) and is an input channel, so every
window sees the crop of one noise field and overlapping windows agree: MONAI's
``sliding_window_inference`` with Gaussian blending then stitches them without seams. Every
request of a group (one subject, one seed, several prompts) reuses the same noise.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.inferers import sliding_window_inference

from models.nets.cond_gan3d import CondGAN3DGenerator, TextCondition

__all__ = ["draw_noise", "generate_volumes"]


def draw_noise(generator: CondGAN3DGenerator, shape: Sequence[int],
               seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The noise of one volume, a pure function of ``seed``.

    Parameters
    ----------
    generator : CondGAN3DGenerator
        Gives the noise-vector length.
    shape : sequence of 3 int
        ``(X, Y, Z)`` of the whole volume.
    seed : int
        Non-negative; reduced modulo 2**63.

    Returns
    -------
    field : Tensor of float32, shape (1, 1, X, Y, Z)
        Standard normal, on the CPU.
    vector : Tensor of float32, shape (1, noise_dims)
    """
    rng = torch.Generator(device="cpu").manual_seed(int(seed) % 2**63)
    field = torch.randn((1, 1, *map(int, shape)), generator=rng)
    vector = torch.randn((1, generator.noise_dims), generator=rng)
    return field, vector


@torch.no_grad()
def generate_volumes(generator: CondGAN3DGenerator, labels: torch.Tensor, noise: torch.Tensor,
                     noise_vector: torch.Tensor, condition: TextCondition,
                     roi: Sequence[int], overlap: float = 0.5,
                     window_batch: int = 1) -> torch.Tensor:
    """One CT per condition row, all from the same label map and noise.

    Parameters
    ----------
    generator : CondGAN3DGenerator
        In eval mode.
    labels : Tensor of float32, shape (1, label_channels, X, Y, Z)
        One-hot label map of the whole volume.
    noise : Tensor of float32, shape (1, 1, X, Y, Z)
    noise_vector : Tensor of float32, shape (1, noise_dims)
    condition : TextCondition
        ``R`` rows (one per request).
    roi : sequence of 3 int
        Window size, multiples of ``generator.multiple``; a volume smaller than the window
        along an axis is padded to it (and cropped back).
    overlap : float
        Fraction of a window shared with its neighbour, in [0, 1).
    window_batch : int
        Windows per forward pass.

    Returns
    -------
    Tensor of float32, shape (R, X, Y, Z)
        HU, clipped to the generator's window, on the labels' device.

    Raises
    ------
    ValueError
        Mismatched shapes, a bad ``roi`` or ``overlap``.
    """
    roi = tuple(int(r) for r in roi)
    if len(roi) != 3 or any(r < 1 or r % generator.multiple for r in roi):
        raise ValueError(f"roi: need 3 positive multiples of {generator.multiple}, got {roi}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap: must be in [0, 1), got {overlap}")
    if labels.ndim != 5 or labels.shape[0] != 1 or noise.shape != (1, 1, *labels.shape[2:]):
        raise ValueError(f"labels (1, C, X, Y, Z) and noise (1, 1, X, Y, Z) must share a grid, "
                         f"got {tuple(labels.shape)} and {tuple(noise.shape)}")
    inputs = torch.cat([labels, noise.to(labels.device)], dim=1)
    channels = labels.shape[1]
    vector = noise_vector.to(labels.device)
    out = []
    for row in range(len(condition)):
        one = condition.select([row])

        def predict(window: torch.Tensor, one=one) -> torch.Tensor:
            n = window.shape[0]
            rows = one.select([0] * n)
            return generator(window[:, :channels], window[:, channels:], rows,
                             vector.expand(n, -1))

        raw = sliding_window_inference(inputs, roi, window_batch, predict, overlap=overlap,
                                       mode="gaussian")
        out.append(generator.to_hu(raw)[0, 0])
    return torch.stack(out)
