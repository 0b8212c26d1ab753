"""Label vocabulary of lung masks and the named regions built from it, defined once."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cfx.counterfactual.errors import UserInputError

__all__ = ["LabelVocabulary", "DEFAULT_VOCABULARY", "load_vocabulary"]


@dataclass(frozen=True)
class LabelVocabulary:
    """Integer labels of a mask and the named regions they form.

    Parameters
    ----------
    labels : mapping of int to str
        Label value -> structure name. 0 is always background and never listed.
    regions : mapping of str to tuple of int
        Region name -> the labels it unites, e.g. ``{"lung": (1, 2)}``.
    """

    labels: Mapping[int, str]
    regions: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self):
        if 0 in self.labels:
            raise UserInputError("label vocabulary: label 0 is background and cannot be named")
        for name, members in self.regions.items():
            unknown = sorted(set(members) - set(self.labels))
            if not members or unknown:
                raise UserInputError(
                    f"label vocabulary: region {name!r} uses labels {unknown or 'none'} that are "
                    f"not in the vocabulary {sorted(self.labels)}"
                )

    def region_labels(self, region: str) -> tuple[int, ...]:
        """Labels of a named region (a region or a single structure name)."""
        if region in self.regions:
            return tuple(self.regions[region])
        for value, name in self.labels.items():
            if name == region:
                return (value,)
        raise UserInputError(
            f"region {region!r} is not defined; known regions: {', '.join(self.region_names)}"
        )

    @property
    def region_names(self) -> list[str]:
        """Every name :meth:`region_labels` accepts."""
        return list(dict.fromkeys([*self.regions, *self.labels.values()]))

    def region_mask(self, labels: np.ndarray, region: str, source: str = "mask") -> np.ndarray:
        """Boolean mask of ``region`` in a label map; absent region: an error naming ``source``.

        Parameters
        ----------
        labels : ndarray of int, shape (n_x, n_y, n_z)
        region : str
        source : str
            Where the label map came from (a file name), for the error message.
        """
        mask = np.isin(labels, self.region_labels(region))
        if not mask.any():
            raise UserInputError(f"{source}: region {region!r} is absent (no voxel has labels "
                                 f"{list(self.region_labels(region))}); check the mask")
        return mask

    def to_json(self) -> dict:
        """JSON-ready form, the same a user file holds."""
        return {"labels": {str(k): v for k, v in self.labels.items()},
                "regions": {k: list(v) for k, v in self.regions.items()}}


DEFAULT_VOCABULARY = LabelVocabulary(
    labels={1: "left-lung", 2: "right-lung", 3: "airway"},
    regions={"lung": (1, 2), "left-lung": (1,), "right-lung": (2,), "airway": (3,)},
)


def load_vocabulary(path: str | os.PathLike) -> LabelVocabulary:
    """Read a vocabulary from JSON: ``{"labels": {"1": "left-lung", ...}, "regions": {...}}``."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        labels = {int(k): str(v) for k, v in raw["labels"].items()}
        regions = {str(k): tuple(int(x) for x in v) for k, v in raw.get("regions", {}).items()}
    except FileNotFoundError:
        raise UserInputError(f"{path}: label vocabulary file not found") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserInputError(
            f"{path}: not a label vocabulary ({exc}); expected "
            '{"labels": {"1": "left-lung", ...}, "regions": {"lung": [1, 2]}}'
        ) from None
    return LabelVocabulary(labels, regions)
