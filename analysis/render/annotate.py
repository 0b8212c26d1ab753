"""Text and colour-bar strips, drawn once with matplotlib and reused for every frame."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from analysis.render.colour import DIFF_CMAP, diverging

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
    """A vertical colour bar for ±``limit`` HU with labelled ticks, ``(height, width, 3)``."""
    bar_w = max(6, width // 5)
    fig = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI, facecolor="black")
    top = max(1, min(18, height // 6))
    bottom = height - top
    ticks = np.array([limit, limit / 2, 0.0, -limit / 2, -limit])
    for value in ticks:
        y = 1 - (top + (limit - value) / (2 * limit) * (bottom - top)) / height
        fig.text((bar_w + 4) / width, y, f"{value:+g}" if value else "0", color="white",
                 va="center", ha="left", fontsize=7)
    fig.text((bar_w + 4) / width, 1 - 2 / height, "HU", color="white", va="top", fontsize=7)
    strip = _rasterise(fig)[:height, :width]
    values = np.linspace(limit, -limit, bottom - top)[:, None] * np.ones((1, bar_w))
    strip[top:bottom, 2:2 + bar_w] = diverging(values, limit, cmap)
    return strip
