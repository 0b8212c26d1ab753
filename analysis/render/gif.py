"""Animations (animated PNG or GIF) and mosaics of CTs and difference maps.

Frames are built for the whole stack at once with lookup tables (no figure per slice), then
written by Pillow as palette images with one palette per file: for a CT, evenly spaced greys
no coarser than the frames' own noise (:func:`grey_levels`), or for colour frames one palette
drawn from the whole stack (no per-frame palettes: the difference colours keep one mapping
through the slices). Pillow direct, not imageio: imageio quantises each frame on its own (2x the
bytes, measured on the demo's panel and difference GIFs).

:func:`write_apng` and :func:`write_gif` store the same palette images, so every pixel shown is
the same. The animated PNG is 4x smaller on the demo's panels, where each voxel is a block of
pixels: deflate finds the repeated rows, which GIF's LZW cannot use; on slices drawn about one
pixel per voxel (a 256x256 CT) it is only 1.1x smaller. Browsers and Markdown viewers show it;
GIF is for slide software, which animates GIF only.
"""

from __future__ import annotations

import os
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from PIL import Image

from cfx.analysis.render.annotate import colorbar_strip, title_strip
from cfx.analysis.render.colour import blend, diverging, draw_contour, window_gray
from cfx.analysis.render.slices import _SLICED, slice_stack, to_ras

__all__ = ["ct_frames", "diff_frames", "panel_frames", "mosaic", "write_apng", "write_gif",
           "write_png", "symmetric_limit", "grey_levels", "ANIMATION_WRITERS"]

_GAP = 4
_DEFLATE_LEVEL = 4  # animated PNG: as fast as the GIF writer (see write_apng)


def _check_same_shape(**arrays) -> None:
    shapes = {name: np.shape(a) for name, a in arrays.items() if a is not None}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"volumes must share one grid, got shapes {shapes}")


def symmetric_limit(diff: np.ndarray, mask: np.ndarray | None = None) -> float:
    """A display range ±limit (HU) covering 99 % of |diff| (within ``mask``), rounded up."""
    values = np.abs(np.asarray(diff)[mask] if mask is not None else np.asarray(diff))
    peak = float(np.percentile(values, 99)) if values.size else 0.0
    if peak <= 0:
        return 1.0
    magnitude = 10 ** np.floor(np.log10(peak))
    return float(np.ceil(peak / magnitude) * magnitude)


def ct_frames(volume: np.ndarray, affine: np.ndarray, axis: str = "axial",
              window: str | tuple[float, float] = "lung", min_size: int = 0) -> np.ndarray:
    """Every slice of a CT through a window.

    Parameters
    ----------
    volume : ndarray, shape (n_i, n_j, n_k), in HU
    affine : ndarray, shape (4, 4)

    Returns
    -------
    ndarray of uint8, shape (n_slices, n_rows, n_cols, 3)
    """
    return window_gray(slice_stack(volume, affine, axis, min_size=min_size), window)


def diff_frames(diff: np.ndarray, affine: np.ndarray, axis: str = "axial",
                limit: float | None = None, reference: np.ndarray | None = None,
                mask: np.ndarray | None = None, window: str | tuple[float, float] = "lung",
                alpha: float = 0.7, colorbar: bool = True, min_size: int = 0) -> np.ndarray:
    """Difference map frames on a diverging colormap centred on 0 HU.

    Parameters
    ----------
    diff : ndarray, shape (n_i, n_j, n_k), in HU
    limit : float, optional
        Colours saturate at ±limit HU (default: :func:`symmetric_limit`).
    reference : ndarray, optional
        A CT to show underneath; the colour's opacity grows with |diff| up to ``alpha``.
    mask : ndarray of bool, optional
        Its outline (e.g. the lungs) is drawn on every frame.
    colorbar : bool
        Append a labelled colour bar on the right.

    Returns
    -------
    ndarray of uint8, shape (n_slices, n_rows, n_cols [+ bar], 3)
    """
    _check_same_shape(diff=diff, reference=reference, mask=mask)
    limit = symmetric_limit(diff, mask) if limit is None else float(limit)
    stack = slice_stack(diff, affine, axis, min_size=min_size)
    rgb = diverging(stack, limit)
    if reference is not None:
        opacity = alpha * np.clip(np.abs(stack) / limit, 0, 1)
        grey = window_gray(slice_stack(reference, affine, axis, min_size=min_size), window)
        rgb = blend(grey, rgb, opacity)
    if mask is not None:
        outline = slice_stack(np.asarray(mask, bool), affine, axis, min_size=min_size)
        rgb = draw_contour(rgb, outline)
    if colorbar:
        bar = colorbar_strip(limit, rgb.shape[1])
        rgb = np.concatenate([rgb, np.broadcast_to(bar, (len(rgb), *bar.shape))], axis=2)
    return rgb


def _titled(frames: np.ndarray, title: str) -> np.ndarray:
    strip = title_strip(title, frames.shape[2])
    return np.concatenate([np.broadcast_to(strip, (len(frames), *strip.shape)), frames], axis=1)


