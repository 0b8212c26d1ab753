"""HU windows, colour lookup tables and overlays for display frames (uint8 RGB)."""

from __future__ import annotations

import matplotlib
import numpy as np
from scipy import ndimage

__all__ = ["WINDOWS", "parse_window", "window_gray", "diverging", "blend", "draw_contour",
           "DIFF_CMAP", "LUT_SIZE"]

WINDOWS = {"lung": (1500.0, -600.0), "mediastinum": (400.0, 40.0)}
DIFF_CMAP = "RdBu_r"
LUT_SIZE = 255  # odd: the middle entry is exactly the colormap's centre colour


def parse_window(window: str | tuple[float, float]) -> tuple[float, float]:
    """A named window or ``"W,L"`` as (width, level) in HU."""
    if isinstance(window, tuple):
        width, level = window
    elif window in WINDOWS:
        width, level = WINDOWS[window]
    else:
        try:
            width, level = (float(x) for x in window.split(","))
        except ValueError:
            raise ValueError(f"window must be {', '.join(WINDOWS)} or 'W,L' in HU (e.g. "
                             f"1500,-600), got {window!r}") from None
    if not width > 0:
        raise ValueError(f"window width must be > 0 HU, got {width:g}")
    return float(width), float(level)


def window_gray(frames: np.ndarray, window: str | tuple[float, float] = "lung") -> np.ndarray:
    """HU frames -> grey RGB through a CT window.

    Parameters
    ----------
    frames : ndarray, shape (..., n_rows, n_cols), in HU

    Returns
    -------
    ndarray of uint8, shape (..., n_rows, n_cols, 3)
    """
    width, level = parse_window(window)
    lut = np.arange(256, dtype=np.uint8)
    scaled = (np.asarray(frames, np.float32) - (level - width / 2)) * (255.0 / width)
    grey = lut[np.clip(np.rint(scaled), 0, 255).astype(np.uint8)]
    return np.repeat(grey[..., None], 3, axis=-1)


def _lut(cmap: str) -> np.ndarray:
    colours = matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, LUT_SIZE))[:, :3]
    return np.rint(colours * 255).astype(np.uint8)


def diverging(frames: np.ndarray, limit: float, cmap: str = DIFF_CMAP) -> np.ndarray:
    """Difference frames (HU) -> RGB on a colormap centred on 0 HU, symmetric in ±``limit``.

    0 HU maps to the colormap's centre colour exactly; values beyond ±``limit`` saturate.

    Returns
    -------
    ndarray of uint8, shape (..., n_rows, n_cols, 3)
    """
    if not limit > 0:
        raise ValueError(f"limit must be > 0 HU, got {limit!r}")
    half = (LUT_SIZE - 1) / 2
    index = np.rint(np.asarray(frames, np.float32) * (half / limit) + half)
    return _lut(cmap)[np.clip(index, 0, LUT_SIZE - 1).astype(np.intp)]


def blend(base: np.ndarray, top: np.ndarray, alpha: np.ndarray | float) -> np.ndarray:
    """``top`` over ``base`` (uint8 RGB) with opacity ``alpha`` in [0, 1] (scalar or per pixel)."""
    alpha = np.asarray(alpha, np.float32)
    if alpha.ndim:
        alpha = alpha[..., None]
    out = base.astype(np.float32) * (1 - alpha) + top.astype(np.float32) * alpha
    return np.rint(out).astype(np.uint8)


def draw_contour(rgb: np.ndarray, mask_frames: np.ndarray,
                 colour: tuple[int, int, int] = (255, 200, 0)) -> np.ndarray:
    """Draw the in-plane outline of ``mask_frames`` (bool, (n, rows, cols)) on ``rgb`` frames."""
    mask = np.asarray(mask_frames, bool)
    structure = np.zeros((1, 3, 3), bool)
    structure[0, 1, :] = structure[0, :, 1] = True
    edge = mask & ~ndimage.binary_erosion(mask, structure, border_value=0)
    out = rgb.copy()
    out[edge] = colour
    return out
