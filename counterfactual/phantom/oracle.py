"""The phantom oracle: any subject re-rendered with any attributes and the same noise.

It reads a cohort's ``truth.json`` (written by ``cfx phantom``) and gives, for every subject,
its label map and affine, renders with attributes overridden, and the exact expected difference
map of an attribute change. The sweep uses it as the generator named ``phantom-oracle``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.phantom.anatomy import Anatomy, build_anatomy
from cfx.counterfactual.phantom.clinical import ATTRIBUTES
from cfx.counterfactual.phantom.effects import Effects, parse_effects
from cfx.counterfactual.phantom.patterns import LungPatterns
from cfx.counterfactual.phantom.render import render

__all__ = ["PhantomOracle", "TRUTH_FORMAT", "TRUTH_FILE", "phantom_affine"]

TRUTH_FORMAT = "cfx-phantom-truth/1"
TRUTH_FILE = "truth.json"


def phantom_affine(shape: tuple[int, int, int],
                   spacing: tuple[float, float, float]) -> np.ndarray:
    """RAS affine of a phantom grid: axis-aligned, ``spacing`` mm, centred on the origin.

    Returns
    -------
    ndarray of float64, shape (4, 4)
        Voxel index -> RAS mm; index grows toward the patient's right, anterior and superior.
    """
    affine = np.diag([*map(float, spacing), 1.0])
    affine[:3, 3] = [-(n - 1) / 2 * s for n, s in zip(shape, spacing, strict=True)]
    return affine


@dataclass(frozen=True)
class _Truth:
    """One subject's latent attributes and seeds."""

    attributes: dict
    anatomy_seed: int
    noise_seed: int


class PhantomOracle:
    """Exact renders and difference maps of a phantom cohort.

    Build it with :meth:`from_cohort` (a folder written by ``cfx phantom``) or
    :meth:`from_truth` (the decoded ``truth.json``). It keeps the anatomy of the last subject
    used, so rendering one subject many times costs one anatomy.
    """

    def __init__(self, shape: tuple[int, int, int], spacing: tuple[float, float, float],
                 effects: Effects, subjects: Mapping[str, _Truth], source: str):
        self.shape = tuple(shape)
        self.spacing = tuple(spacing)
        self.effects = effects
        self._subjects = dict(subjects)
        self._source = source
        self._cache: tuple[str, Anatomy, LungPatterns] | None = None

    @classmethod
    def from_cohort(cls, folder: str | os.PathLike) -> PhantomOracle:
        """Read ``<folder>/truth.json``.

        Raises
        ------
        UserInputError
            If the file is missing or not a phantom truth file.
        """
        path = Path(folder) / TRUTH_FILE
        try:
            truth = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserInputError(f"{path}: not found; the oracle needs a cohort made by "
                                 "cfx phantom") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UserInputError(f"{path}: cannot read it ({exc}); regenerate the cohort with "
                                 "cfx phantom") from None
        return cls.from_truth(truth, str(path))

    @classmethod
    def from_truth(cls, truth: dict, source: str = TRUTH_FILE) -> PhantomOracle:
        """Build from a decoded ``truth.json`` (``source`` names it in messages)."""
        try:
            if truth["format"] != TRUTH_FORMAT:
                raise ValueError(f"format {truth['format']!r}, expected {TRUTH_FORMAT!r}")
            settings = truth["settings"]
            shape = tuple(int(n) for n in settings["shape"])
            spacing = tuple(float(s) for s in settings["spacing"])
            subjects = {s["id"]: _Truth(dict(s["attributes"]), int(s["anatomy_seed"]),
                                        int(s["noise_seed"])) for s in truth["subjects"]}
            effects_raw = truth["effects"]
        except (KeyError, TypeError, ValueError) as exc:
            raise UserInputError(f"{source}: not a phantom truth file ({type(exc).__name__}: "
                                 f"{exc}); regenerate the cohort with cfx phantom") from None
        return cls(shape, spacing, parse_effects(effects_raw, f"{source}: effects"), subjects,
                   source)

    @property
    def attributes(self) -> tuple[str, ...]:
        """Attributes a render can override."""
        return ATTRIBUTES

    @property
    def subject_ids(self) -> tuple[str, ...]:
        return tuple(self._subjects)

    def truth(self, subject_id: str) -> dict:
        """Latent attributes of a subject (complete, including values missing from the CSV)."""
        return dict(self._subject(subject_id).attributes)

    def noise_seed(self, subject_id: str) -> int:
        """The seed of the subject's CT in ``ct/``: ``round(render(id, {}, noise_seed))``."""
        return self._subject(subject_id).noise_seed

    def affine(self, subject_id: str | None = None) -> np.ndarray:
        """RAS affine, float64 (4, 4); every subject of a phantom cohort shares it."""
        if subject_id is not None:
            self._subject(subject_id)
        return phantom_affine(self.shape, self.spacing)

    def labels(self, subject_id: str) -> np.ndarray:
        """Label map, int16 (n_x, n_y, n_z): 1 left lung, 2 right lung, 3 airway."""
        return self._anatomy(subject_id)[0].labels

    def lung_mask(self, subject_id: str) -> np.ndarray:
        """Boolean lung mask (labels 1 and 2), shape (n_x, n_y, n_z)."""
        return self._anatomy(subject_id)[1].lung

    def render(self, subject_id: str, overrides: Mapping | None = None,
               seed: int = 0) -> np.ndarray:
        """The subject's CT with ``{**truth, **overrides}`` and the texture/noise of ``seed``.

        Parameters
        ----------
        subject_id : str
        overrides : mapping of str to value, optional
            Attribute values to set; strings as typed on a command line (``"yes"``, ``"68"``)
            or canonical values (numbers for age).
        seed : int
            Noise seed; one seed gives the same noise whatever the attributes.

        Returns
        -------
        ndarray of float32, shape (n_x, n_y, n_z)
            Unrounded HU.
        """
        attributes = self.truth(subject_id)
        for name, value in (overrides or {}).items():
            attributes[name] = self.effects.canonical(name, value, f"{subject_id}: override")
        anatomy, patterns = self._anatomy(subject_id)
        return render(anatomy, self.effects.effect_map(attributes, patterns), int(seed))

    def expected_difference(self, subject_id: str, attribute: str, value,
                            reference) -> np.ndarray:
        """Exact ``render(value) - render(reference)`` of one attribute, whatever the seed.

        Returns
        -------
        ndarray of float32, shape (n_x, n_y, n_z)
            HU; zero outside the lungs.
        """
        where = f"{subject_id}: expected difference"
        value = self.effects.canonical(attribute, value, where)
        reference = self.effects.canonical(attribute, reference, where)
        patterns = self._anatomy(subject_id)[1]
        return (self.effects.attribute_map(attribute, value, patterns)
                - self.effects.attribute_map(attribute, reference, patterns))

    def _subject(self, subject_id: str) -> _Truth:
        try:
            return self._subjects[subject_id]
        except KeyError:
            raise UserInputError(f"{self._source}: no subject {subject_id!r} in the phantom "
                                 "cohort") from None

    def _anatomy(self, subject_id: str) -> tuple[Anatomy, LungPatterns]:
        if self._cache is None or self._cache[0] != subject_id:
            anatomy = build_anatomy(self.shape, self._subject(subject_id).anatomy_seed)
            self._cache = (subject_id, anatomy, LungPatterns(anatomy.labels, self.spacing))
        return self._cache[1], self._cache[2]
