"""Training patches of a cohort streamed from disk: real-size cohorts train in bounded memory.

:class:`StreamingCohortSource` is a batch source (``(numpy Generator, batch_size) ->
TrainingBatch``, the contract of :mod:`cfx.models.training.gan`) that never holds a cohort in
memory:

1. **Prepared once, cached.** Each subject's mask and CT are read, checked, resampled onto the
   training grid (the cohort's median spacing and commonest orientation; the mask by nearest
   neighbour, the CT linearly, by :func:`cfx.counterfactual.grid.resample`, only where the subject's
   grid differs), turned into generator channels (with the body channel under ``body=True``) and
   written as uncompressed ``.npy`` arrays: ``channels.npy`` (uint8), ``ct.npy`` (float32, HU)
   and ``lung.npy`` (flat indices of the lung voxels). The cache key hashes the files' paths,
   sizes and modification times, the grid, the vocabulary and the body rule, so a changed input
   or setting is prepared again; a folder is written under a temporary name and renamed when
   complete, so an interrupted run never leaves a half-written entry. MONAI's
   ``PersistentDataset`` was not used: it stores each item as one ``torch.save`` file that is
   loaded whole on every access (a 512x512x300 CT is 300 MB per patch read), whereas an
   ``.npy`` file is memory-mapped and a crop reads only the pages it covers.
2. **Drawn from the trainer's generator.** Every random choice is made in the calling process
   from the trainer's numpy generator, in the same order and with the same rule as
   :class:`cfx.counterfactual.training_data.CohortSource` (a subject, a random lung voxel, a random
   patch corner holding that voxel anywhere inside it, the record's fields dropped at random),
   so on a cohort already on the training grid both sources give identical batches for the same
   generator state and a resumed run continues exactly.
3. **Read by workers.** The drawn crops are read by a torch ``DataLoader`` with ``workers``
   persistent worker processes (0: in the calling process); each opens the cached arrays as
   memory maps, copies out its patch and closes them, so resident memory holds the patches and
   not the volumes, whatever the cohort's size.

Under data-parallel training each process draws the whole global batch (the draws are cheap and
keep every process's generator in step) and reads only its own rows (:meth:`read_rows`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, Dataset, Sampler

from cfx.analysis.controls import body_outline
from cfx.counterfactual.cohort import Cohort, Subject
from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.grid import ModelGrid, fit_subject, resample
from cfx.counterfactual.labels import DEFAULT_VOCABULARY, LabelVocabulary
from cfx.counterfactual.prompts import DEFAULT_TEMPLATE, PromptTemplate
from cfx.counterfactual.training_data import (
    _AIR_HU,
    _crop,
    _patch_start,
    drop_fields,
    label_channels,
    whole_batch,
    with_body,
)
from cfx.counterfactual.volume import check_same_grid, read_labels, read_volume
from cfx.models.training.gan import TrainingBatch

__all__ = ["StreamingCohortSource", "CropRequest", "CACHE_VERSION"]

CACHE_VERSION = 1  # bump when the cached arrays' meaning changes
_META = "meta.json"


@dataclass(frozen=True)
class CropRequest:
    """One batch row as drawn: which subject, where its patch starts, its phrases.

    Attributes
    ----------
    subject : int
        Index into the source's subjects.
    start : tuple of 3 int
        Patch corner in voxels of the training grid (negative: padded).
    phrases : dict of str to str
        The record's phrases after dropping fields.
    """

    subject: int
    start: tuple[int, int, int]
    phrases: dict[str, str]


@dataclass(frozen=True)
class _Entry:
    """One prepared subject: its cache folder, grid shape, lung voxel count and record."""

    folder: Path
    shape: tuple[int, int, int]
    lung: int
    record: dict


def _stat(path: Path) -> list:
    info = path.stat()
    return [str(path.resolve()), info.st_size, info.st_mtime_ns]


def _key(subject: Subject, grid: ModelGrid, vocabulary: LabelVocabulary, body: bool) -> str:
    """Hash of everything the cached arrays depend on."""
    text = json.dumps([CACHE_VERSION, _stat(Path(subject.mask)), _stat(Path(subject.ct)),
                       list(grid.spacing), grid.orientation, sorted(vocabulary.labels),
                       list(vocabulary.region_labels("lung")), bool(body)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _prepare(subject: Subject, grid: ModelGrid, vocabulary: LabelVocabulary, body: bool,
             folder: Path) -> None:
    """Write one subject's cached arrays into ``folder`` (atomically, see the module)."""
    mask = read_labels(subject.mask, vocabulary)
    ct = read_volume(subject.ct)
    check_same_grid(mask, ct)
    lung_labels = vocabulary.region_labels("lung")
    if not np.isin(mask.data, lung_labels).any():
        raise UserInputError(f"{subject.mask}: no lung voxel (labels {list(lung_labels)}); "
                             "every training patch holds lung")
    labels, hu = mask.data, ct.data.astype(np.float32, copy=False)
    del ct
    fit = fit_subject(labels.shape, mask.affine, grid)
    if not fit.identity:
        labels = resample(labels, mask.affine, fit.model_shape, fit.model_affine, "nearest")
        hu = resample(hu, mask.affine, fit.model_shape, fit.model_affine, "linear")
    channels = label_channels(labels, vocabulary)
    if body:
        channels = with_body(channels, body_outline(hu, labels), vocabulary)
    lung_channels = [c for c, value in enumerate(sorted(vocabulary.labels), start=1)
                     if value in lung_labels]
    lung = np.flatnonzero(np.isin(channels, lung_channels))
    if lung.size == 0:
        raise UserInputError(f"{subject.mask}: no lung voxel left after resampling onto the "
                             f"training grid of {'x'.join(f'{s:g}' for s in grid.spacing)} mm")
    temporary = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    np.save(temporary / "channels.npy", channels.astype(np.uint8))
    np.save(temporary / "ct.npy", hu)
    np.save(temporary / "lung.npy", lung.astype(np.uint32 if channels.size < 2**32 else np.int64))
    (temporary / _META).write_text(json.dumps({"shape": list(channels.shape),
                                               "lung": int(lung.size)}))
    try:
        os.replace(temporary, folder)
    except OSError:  # another process (a data-parallel rank) finished it first
        shutil.rmtree(temporary, ignore_errors=True)


