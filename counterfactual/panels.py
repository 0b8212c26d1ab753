"""The reference | counterfactual | difference animation of one contrast, shared by
``cfx render`` and ``cfx report`` so both show the same thing."""

from __future__ import annotations

import numpy as np

from cfx.analysis.render.gif import panel_frames, symmetric_limit
from cfx.counterfactual.volume import Volume

__all__ = ["value_title", "contrast_panel"]


def value_title(attribute: str, value) -> str:
    """A panel title such as ``"Smoking: yes"``."""
    return f"{attribute.replace('_', ' ').capitalize()}: {value}"


def contrast_panel(reference: Volume, counterfactual: Volume, diff: Volume,
                   lung: np.ndarray | None, attribute: str, value, reference_value,
                   axis: str, window: tuple[float, float], size: int) -> np.ndarray:
    """Titled panel frames, uint8 (n_slices, rows, cols, 3), coloured to ±the 99th |Δ| in lung."""
    lung = lung if lung is not None and lung.shape == diff.shape else None
    titles = (value_title(attribute, reference_value), value_title(attribute, value),
              f"difference ({value} - {reference_value})")
    return panel_frames(reference.data, counterfactual.data, diff.data, counterfactual.affine,
                        titles, axis, window, symmetric_limit(diff.data, lung), lung, size)