def panel_frames(reference: np.ndarray, counterfactual: np.ndarray, diff: np.ndarray,
                 affine: np.ndarray, titles: tuple[str, str, str], axis: str = "axial",
                 window: str | tuple[float, float] = "lung", limit: float | None = None,
                 mask: np.ndarray | None = None, min_size: int = 0) -> np.ndarray:
    """Reference | counterfactual | difference, side by side, titled, frames in sync.

    Returns
    -------
    ndarray of uint8, shape (n_slices, n_rows + title, 3 * n_cols + bar + gaps, 3)
    """
    _check_same_shape(reference=reference, counterfactual=counterfactual, diff=diff, mask=mask)
    if len(titles) != 3:
        raise ValueError(f"titles must be 3 strings, got {len(titles)}")
    panels = [ct_frames(reference, affine, axis, window, min_size),
              ct_frames(counterfactual, affine, axis, window, min_size),
              diff_frames(diff, affine, axis, limit, mask=mask, min_size=min_size)]
    panels = [_titled(p, t) for p, t in zip(panels, titles, strict=True)]
    gap = np.zeros((*panels[0].shape[:2], _GAP, 3), np.uint8)
    return np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=2)


def mosaic(volume: np.ndarray, affine: np.ndarray, axis: str = "axial", n_slices: int = 12,
           columns: int = 4, window: str | tuple[float, float] = "lung",
           min_size: int = 0) -> np.ndarray:
    """A grid of ``n_slices`` evenly spaced slices (inferior->superior), for print.

    Returns
    -------
    ndarray of uint8, shape (rows * n_rows, columns * n_cols, 3)
    """
    if n_slices < 1 or columns < 1:
        raise ValueError(f"n_slices and columns must be >= 1, got {n_slices}, {columns}")
    n_axis = to_ras(np.asarray(volume), affine)[0].shape[_SLICED[axis]] if axis in _SLICED else 0
    picks = np.unique(np.linspace(0, n_axis - 1, min(n_slices, n_axis) + 2)[1:-1].round()
                      .astype(int)) if n_axis > 2 else np.arange(n_axis)
    tiles = window_gray(slice_stack(volume, affine, axis, picks, min_size), window)
    rows = -(-len(tiles) // columns)
    blank = np.zeros((rows * columns - len(tiles), *tiles.shape[1:]), np.uint8)
    grid = np.concatenate([tiles, blank]).reshape(rows, columns, *tiles.shape[1:])
    return grid.transpose(0, 2, 1, 3, 4).reshape(rows * tiles.shape[1], -1, 3)


def grey_levels(frames: np.ndarray, floor: int = 32) -> int:
    """How many evenly spaced greys show ``frames`` without visible banding.

    The grey step is kept at most the frames' own noise: the standard deviation of the
    slice-to-slice differences, ``median |f[i+1] - f[i]| / (0.6745 * sqrt(2))`` over every
    pixel. Rounding to such a step adds at most half the noise to a pixel, and
    ``step / sqrt(12) <= 0.29`` noise sd in quadrature (+4 % to the noise sd), so the noise
    dithers it and no contour appears; noise-free frames (a median difference of 0) keep all
    256 greys.

    Parameters
    ----------
    frames : ndarray of uint8, shape (n_frames, n_rows, n_cols)
        Grey frames, e.g. the slices of a CT through a window (one grey = window width / 255 HU).
    floor : int
        Fewest greys ever used, in 2..256.

    Returns
    -------
    int
        Number of greys, in ``floor``..256.
    """
    frames = np.asarray(frames)
    if len(frames) < 2:
        return 256
    steps = np.abs(np.diff(frames.astype(np.int16), axis=0))
    noise = float(np.median(steps)) / (0.6745 * np.sqrt(2.0))
    if noise <= 0:
        return 256
    return int(np.clip(np.ceil(255.0 / noise) + 1, floor, 256))


def _grey_index(grey: np.ndarray, levels: int) -> np.ndarray:
    """Greys 0..255 -> the nearest of ``levels`` evenly spaced greys, as palette indices."""
    lut = np.rint(np.arange(256) * (levels - 1) / 255.0).astype(np.uint8)
    return lut[grey]


def _grey_palette(levels: int) -> list[int]:
    greys = np.rint(np.arange(levels) * 255.0 / (levels - 1)).astype(np.uint8)
    return np.repeat(greys, 3).tolist()


def _palette_images(frames: np.ndarray, levels: int | None) -> list[Image.Image]:
    """Frames as palette images sharing one palette: grey frames on ``levels`` evenly spaced
    greys (None: :func:`grey_levels`; 256: every grey exact), else Pillow's max-coverage
    quantisation of every ``n // 16``-th frame, no dithering."""
    if np.array_equal(frames[..., 0], frames[..., 1]) and \
            np.array_equal(frames[..., 0], frames[..., 2]):
        grey = frames[..., 0]
        levels = grey_levels(grey) if levels is None else levels
        if levels == 256:
            return [Image.fromarray(np.ascontiguousarray(f), "L") for f in grey]
        palette = _grey_palette(levels)
        images = [Image.fromarray(np.ascontiguousarray(f), "P") for f in _grey_index(grey, levels)]
        for image in images:
            image.putpalette(palette)
        return images
    sample = Image.fromarray(np.concatenate(list(frames[::max(1, len(frames) // 16)])))
    palette = sample.quantize(256, method=Image.Quantize.MAXCOVERAGE, dither=Image.Dither.NONE)
    return [Image.fromarray(np.ascontiguousarray(f)).quantize(palette=palette,
                                                              dither=Image.Dither.NONE)
            for f in frames]


def write_apng(path: str | os.PathLike, frames: np.ndarray, fps: float = 10.0,
               first: int = 0, levels: int | None = None) -> Path:
    """Write ``frames`` (uint8, (n, rows, cols, 3)) as an animated PNG (APNG) that loops forever.

    The palette images are those of :func:`write_gif` (every pixel shown is the same), each
    frame stored as the rectangle that changed since the previous one, deflated at level 4:
    measured on the demo's 64-frame 840x278 panels (Pillow's CPU time per panel), as fast as the
    GIF writer (0.07 s) at 388 KB against the GIF's 1,547 KB; zlib's default level 6 gives
    305 KB in 0.11 s. Frame ``first`` is also the PNG's still image (no separate default image):
    a viewer that does not animate shows it.

    Parameters
    ----------
    path : str or PathLike
        The file to write (``.png``); written through a hidden ``.part`` file, then renamed.
    frames : ndarray of uint8, shape (n_frames, n_rows, n_cols, 3)
        RGB frames, n_frames >= 1.
    fps : float
        Frames per second, > 0; each frame lasts ``round(1000 / fps)`` ms.
    first : int
        The poster frame: shown first, and by viewers that do not animate; the animation starts
        there and wraps around, so every frame still plays in order.
    levels : int, optional
        Grey frames only: how many evenly spaced greys, in 2..256 (256: every grey exact). By
        default :func:`grey_levels`; the largest error is ``window width / (levels - 1) / 2`` HU.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        ``fps``, ``frames``, ``first`` or ``levels`` out of range (nothing written).
    """
    return _write_animation(path, frames, fps, first, levels, "PNG")


def write_gif(path: str | os.PathLike, frames: np.ndarray, fps: float = 10.0,
              first: int = 0, levels: int | None = None) -> Path:
    """Write ``frames`` (uint8, (n, rows, cols, 3)) as a GIF that loops forever.

    Every frame is stored as the rectangle that changed since the previous one (Pillow's
    default). Pillow's ``optimize`` (unchanged pixels made transparent) is not used: it made the
    demo's CT GIF 6 % larger, as slice-to-slice noise changes 89 % of the pixels. Parameters,
    return value and errors are :func:`write_apng`'s; GIF stores durations in 10 ms steps.

    Parameters
    ----------
    first : int
        The frame shown first (the poster frame that HTML, Markdown and print show of a GIF); the
        animation starts there and wraps around, so every frame still plays in order.
    levels : int, optional
        Grey frames only: how many evenly spaced greys, in 2..256 (256: every grey exact). By
        default :func:`grey_levels`, as few as the frames' own noise hides; the largest error is
        half a step, ``window width / (levels - 1) / 2`` HU for a CT.
    """
    return _write_animation(path, frames, fps, first, levels, "GIF")


def _write_animation(path: str | os.PathLike, frames: np.ndarray, fps: float, first: int,
                     levels: int | None, kind: str) -> Path:
    """Check the arguments, then save the palette images as ``kind`` (``PNG``: APNG, or
    ``GIF``) through ``.<name>.part.<kind>`` renamed to ``path``."""
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps!r}")
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
        raise ValueError(f"frames must be uint8 (n >= 1, rows, cols, 3), got {frames.dtype} "
                         f"{frames.shape}")
    if not 0 <= first < len(frames):
        raise ValueError(f"first must be a frame index in 0..{len(frames) - 1}, got {first}")
    if levels is not None and not 2 <= levels <= 256:
        raise ValueError(f"levels must be 2..256 greys, got {levels!r}")
    images = _palette_images(np.roll(frames, -first, axis=0), levels)
    options = {"optimize": False} if kind == "GIF" else {"default_image": False,
                                                         "compress_level": _DEFLATE_LEVEL}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part.{kind.lower()}")
    images[0].save(tmp, kind, save_all=True, append_images=images[1:], loop=0,
                   duration=round(1000.0 / fps), **options)
    os.replace(tmp, path)
    return path


ANIMATION_WRITERS = {"png": write_apng, "gif": write_gif}
"""File suffix (without the dot) -> the writer of an animation in that format."""


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write an RGB uint8 image, shape (n_rows, n_cols, 3), as PNG: one grey channel when the
    three are equal (the same pixels, a third of the bytes to compress), else RGB."""
    image = np.asarray(image)
    if image.ndim == 3 and np.array_equal(image[..., 0], image[..., 1]) and \
            np.array_equal(image[..., 0], image[..., 2]):
        image = image[..., 0]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part.png")
    iio.imwrite(tmp, np.ascontiguousarray(image))
    os.replace(tmp, path)
    return path
