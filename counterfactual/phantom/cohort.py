"""Writing a phantom cohort folder: masks, CTs, ``clinical.csv`` and ``truth.json``.

The folder is what :func:`cfx.counterfactual.cohort.load_cohort` reads::

    clinical.csv           subject,age,sex,smoking,mortality,diagnosis (empty cell = missing)
    masks/P000.nii.gz      labels 1 left lung, 2 right lung, 3 airway (int16)
    ct/P000.nii.gz         HU, int16, round(oracle render with the subject's noise seed)
    truth.json             effects, settings, per subject latent attributes and seeds

Everything is a pure function of the settings: the same settings give the same bytes.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cfx.counterfactual import __version__
from cfx.counterfactual.atomic import staged_dir, write_text
from cfx.counterfactual.phantom.clinical import ATTRIBUTES, sample_attributes, sample_missing
from cfx.counterfactual.phantom.effects import DEFAULT_EFFECTS, Effects
from cfx.counterfactual.phantom.oracle import (
    TRUTH_FILE,
    TRUTH_FORMAT,
    PhantomOracle,
    phantom_affine,
)
from cfx.counterfactual.progress import track
from cfx.counterfactual.volume import write_volume

__all__ = ["PhantomSettings", "make_truth", "write_phantom"]


@dataclass(frozen=True)
class PhantomSettings:
    """What ``cfx phantom`` generates (already validated).

    Attributes
    ----------
    subjects : int
        Number of subjects, at least 1.
    shape : tuple of int
        ``(n_x, n_y, n_z)`` voxels.
    spacing : tuple of float
        ``(x, y, z)`` voxel size in mm.
    seed : int
        Master seed (non-negative).
    effects : Effects
        Planted effects.
    """

    subjects: int = 40
    shape: tuple[int, int, int] = (64, 64, 64)
    spacing: tuple[float, float, float] = (5.0, 5.0, 5.0)
    seed: int = 0
    effects: Effects = DEFAULT_EFFECTS


def _subject_ids(n: int) -> list[str]:
    width = max(3, len(str(n - 1)))
    return [f"P{i:0{width}d}" for i in range(n)]


def make_truth(settings: PhantomSettings) -> dict:
    """The ``truth.json`` content for ``settings``: latent attributes, missingness and seeds.

    Clinical values and per-subject seeds come from independent children of the master seed.
    """
    clinical_seq, seeds_seq, missing_seq = np.random.SeedSequence(settings.seed).spawn(3)
    n = settings.subjects
    attributes = sample_attributes(n, np.random.default_rng(clinical_seq))
    missing = sample_missing(n, np.random.default_rng(missing_seq))
    seeds = np.random.default_rng(seeds_seq).integers(0, 2**32, size=(n, 2))
    subjects = [{"id": sid, "attributes": attributes[i], "missing": list(missing[i]),
                 "anatomy_seed": int(seeds[i, 0]), "noise_seed": int(seeds[i, 1])}
                for i, sid in enumerate(_subject_ids(n))]
    return {
        "format": TRUTH_FORMAT,
        "cfx_version": __version__,
        "settings": {"subjects": n, "shape": list(settings.shape),
                     "spacing": list(settings.spacing), "seed": settings.seed},
        "affine": phantom_affine(settings.shape, settings.spacing).tolist(),
        "effects": settings.effects.to_json(),
        "subjects": subjects,
    }


def _clinical_csv(truth: dict) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["subject", *ATTRIBUTES])
    for subject in truth["subjects"]:
        writer.writerow([subject["id"], *("" if a in subject["missing"] else
                                          subject["attributes"][a] for a in ATTRIBUTES)])
    return buffer.getvalue()


def write_phantom(out: str | os.PathLike, settings: PhantomSettings,
                  quiet: bool = False) -> Path:
    """Generate a phantom cohort into ``out`` (which must not exist or be empty).

    The folder is built in a temporary sibling and renamed onto ``out`` only when complete, so
    a failure leaves nothing. One subject is in memory at a time.

    Returns
    -------
    Path
        ``out``.
    """
    out = Path(out)
    truth = make_truth(settings)
    oracle = PhantomOracle.from_truth(truth, str(out / TRUTH_FILE))
    affine = oracle.affine()
    with staged_dir(out) as tmp:
        for subject in track(truth["subjects"], "phantom", quiet=quiet):
            sid = subject["id"]
            ct = np.rint(oracle.render(sid, {}, subject["noise_seed"]))
            write_volume(tmp / "masks" / f"{sid}.nii.gz", oracle.labels(sid), affine)
            write_volume(tmp / "ct" / f"{sid}.nii.gz", ct, affine)
        write_text(tmp / "clinical.csv", _clinical_csv(truth))
        write_text(tmp / TRUTH_FILE, json.dumps(truth, indent=2) + "\n")
    return out
