"""One reader of a run folder made by ``cfx sweep``: :class:`RunFolder`, and :func:`load_run` for
notebooks.

The manifest is read and checked once (settings, items, masks, model, sampling, file records;
every run path inside the run); CTs, difference maps and masks are then handed out by
``(subject, value, seed)`` from the manifest's own paths. Every run volume read through it is
first checked against the sha256 the sweep recorded for it (hashed once per file per reader), so
a run changed after it was written is refused instead of silently giving other numbers::

    run = load_run("runs/smoking")
    run.effects()                                  # stats/effects.csv as a DataFrame
    run.ct_image("P000", "yes", 0)                 # a nibabel image
    run.difference("P000", "yes", 0).data          # float32 HU, value - reference
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import nibabel as nib
import pandas as pd

from cfx.counterfactual.attributes import DEFAULT_ATTRIBUTES, AttributeVocabulary
from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.labels import DEFAULT_VOCABULARY, LabelVocabulary
from cfx.counterfactual.prompts import PromptTemplate
from cfx.counterfactual.sweep.manifest import MANIFEST, read_manifest, recorded_files, sha256
from cfx.counterfactual.sweep.naming import check_label, check_seed, diff_name, value_label
from cfx.counterfactual.vocabularies import resolve_template, resolve_vocabularies
from cfx.counterfactual.volume import Volume, read_labels, read_volume

__all__ = ["RunFolder", "load_run", "NOT_VERIFIED"]

NOT_VERIFIED = ("--no-verify: the run's volumes were not checked against the sha256 that "
                "manifest.json recorded")
_VALUE = (str, int, float)


@dataclass(frozen=True)
class RunFolder:
    """A run folder made by ``cfx sweep``, read once; build it with :meth:`open`.

    Attributes
    ----------
    root : Path
        The run folder.
    manifest : dict
        ``manifest.json`` as read (settings, items, files, model, ...); treat it as read-only.
    attribute : str
        The swept attribute.
    values : tuple
        Its swept values, canonical (``"yes"``, ``60``).
    reference : object
        The value every difference map is taken against (one of ``values``).
    seeds : tuple of int
    subjects : tuple of str
    cohort : Path
        The cohort the run was made from.
    model : dict
        ``name``, ``content_hash`` and, for a checkpoint, ``folder``.
    sampling : dict or None
        How a diffusion model sampled (``steps``, ``guidance``, ``from_ct``, ...), else None.
    complete : bool
        Whether every planned file is recorded.
    labels : LabelVocabulary
        The vocabulary masks are read with: the run's (``--labels`` may change its regions).
    attributes : AttributeVocabulary
        The attribute definitions the run's records were read with (the run's, plus those of
        ``--attributes`` it lacks).
    verify : bool
        Whether volumes are checked against their recorded sha256 before they are read.
    """

    root: Path
    manifest: dict = field(repr=False)
    attribute: str
    values: tuple
    reference: object
    seeds: tuple[int, ...]
    subjects: tuple[str, ...]
    cohort: Path
    model: dict
    sampling: dict | None
    complete: bool
    labels: LabelVocabulary = DEFAULT_VOCABULARY
    verify: bool = True
    attributes: AttributeVocabulary = DEFAULT_ATTRIBUTES
    _masks: Mapping[str, Path] = field(default_factory=dict, repr=False)
    _items: Mapping[tuple, dict] = field(default_factory=dict, repr=False)
    _records: Mapping[PurePosixPath, object] = field(default_factory=dict, repr=False)
    _checked: set = field(default_factory=set, repr=False, compare=False)

    @classmethod
    def open(cls, folder: str | os.PathLike, labels: LabelVocabulary | None = None,
             verify: bool = True, attributes: AttributeVocabulary | None = None) -> RunFolder:
        """Read and check ``folder/manifest.json``; no volume is read yet.

        Parameters
        ----------
        folder : path
            The run folder.
        labels : LabelVocabulary, optional
            The user's ``--labels``; its labels must be the run's (:mod:`counterfactual.
            vocabularies`), its regions are used. Default: the run's (the built-in vocabulary
            for a run made before cfx recorded it).
        verify : bool
            Check each volume against its recorded sha256 before reading it.
        attributes : AttributeVocabulary, optional
            The attributes of the user's ``--attributes`` file alone; each the run defines must
            be defined the same way.

        Raises
        ------
        UserInputError
            No or a damaged manifest, a path or subject id leading outside the run, a missing
            or malformed field, a (subject, value, seed) without an item, a subject without a
            mask entry, a ``labels`` or ``attributes`` that disagrees with the run's.
        """
        root = Path(folder)
        manifest = read_manifest(root)
        where = str(root / MANIFEST)
        vocabularies = resolve_vocabularies(manifest, f"the run {root}", where, attributes, labels)
        try:
            settings = manifest["settings"]
            values = tuple(settings["values"])
            subjects = tuple(settings["subjects"])
            seeds = tuple(check_seed(s, f"{where}: settings.seeds") for s in settings["seeds"])
            reference = settings["reference"]
            attribute = check_label(settings["attribute"], "attribute",
                                    f"{where}: settings.attribute")
            if not all(isinstance(v, _VALUE) for v in values):
                raise TypeError("settings.values")
            if reference not in values:
                raise TypeError("settings.reference")
            items = {}
            for k, item in enumerate(manifest["items"]):
                at = f"items[{k}]"
                if item["subject"] not in subjects or not isinstance(item["value"], _VALUE):
                    raise TypeError(at)
                key = (item["subject"], value_label(item["value"]),
                       check_seed(item["seed"], f"{where}: {at}.seed"))
                items[key] = item
            masks = {s: Path(manifest["masks"][s]) for s in subjects}
            model = {key: manifest["model"][key] for key in ("name", "content_hash", "folder")
                     if key in manifest["model"]}
            missing = [(s, v, k) for s in subjects for v in values for k in seeds
                       if (s, value_label(v), k) not in items]
            if missing:
                raise KeyError(f"items of subject {missing[0][0]}, value {missing[0][1]!r}, "
                               f"seed {missing[0][2]}")
            run = cls(root, manifest, attribute, values, reference, seeds, subjects,
                      Path(settings["cohort"]), model, settings.get("sampling"),
                      bool(manifest.get("complete")), vocabularies.labels, verify,
                      vocabularies.attributes, masks, items,
                      {PurePosixPath(rel): entry.get("sha256")
                       for rel, entry in recorded_files(root).items()})
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            if isinstance(exc, UserInputError):
                raise
            raise UserInputError(f"{where}: malformed manifest (missing or bad field {exc}); "
                                 "regenerate the run with cfx sweep") from None
        return run

    # --- what the run holds ---------------------------------------------------------------

    def template(self, given: PromptTemplate | None = None) -> PromptTemplate:
        """The prompt template the run was made with; ``given`` (``--template``) must be it.

        Raises
        ------
        UserInputError
            ``given`` has another text, or the run names a template file (made by an older
            cfx, which recorded no text) that is gone or changed.
        """
        return resolve_template(self.manifest, f"the run {self.root}", str(self.root / MANIFEST),
                                given)

    def require_complete(self, then: str = "") -> None:
        """Refuse an incomplete run; ``then`` ends the message (e.g. ``" before auditing it"``)."""
        if not self.complete:
            raise UserInputError(f"{self.root}: the sweep is incomplete; finish it with cfx "
                                 f"sweep --resume{then}")

    def item(self, subject: str, value, seed: int) -> dict:
        """The manifest item of a CT: ``subject``, ``seed``, ``noise_seed``, ``value``,
        ``prompt``, ``path``. ``value`` may be the value or its text (``60`` or ``"60"``)."""
        try:
            return self._items[subject, value_label(value), seed]
        except KeyError:
            raise UserInputError(f"{self.root / MANIFEST}: no item of subject {subject}, value "
                                 f"{value!r}, seed {seed}; subjects {', '.join(self.subjects)}, "
                                 f"values {', '.join(map(str, self.values))}, seeds "
                                 f"{', '.join(map(str, self.seeds))}") from None

    def ct_path(self, subject: str, value, seed: int) -> Path:
        """Where the CT of ``subject`` at ``value`` and ``seed`` is: the item's recorded path."""
        return self.root / self.item(subject, value, seed)["path"]

    def difference_path(self, subject: str, value, seed: int) -> Path:
        """The recorded difference map ``value - reference`` of ``subject`` at ``seed``.

        The manifest's file records carry no keys, so the map is the recorded ``diff`` file
        whose BIDS name has these entities; a map the manifest does not record is refused.
        """
        self.item(subject, value, seed)
        if value_label(value) == value_label(self.reference):
            raise UserInputError(f"{self.root}: {value!r} is the reference; it has no "
                                 "difference map")
        rel = PurePosixPath(diff_name(subject, self.attribute, value_label(value),
                                      value_label(self.reference), seed,
                                      str(self.root / MANIFEST)))
        if rel not in self._records:
            raise UserInputError(f"{self.root / MANIFEST}: records no difference map {rel}; "
                                 "finish the run with cfx sweep --resume")
        return self.root / rel

    def mask_path(self, subject: str) -> Path:
        """The mask the sweep read for ``subject`` (in the cohort; not a run file)."""
        if subject not in self._masks:
            raise UserInputError(f"{self.root / MANIFEST}: no subject {subject!r}; subjects "
                                 f"{', '.join(self.subjects)}")
        return self._masks[subject]

    # --- volumes ----------------------------------------------------------------------------

    def check(self, paths: Iterable[Path]) -> None:
        """Check that each run file in ``paths`` exists and (unless ``verify`` is off) has the
        sha256 the manifest recorded; each file is hashed once per reader.

        Raises
        ------
        UserInputError
            A missing file, a file the manifest does not record, or one whose bytes changed.
        """
        for path in paths:
            rel = PurePosixPath(Path(path).relative_to(self.root).as_posix())
            if rel in self._checked:
                continue
            if not path.is_file():
                raise UserInputError(f"{path}: missing; finish the run with cfx sweep --resume")
            if self.verify:
                recorded = self._records.get(rel)
                if not isinstance(recorded, str):
                    raise UserInputError(f"{path}: {MANIFEST} records no sha256 of it, so it "
                                         "cannot be verified; finish the run with cfx sweep "
                                         "--resume, or pass --no-verify to read it anyway")
                if sha256(path) != recorded:
                    raise UserInputError(
                        f"{path}: its sha256 differs from the one {MANIFEST} recorded, so the "
                        "run was changed after cfx sweep wrote it; regenerate it with cfx sweep "
                        "--resume, or pass --no-verify to read it anyway")
            self._checked.add(rel)

    def ct(self, subject: str, value, seed: int) -> Volume:
        """The CT of ``subject`` at ``value`` and ``seed``: float32 HU, shape (n_x, n_y, n_z)."""
        return self._read(self.ct_path(subject, value, seed))

    def difference(self, subject: str, value, seed: int, reference=None) -> Volume:
        """``value - reference`` of ``subject`` at ``seed`` in HU, shape (n_x, n_y, n_z): the
        recorded difference map against the run's reference, else CT minus CT."""
        if reference is None or value_label(reference) == value_label(self.reference):
            return self._read(self.difference_path(subject, value, seed))
        high, low = self.ct(subject, value, seed), self.ct(subject, reference, seed)
        return Volume(high.data - low.data, high.affine, high.source)

    def mask(self, subject: str) -> Volume:
        """The subject's label map (int16), read with :attr:`labels`."""
        return read_labels(self.mask_path(subject), self.labels)

    def _read(self, path: Path) -> Volume:
        self.check([path])
        return read_volume(path)

    # --- for notebooks ----------------------------------------------------------------------

    def ct_image(self, subject: str, value, seed: int) -> nib.Nifti1Image:
        """:meth:`ct` as a nibabel image (float32 HU, the file's affine)."""
        return _image(self.ct(subject, value, seed))

    def difference_image(self, subject: str, value, seed: int,
                         reference=None) -> nib.Nifti1Image:
        """:meth:`difference` as a nibabel image (float32 HU)."""
        return _image(self.difference(subject, value, seed, reference))

    def mask_image(self, subject: str) -> nib.Nifti1Image:
        """:meth:`mask` as a nibabel image (int16 labels)."""
        return _image(self.mask(subject))

    def effects(self) -> pd.DataFrame:
        """``stats/effects.csv``: paired effect per value x region x metric beside the noise
        floor and the negative controls (written by ``cfx stats``)."""
        return self._stats("effects.csv")

    def controls(self) -> pd.DataFrame:
        """``stats/controls.csv``: the same statistics in the negative-control regions."""
        return self._stats("controls.csv")

    def dose_response(self) -> pd.DataFrame | None:
        """``stats/dose_response.csv`` (numeric attributes swept at 3+ values), else None."""
        path = self.root / "stats" / "dose_response.csv"
        return self._stats(path.name) if path.is_file() else None

    def _stats(self, name: str) -> pd.DataFrame:
        path = self.root / "stats" / name
        if not path.is_file():
            raise UserInputError(f"{path}: missing; run cfx stats {self.root} first")
        return pd.read_csv(path, keep_default_na=False, na_values=[""])


def _image(volume: Volume) -> nib.Nifti1Image:
    return nib.Nifti1Image(volume.data, volume.affine)


def load_run(path: str | os.PathLike, labels: LabelVocabulary | None = None,
             verify: bool = True) -> RunFolder:
    """Open a run folder made by ``cfx sweep`` for a notebook (see :class:`RunFolder`).

    Parameters
    ----------
    path : path
        The run folder.
    labels : LabelVocabulary, optional
        The vocabulary of its masks; default: the run's.
    verify : bool
        Check each volume against the sha256 the sweep recorded before reading it.
    """
    return RunFolder.open(path, labels, verify)
