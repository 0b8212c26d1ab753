"""Text and colour-bar strips, drawn once with matplotlib and reused for every frame."""

from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from cfx.analysis.render.colour import DIFF_CMAP, LUT_SIZE

__all__ = ["title_strip", "colorbar_strip"]

_DPI = 100


def _rasterise(fig: Figure) -> np.ndarray:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def title_strip(text: str, width: int, height: int = 22) -> np.ndarray:
    """White text on black, ``(height, width, 3)`` uint8."""
    fig = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI, facecolor="black")
    fig.text(0.5, 0.5, text, color="white", ha="center", va="center", fontsize=9)
    return _rasterise(fig)[:height, :width]


def colorbar_strip(limit: float, height: int, width: int = 64,
                   cmap: str = DIFF_CMAP) -> np.ndarray:
    """A vertical colour bar for ±``limit`` HU with labelled ticks, ``(height, width, 3)``.

    Drawn by matplotlib's colorbar on the frames' own lookup table (the same 255 colours as
    :func:`~cfx.analysis.render.colour.diverging`); about 20 ms, once per GIF.
    """
    fig = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI, facecolor="black")
    bar_w = max(6, width // 5)
    top = max(1, min(18, height // 6))
    cax = fig.add_axes((2 / width, top / height, bar_w / width, 1 - 2 * top / height))
    mappable = ScalarMappable(Normalize(-limit, limit),
                              matplotlib.colormaps[cmap].resampled(LUT_SIZE))
    bar = fig.colorbar(mappable, cax=cax, ticks=[-limit, -limit / 2, 0.0, limit / 2, limit],
                       format=lambda value, _: f"{value:+g}" if value else "0")
    bar.outline.set_visible(False)
    cax.tick_params(colors="white", labelsize=7, length=2)
    cax.set_title("HU", color="white", fontsize=7, pad=2, loc="left")
    return _rasterise(fig)[:height, :width]
