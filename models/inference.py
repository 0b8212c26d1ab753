"""Whole-volume generation: a generator trained on patches, run by sliding window.

The noise is drawn once for the whole volume (by the caller) and is an input channel, so every
window sees the crop of one noise field and overlapping windows agree: MONAI's
``sliding_window_inference`` with Gaussian blending then stitches them without seams. Every
request of a group (one subject, one seed, several prompts) reuses the same noise.

Level hold: for a generator whose label levels were fitted in closed form
(``CondGAN3DGenerator(hold_levels=True)``), a label's mean still moves with the record through
two paths, its level and the FiLM, and on a fixed cohort the FiLM keeps a share of its own (the
GAN bundled before, levels learnt by steps: a null attribute moved the body by -3.2 HU and the
air by +2.2; issue 16). So the record moves a label's mean only through its level: one more
draw, under the record with every field missing, gives each label's mean less that record's
level, and each row is shifted, label by label, to those means plus its own level. Two
records' volumes then differ in each label's mean by exactly their levels' difference (before
clipping to the window); within a label the network's pattern stays. The diffusion sampler
holds its label means the same way (:mod:`cfx.models.sampling`).

Memory: the output of every request is written into one preallocated ``(R, X, Y, Z)`` float32
tensor as its windows finish (no stacked copy); besides it and the inputs, MONAI holds one
output and one weight buffer of the whole volume while it stitches. :func:`count_windows` and
:func:`time_window` give the cost of a volume before it runs (a sweep's projected time).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
from monai.data.utils import dense_patch_slices
from monai.inferers import sliding_window_inference

from cfx.models.nets.cond_gan3d import CondGAN3DGenerator, TextCondition

__all__ = ["draw_noise", "generate_volumes", "count_windows", "time_window", "label_means",
           "OVERLAP"]

OVERLAP = 0.5  # default share of a window overlapping its neighbour


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
                     roi: Sequence[int], overlap: float = OVERLAP,
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
        HU, clipped to the generator's window, on the labels' device; with label levels, each
        label's mean held (see the module docstring).

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

    def draw(one: TextCondition) -> torch.Tensor:
        """The raw output (window units, not clipped) of one condition row, (1, 1, X, Y, Z)."""
        def predict(window: torch.Tensor) -> torch.Tensor:
            n = window.shape[0]
            return generator(window[:, :channels], window[:, channels:], one.select([0] * n),
                             vector.expand(n, -1))

        return sliding_window_inference(inputs, roi, window_batch, predict, overlap=overlap,
                                        mode="gaussian")

    anchor = None
    if generator.config["hold_levels"]:  # each label's mean less its level, record-free
        null = generator.condition([None] * len(generator.fields)).to(labels.device)
        anchor = label_means(draw(null), labels) - generator.label_levels(null.pooled)[0]
    out = torch.empty((len(condition), *labels.shape[2:]), dtype=torch.float32,
                      device=labels.device)
    for row in range(len(condition)):
        one = condition.select([row])
        raw = draw(one)
        if anchor is not None:
            shift = anchor + generator.label_levels(one.pooled)[0] - label_means(raw, labels)
            raw = raw + torch.einsum("l,nlxyz->nxyz", shift, labels)[:, None]
        out[row] = generator.to_hu(raw)[0, 0]
        del raw
    return out


def count_windows(shape: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    """How many windows MONAI's ``sliding_window_inference`` runs over a volume of ``shape``
    ``(X, Y, Z)`` with windows ``roi`` overlapping by ``overlap`` (a volume smaller than the
    window along an axis is padded to it): MONAI's own :func:`~monai.data.utils.
    dense_patch_slices` on its scan interval, ``int(roi * (1 - overlap))`` (at least 1), or the
    whole axis where the padded volume equals the window."""
    size = [max(int(n), int(r)) for n, r in zip(shape, roi, strict=True)]
    interval = [r if r == n else max(int(r * (1 - overlap)), 1)
                for n, r in zip(size, (int(r) for r in roi), strict=True)]
    return len(dense_patch_slices(size, [int(r) for r in roi], interval))


def time_window(forward: Callable[[], object]) -> float:
    """Seconds of one call of ``forward`` (one network pass over one window), under
    ``torch.no_grad``; on a GPU the device is synchronised before the clock is read."""
    with torch.no_grad():
        forward()  # the first call allocates and picks kernels: not what the others cost
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        forward()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - start


def label_means(sample: torch.Tensor, labels: torch.Tensor,
                keep: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``sample`` (1, 1, X, Y, Z) over each label's voxels of ``labels`` (1, C, X, Y, Z,
    one-hot) not in ``keep`` (bool, like ``sample``), shape (C,); 0 for a label with none. No
    copy of ``labels``: at 512² x 320 it is 1.7 GB."""
    free = torch.ones_like(sample[:, 0]) if keep is None else (~keep[:, 0]).to(sample.dtype)
    sums = torch.einsum("nlxyz,nxyz->l", labels, sample[:, 0] * free)
    return sums / torch.einsum("nlxyz,nxyz->l", labels, free).clamp(min=1)