class _Crops(Dataset):
    """Reads one drawn crop (keyed by ``(folder, start)``) from the cached arrays."""

    def __init__(self, patch: tuple[int, int, int]):
        self.patch = patch

    def __len__(self) -> int:  # keys come from the sampler, not from indices
        return 0

    def __getitem__(self, key: tuple[str, tuple[int, int, int]]):
        folder, start = key
        channels = np.load(os.path.join(folder, "channels.npy"), mmap_mode="r")
        labels = _crop(channels, start, self.patch, 0).astype(np.int64)
        del channels
        ct = np.load(os.path.join(folder, "ct.npy"), mmap_mode="r")
        hu = _crop(ct, start, self.patch, _AIR_HU)
        del ct
        return labels, hu


class _Keys(Sampler):
    """The keys of the batch being read (set before each pass of the loader)."""

    def __init__(self):
        self.keys: list = []

    def __iter__(self):
        return iter(list(self.keys))

    def __len__(self) -> int:
        return len(self.keys)


def _as_is(item):
    return item


class StreamingCohortSource:
    """Random patches holding lung of a cohort's CTs, read from a disk cache as drawn.

    Parameters
    ----------
    cohort : Cohort
        Every subject must have a CT on its mask's grid.
    patch : tuple of 3 int
    grid : ModelGrid
        The training grid: its ``spacing`` (mm) and ``orientation`` are what every subject is
        resampled onto (the other fields are not read).
    cache : path
        Folder of the prepared subjects (created if missing; shared between runs).
    vocabulary : LabelVocabulary
    template : PromptTemplate
    drop_rate : float
        Probability of dropping each prompt field.
    body : bool
        Add the body channel (see :mod:`cfx.counterfactual.training_data`).
    workers : int
        ``DataLoader`` worker processes reading the crops (0: read in this process).
    progress : callable
        ``progress(items, description)`` wraps the preparation loop (a progress bar).

    Raises
    ------
    UserInputError
        A subject without CT, a CT off its mask's grid, a mask without lung, or a record the
        template cannot render.
    """

    def __init__(self, cohort: Cohort, patch: tuple[int, int, int], grid: ModelGrid,
                 cache: str | os.PathLike, vocabulary: LabelVocabulary = DEFAULT_VOCABULARY,
                 template: PromptTemplate = DEFAULT_TEMPLATE, drop_rate: float = 0.2,
                 body: bool = False, workers: int = 2,
                 progress=lambda items, description: items):
        self.patch = tuple(int(p) for p in patch)
        self.vocabulary, self.template, self.drop_rate = vocabulary, template, drop_rate
        self.source = str(cohort.source)
        self.spacing = tuple(float(s) for s in grid.spacing)
        self.cache = Path(cache)
        self._entries: list[_Entry] = []
        for subject in progress(cohort.subjects, "prepare cohort"):
            if subject.ct is None:
                raise UserInputError(f"{cohort.source}: subject {subject.id} has no CT; cfx "
                                     "train needs a CT for every subject")
            template.render(subject.record, f"subject {subject.id}")
            folder = self.cache / f"{subject.id}-{_key(subject, grid, vocabulary, body)}"
            if not (folder / _META).is_file():
                _prepare(subject, grid, vocabulary, body, folder)
            meta = json.loads((folder / _META).read_text())
            self._entries.append(_Entry(folder, tuple(meta["shape"]), int(meta["lung"]),
                                        dict(subject.record)))
        self._keys = _Keys()
        self._loader = DataLoader(_Crops(self.patch), batch_size=None, sampler=self._keys,
                                  num_workers=workers, persistent_workers=workers > 0,
                                  collate_fn=_as_is)

    def summary(self) -> dict:
        return {"kind": "cohort", "source": self.source, "subjects": len(self._entries),
                "prompt_field_drop_rate": self.drop_rate}

    def records(self, rng: np.random.Generator, n: int) -> list[dict]:
        return [self._entries[int(rng.integers(len(self._entries)))].record for _ in range(n)]

    def phrases(self, record: Mapping, rng: np.random.Generator) -> dict[str, str]:
        """The record as a training row reads it: fields dropped at random, then per field."""
        return self.template.phrases(drop_fields(record, rng, self.drop_rate))

    def draw(self, rng: np.random.Generator, batch_size: int) -> list[CropRequest]:
        """The rows of one batch, drawn from ``rng`` as :class:`CohortSource` draws them."""
        requests = []
        for _ in range(batch_size):
            index = int(rng.integers(len(self._entries)))
            entry = self._entries[index]
            lung = np.load(entry.folder / "lung.npy", mmap_mode="r")
            flat = int(lung[int(rng.integers(entry.lung))])
            del lung
            voxel = np.array(np.unravel_index(flat, entry.shape))
            start = tuple(_patch_start(voxel, self.patch, entry.shape, rng))
            requests.append(CropRequest(index, start, self.phrases(entry.record, rng)))
        return requests

    def read(self, requests: Sequence[CropRequest]) -> TrainingBatch:
        """The crops of ``requests`` (read by the loader's workers), as a batch."""
        self._keys.keys = [(str(self._entries[r.subject].folder), r.start) for r in requests]
        crops = list(self._loader)
        return TrainingBatch(np.stack([c[0] for c in crops]), np.stack([c[1] for c in crops]),
                             [r.phrases for r in requests])

    def read_rows(self, rng: np.random.Generator, batch_size: int, rows: slice
                  ) -> TrainingBatch:
        """Draw a whole batch of ``batch_size`` rows, read only ``rows`` of it (one process's
        share under data-parallel training, :mod:`cfx.models.training.distributed`)."""
        return self.read(self.draw(rng, batch_size)[rows])

    @property
    def cohort_size(self) -> int:
        """The cohort's subject count."""
        return len(self._entries)

    def whole(self, rng: np.random.Generator, batch_size: int) -> TrainingBatch:
        """``batch_size`` subjects drawn as training draws them, each whole (read in this
        process), not a patch, and its record as recorded, no field dropped."""
        return self.whole_of([int(rng.integers(len(self._entries)))
                              for _ in range(batch_size)])

    def whole_of(self, subjects: Sequence[int]) -> TrainingBatch:
        """The subjects at indices ``subjects``, as :meth:`whole` gives them."""
        entries = [self._entries[int(i)] for i in subjects]
        return whole_batch([(np.load(e.folder / "channels.npy").astype(np.int64),
                             np.load(e.folder / "ct.npy")) for e in entries],
                           [self.template.phrases(e.record) for e in entries])

    def __call__(self, rng: np.random.Generator, batch_size: int) -> TrainingBatch:
        return self.read(self.draw(rng, batch_size))

