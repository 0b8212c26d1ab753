"""Training batches for ``cfx train``: on-the-fly phantom subjects or patches of a real cohort.

Both sources are callables ``(numpy Generator, batch_size) -> TrainingBatch`` (the contract of
:mod:`cfx.models.training.gan`), so all their randomness comes from the trainer's generator and a
resumed run draws the same batches.

- :class:`PhantomSource`: each subject is drawn with the phantom's own rendering functions:
  anatomy from a seed, attributes drawn uniformly and independently of anatomy and of each other
  (so every combination occurs and no attribute predicts the body), and a fresh noise seed.
  ``subjects=None`` streams a new subject every draw (an unlimited cohort); ``subjects=N`` fixes
  ``N`` subjects with one CT each, like a real cohort of that size.
- :class:`CohortSource`: random patches of a cohort's CTs.

Every patch holds a random lung voxel at a random place inside it, so patches cover the lungs and
reach the body wall and the air around it (a generator never trained there would invent those
regions unconstrained, and an attribute would move them).

With ``body=True`` the label map gains one channel after the vocabulary's: the unlabelled voxels
inside the body outline of the training CT (:func:`cfx.analysis.controls.body_outline`), so the
generator is told where the body ends and need not guess it from the lungs (a guess the record
would otherwise move).

Each record reaches the generator as per-field phrases (:meth:`PromptTemplate.phrases`) after
dropping every field with probability ``drop_rate`` (missing values are left out anyway, so
this teaches the generator to cope with them and keeps records from identifying subjects).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from cfx.analysis.controls import body_outline
from cfx.counterfactual.cohort import Cohort
from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.labels import DEFAULT_VOCABULARY, LabelVocabulary
from cfx.counterfactual.phantom.anatomy import build_anatomy
from cfx.counterfactual.phantom.clinical import CATEGORIES
from cfx.counterfactual.phantom.effects import DEFAULT_EFFECTS, Effects
from cfx.counterfactual.phantom.patterns import LungPatterns
from cfx.counterfactual.phantom.render import render
from cfx.counterfactual.prompts import DEFAULT_TEMPLATE, PromptTemplate
from cfx.counterfactual.volume import check_same_grid, read_labels, read_volume
from cfx.models.training.gan import TrainingBatch

__all__ = ["PhantomSource", "CohortSource", "label_channels", "with_body", "uniform_attributes",
           "drop_fields", "whole_batch", "AGE_RANGE", "PATCHES_PER_SUBJECT"]

AGE_RANGE = (18, 95)  # years drawn for training: wider than the phantom cohorts' 35-90, so
# a sweep over ages such as 24 or 86 stays inside what the generator saw
PATCHES_PER_SUBJECT = 2  # patches cut from each drawn subject (drawing one costs a render)
_AIR_HU = -1000.0
_LUNG = (1, 2)


def label_channels(labels: np.ndarray, vocabulary: LabelVocabulary) -> np.ndarray:
    """Label values -> generator channel indices (0 background, ``i`` the ``i``-th label of the
    vocabulary in increasing order).

    Parameters
    ----------
    labels : ndarray of int, shape (n_x, n_y, n_z)
        Values in the vocabulary (checked when the mask was read).

    Returns
    -------
    ndarray of int64, same shape
    """
    lookup = np.zeros(max(vocabulary.labels) + 1, np.int64)
    for channel, value in enumerate(sorted(vocabulary.labels), start=1):
        lookup[value] = channel
    return lookup[labels]


def with_body(channels: np.ndarray, body: np.ndarray,
              vocabulary: LabelVocabulary) -> np.ndarray:
    """Channel indices with the body channel: unlabelled voxels inside ``body`` become channel
    ``len(vocabulary.labels) + 1``.

    Parameters
    ----------
    channels : ndarray of int64, shape (n_x, n_y, n_z)
        From :func:`label_channels`.
    body : ndarray of bool, same shape
        The body outline (everything not outside-body air).

    Returns
    -------
    ndarray of int64, same shape
    """
    return np.where((channels == 0) & body, len(vocabulary.labels) + 1, channels)


def uniform_attributes(rng: np.random.Generator) -> dict:
    """One phantom record with every attribute drawn uniformly and independently."""
    record = {"age": int(rng.integers(AGE_RANGE[0], AGE_RANGE[1] + 1))}
    for name, values in CATEGORIES.items():
        record[name] = values[int(rng.integers(len(values)))]
    return record


def drop_fields(record: Mapping, rng: np.random.Generator, rate: float) -> dict:
    """``record`` without each field independently with probability ``rate``."""
    keep = rng.random(len(record)) >= rate
    return {k: v for (k, v), kept in zip(record.items(), keep, strict=True) if kept}


def _lung_voxel(labels: np.ndarray, channels: Sequence[int],
                rng: np.random.Generator) -> np.ndarray:
    """A random voxel whose channel is one of ``channels`` (the lungs), as an index array."""
    lung = np.flatnonzero(np.isin(labels, channels))
    return np.array(np.unravel_index(lung[int(rng.integers(lung.size))], labels.shape))


def _patch_start(voxel: np.ndarray, patch: Sequence[int], shape: Sequence[int],
                 rng: np.random.Generator) -> list[int]:
    """A random patch corner such that the patch holds ``voxel`` anywhere inside it (not only at
    its centre, so patches also reach the body wall and the air around it), kept inside the
    volume where the volume is larger than the patch."""
    start = []
    for c, p, n in zip(voxel, patch, shape, strict=True):
        if n >= p:
            start.append(int(rng.integers(max(0, c - p + 1), min(c, n - p) + 1)))
        else:
            start.append(-((p - n) // 2))  # centred, padded on both sides
    return start


def whole_batch(volumes: Sequence[tuple[np.ndarray, np.ndarray]],
                phrases: list[dict[str, str]]) -> TrainingBatch:
    """Whole subjects as one batch: each ``(channels, ct)`` padded at the far end of every axis
    to the largest shape among them (background, air). What a source's ``whole`` gives the fit
    of the label levels (:mod:`cfx.models.training.levels`)."""
    shape = tuple(np.max([c.shape for c, _ in volumes], axis=0))
    return TrainingBatch(np.stack([_crop(c, (0, 0, 0), shape, 0) for c, _ in volumes]),
                         np.stack([_crop(ct, (0, 0, 0), shape, _AIR_HU)
                                   for _, ct in volumes]).astype(np.float32), phrases)


def _crop(volume: np.ndarray, start: Sequence[int], patch: Sequence[int],
          fill: float) -> np.ndarray:
    """The ``patch``-sized box at corner ``start`` (negative: padding with ``fill``)."""
    out = np.full(tuple(patch), fill, dtype=volume.dtype)
    source, target = [], []
    for s, p, n in zip(start, patch, volume.shape, strict=True):
        lo, hi = max(s, 0), min(s + p, n)
        source.append(slice(lo, hi))
        target.append(slice(lo - s, hi - s))
    out[tuple(target)] = volume[tuple(source)]
    return out


class PhantomSource:
    """Phantom subjects rendered as they are drawn.

    Parameters
    ----------
    shape : tuple of int
        Phantom grid ``(n_x, n_y, n_z)``.
    spacing : tuple of float
        Voxel size in mm.
    patch : tuple of int
        Training patch; equal to ``shape`` for whole volumes.
    subjects : int or None
        ``None``: a new subject per draw; ``N``: ``N`` fixed subjects (one CT each).
    seed : int
        Seeds the fixed subjects (unused when streaming: the trainer's generator draws them).
    effects : Effects
        Planted effects.
    template : PromptTemplate
    drop_rate : float
        Probability of dropping each prompt field.
    body : bool
        Add the body channel (see the module docstring).
    """

    def __init__(self, shape: tuple[int, int, int], spacing: tuple[float, float, float],
                 patch: tuple[int, int, int], subjects: int | None = None, seed: int = 0,
                 effects: Effects = DEFAULT_EFFECTS,
                 template: PromptTemplate = DEFAULT_TEMPLATE, drop_rate: float = 0.2,
                 body: bool = False):
        self.shape, self.spacing, self.patch = tuple(shape), tuple(spacing), tuple(patch)
        self.body = body
        self.subjects = subjects
        self.effects = effects
        self.template = template
        self.drop_rate = drop_rate
        self.vocabulary = DEFAULT_VOCABULARY
        self._fixed: list[tuple[int, dict, int]] = []
        if subjects is not None:
            rng = np.random.default_rng(np.random.SeedSequence([seed, 0x7A11]))
            self._fixed = [(int(rng.integers(2**32)), uniform_attributes(rng),
                            int(rng.integers(2**32))) for _ in range(subjects)]

    def summary(self) -> dict:
        """What the training cohort was, for ``config.json``."""
        return {"kind": "phantom", "subjects": self.subjects or "unlimited (one per draw)",
                "shape": list(self.shape), "spacing": list(self.spacing),
                "attributes": "uniform, independent", "effects": self.effects.to_json(),
                "prompt_field_drop_rate": self.drop_rate}

    def records(self, rng: np.random.Generator, n: int) -> list[dict]:
        """``n`` records as training draws them (for fitting the text whitening)."""
        if self._fixed:
            return [self._fixed[int(rng.integers(len(self._fixed)))][1] for _ in range(n)]
        return [uniform_attributes(rng) for _ in range(n)]

    def phrases(self, record: Mapping, rng: np.random.Generator) -> dict[str, str]:
        """The record as a training row reads it: fields dropped at random, then per field."""
        return self.template.phrases(drop_fields(record, rng, self.drop_rate))

    def _draw(self, rng: np.random.Generator) -> tuple[int, dict, int]:
        if self._fixed:
            return self._fixed[int(rng.integers(len(self._fixed)))]
        anatomy_seed = int(rng.integers(2**32))
        return anatomy_seed, uniform_attributes(rng), int(rng.integers(2**32))

    def _render(self, anatomy_seed: int, record: dict,
                noise_seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One subject's label map, label channels and CT (HU)."""
        anatomy = build_anatomy(self.shape, anatomy_seed)
        effect = self.effects.effect_map(record, LungPatterns(anatomy.labels, self.spacing))
        ct = render(anatomy, effect, noise_seed)
        channels = label_channels(anatomy.labels, self.vocabulary)
        if self.body:
            channels = with_body(channels, body_outline(ct, anatomy.labels), self.vocabulary)
        return anatomy.labels, channels, ct

    @property
    def cohort_size(self) -> int | None:
        """The fixed subjects' count; ``None`` when each draw is a new subject."""
        return self.subjects

    def whole(self, rng: np.random.Generator, batch_size: int) -> TrainingBatch:
        """``batch_size`` subjects drawn as training draws them, each whole, not a patch, and
        its record as recorded, no field dropped (what the label levels are fitted on, see
        :mod:`cfx.models.training.levels`)."""
        return self._whole([self._draw(rng) for _ in range(batch_size)])

    def whole_of(self, subjects: Sequence[int]) -> TrainingBatch:
        """The fixed subjects at indices ``subjects``, as :meth:`whole` gives them."""
        return self._whole([self._fixed[int(i)] for i in subjects])

    def _whole(self, drawn: Sequence[tuple[int, dict, int]]) -> TrainingBatch:
        volumes = [self._render(*subject)[1:] for subject in drawn]
        return whole_batch(volumes, [self.template.phrases(record) for _, record, _ in drawn])

    def __call__(self, rng: np.random.Generator, batch_size: int) -> TrainingBatch:
        labels, cts, phrases = [], [], []
        while len(labels) < batch_size:
            anatomy_seed, record, noise_seed = self._draw(rng)
            anatomy_labels, channels, ct = self._render(anatomy_seed, record, noise_seed)
            for _ in range(min(PATCHES_PER_SUBJECT, batch_size - len(labels))):
                voxel = _lung_voxel(anatomy_labels, _LUNG, rng)
                start = _patch_start(voxel, self.patch, self.shape, rng)
                labels.append(_crop(channels, start, self.patch, 0))
                cts.append(_crop(ct, start, self.patch, _AIR_HU))
                phrases.append(self.phrases(record, rng))
        return TrainingBatch(np.stack(labels), np.stack(cts).astype(np.float32), phrases)


class CohortSource:
    """Random patches holding lung of a cohort's CTs (all read into memory once).

    Parameters
    ----------
    cohort : Cohort
        Every subject must have a CT on its mask's grid.
    patch : tuple of int
    vocabulary : LabelVocabulary
    template : PromptTemplate
    drop_rate : float
    body : bool
        Add the body channel (see the module docstring).

    Raises
    ------
    UserInputError
        A subject without CT, a CT off its mask's grid, a mask without lung, or a record the
        template cannot render.
    """

    def __init__(self, cohort: Cohort, patch: tuple[int, int, int],
                 vocabulary: LabelVocabulary = DEFAULT_VOCABULARY,
                 template: PromptTemplate = DEFAULT_TEMPLATE, drop_rate: float = 0.2,
                 progress=lambda items, description: items, body: bool = False):
        self.patch = tuple(patch)
        self.vocabulary = vocabulary
        self.template = template
        self.drop_rate = drop_rate
        self.source = str(cohort.source)
        self._subjects: list[tuple[np.ndarray, np.ndarray, dict]] = []
        lung = vocabulary.region_labels("lung")
        for subject in progress(cohort.subjects, "read cohort"):
            if subject.ct is None:
                raise UserInputError(f"{cohort.source}: subject {subject.id} has no CT; cfx "
                                     "train needs a CT for every subject")
            mask = read_labels(subject.mask, vocabulary)
            ct = read_volume(subject.ct)
            check_same_grid(mask, ct)
            if not np.isin(mask.data, lung).any():
                raise UserInputError(f"{subject.mask}: no lung voxel (labels {list(lung)}); "
                                     "every training patch holds lung")
            template.render(subject.record, f"subject {subject.id}")
            channels = label_channels(mask.data, vocabulary)
            if body:
                channels = with_body(channels, body_outline(ct.data, mask.data), vocabulary)
            self._subjects.append((channels, ct.data.astype(np.float32), dict(subject.record)))
        self._lung_channels = [c for c, value in enumerate(sorted(vocabulary.labels), start=1)
                               if value in lung]
        self.spacing = tuple(float(s) for s in mask.spacing)

    def summary(self) -> dict:
        return {"kind": "cohort", "source": self.source, "subjects": len(self._subjects),
                "prompt_field_drop_rate": self.drop_rate}

    def records(self, rng: np.random.Generator, n: int) -> list[dict]:
        return [self._subjects[int(rng.integers(len(self._subjects)))][2] for _ in range(n)]

    def phrases(self, record: Mapping, rng: np.random.Generator) -> dict[str, str]:
        """The record as a training row reads it: fields dropped at random, then per field."""
        return self.template.phrases(drop_fields(record, rng, self.drop_rate))

    @property
    def cohort_size(self) -> int:
        """The cohort's subject count."""
        return len(self._subjects)

    def whole(self, rng: np.random.Generator, batch_size: int) -> TrainingBatch:
        """``batch_size`` subjects drawn as training draws them, each whole, not a patch, and
        its record as recorded, no field dropped."""
        return self.whole_of([int(rng.integers(len(self._subjects)))
                              for _ in range(batch_size)])

    def whole_of(self, subjects: Sequence[int]) -> TrainingBatch:
        """The subjects at indices ``subjects``, as :meth:`whole` gives them."""
        drawn = [self._subjects[int(i)] for i in subjects]
        return whole_batch([(channels, ct) for channels, ct, _ in drawn],
                           [self.template.phrases(record) for _, _, record in drawn])

    def __call__(self, rng: np.random.Generator, batch_size: int) -> TrainingBatch:
        labels, cts, phrases = [], [], []
        for _ in range(batch_size):
            channels, ct, record = self._subjects[int(rng.integers(len(self._subjects)))]
            voxel = _lung_voxel(channels, self._lung_channels, rng)
            start = _patch_start(voxel, self.patch, channels.shape, rng)
            labels.append(_crop(channels, start, self.patch, 0))
            cts.append(_crop(ct, start, self.patch, _AIR_HU))
            phrases.append(self.phrases(record, rng))
        return TrainingBatch(np.stack(labels), np.stack(cts), phrases)
