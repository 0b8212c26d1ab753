"""Figures without pyplot: a blank figure and the PNG + PDF writer at print resolution."""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["DPI", "FORMATS", "new_figure", "save_figure"]

DPI = 300
FORMATS = ("png", "pdf")
# No creation date in the files and fixed SVG element ids: the same figure gives the same bytes.
_METADATA = {"png": {}, "pdf": {"CreationDate": None}, "svg": {"Date": None}}
_RC = {"svg.hashsalt": "cfx"}


def new_figure(width: float, height: float) -> Figure:
    """A white figure of ``width`` x ``height`` inches on an Agg canvas (no pyplot state)."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained", facecolor="white")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, stem: str | os.PathLike, formats: tuple[str, ...] = FORMATS,
                dpi: int = DPI) -> list[Path]:
    """Write ``fig`` as ``stem.png`` (raster, ``dpi``) and ``stem.pdf`` (vector).

    Parameters
    ----------
    fig : Figure
    stem : path
        Output path without extension; its folder is created.
    formats : tuple of {"png", "pdf", "svg"}
    dpi : int
        Raster resolution in dots per inch (recorded in the PNG's pHYs chunk).

    Returns
    -------
    list of Path
        The files written, in the order of ``formats``; the same figure gives the same bytes
        (no creation date is recorded).
    """
    unknown = [f for f in formats if f not in ("png", "pdf", "svg")]
    if not formats or unknown:
        raise ValueError(f"formats: expected some of png, pdf, svg, got {formats!r}")
    if dpi < 1:
        raise ValueError(f"dpi: must be >= 1, got {dpi}")
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = stem.with_name(f"{stem.name}.{fmt}")
        with rc_context(_RC):
            fig.savefig(path, format=fmt, dpi=dpi, facecolor=fig.get_facecolor(),
                        metadata=_METADATA[fmt])
        paths.append(path)
    return paths
