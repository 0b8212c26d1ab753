"""How closely a GAN checkpoint draws the CTs it was trained on, region by region, and whether its
misfit follows an attribute.

Run from the repository root with the project's interpreter::

    python benchmarks/training_fit.py MODEL COHORT [--subjects 24] [--attribute smoking]

``COHORT`` is a cohort folder with CTs, e.g. the ``train-cohort`` of ``benchmarks/validation.py
--out DIR``. For its first ``--subjects`` subjects, ``MODEL`` (a checkpoint folder) draws each
subject's own record, one noise draw per subject (seed ``1000 + index``, as ``recovery.py``), and
the drawn CT is compared with the real one over three regions: the lungs (the mask's labels), the
body around them and the air outside the body (:func:`cfx.analysis.controls.control_labels` of the
real CT, the body taken up to the lungs). Per value of ``--attribute`` the script prints the mean
HU of the real and drawn CTs in each region and their difference.

What it tells apart: a counterfactual edit that moves the air (``cfx stats``' control regions)
can come from a model that fits its own training records but extrapolates badly to a changed one,
or from one that does not fit them yet. In the second case the drawn air already differs
between the attribute's groups *at the training records*, where every real CT has the same air,
and the lung level of each group sits short of the real one: more fitting, not more
regularisation, is what the model lacks.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from cfx.analysis.controls import BODY, OUTSIDE_BODY, control_labels
from cfx.counterfactual.cohort import load_cohort
from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.prompts import DEFAULT_TEMPLATE
from cfx.counterfactual.sweep.generators import Request, SamplingOptions
from cfx.counterfactual.sweep.learned import learned_generator
from cfx.counterfactual.volume import read_labels, read_volume

REGIONS = ("lung", "body", "air")


def region_means(ct: np.ndarray, labels: np.ndarray, controls: np.ndarray) -> dict[str, float]:
    """Mean HU over the lungs (non-zero labels), the body outside them and the air outside the
    body (``controls``: :func:`cfx.analysis.controls.control_labels` of the real CT)."""
    return {"lung": float(ct[labels != 0].mean()), "body": float(ct[controls == BODY].mean()),
            "air": float(ct[controls == OUTSIDE_BODY].mean())}


def fit_table(model_folder: Path, cohort_folder: Path, subjects: int,
              attribute: str) -> dict[str, dict[str, np.ndarray]]:
    """Per value of ``attribute``: region -> array of (real, drawn) mean HU, one row per subject.

    Raises
    ------
    UserInputError
        The cohort has no CTs, or no subject with ``attribute``.
    """
    cohort = load_cohort(cohort_folder)
    if not cohort.has_ct:
        raise UserInputError(f"{cohort_folder}: this cohort has no CTs to compare with")
    model = learned_generator(model_folder, SamplingOptions(None, None, False, None))
    model.configure(device="cpu")
    rows: dict[str, dict[str, list]] = {}
    for index, subject in enumerate(cohort.subjects[:subjects]):
        if attribute not in subject.record:
            continue
        mask, real = read_labels(subject.mask), read_volume(subject.ct)
        value = subject.record[attribute]
        request = Request.build(value, subject.record, DEFAULT_TEMPLATE)
        (drawn,) = model.generate(subject, mask, attribute, [request], seed=1000 + index,
                                  ct=real)
        controls = control_labels(real.data, mask.data, margin=0)  # the body up to the lungs
        means = (region_means(real.data, mask.data, controls),
                 region_means(drawn, mask.data, controls))
        group = rows.setdefault(str(value), {r: [] for r in REGIONS})
        for region in REGIONS:
            group[region].append([m[region] for m in means])
    if not rows:
        raise UserInputError(f"{cohort_folder}: no subject has {attribute!r}")
    return {value: {r: np.array(v) for r, v in group.items()} for value, group in rows.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="checkpoint folder made by cfx train --arch gan")
    parser.add_argument("cohort", type=Path, help="cohort folder with CTs (the training one)")
    parser.add_argument("--subjects", type=int, default=24, help="first N subjects (default 24)")
    parser.add_argument("--attribute", default="smoking", help="groups of the table")
    args = parser.parse_args(argv)
    try:
        table = fit_table(args.model, args.cohort, args.subjects, args.attribute)
    except UserInputError as exc:
        print(f"training_fit.py: error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.model} on its own records, first {args.subjects} subjects of {args.cohort}")
    print("| " + args.attribute + " | n | " + " | ".join(
        f"{r} real | {r} drawn | {r} drawn − real" for r in REGIONS) + " |")
    print("|---|---|" + "---|" * (3 * len(REGIONS)))
    for value, group in sorted(table.items()):
        cells = []
        for region in REGIONS:
            real, drawn = group[region].mean(axis=0)
            cells += [f"{real:.1f}", f"{drawn:.1f}", f"{drawn - real:+.1f}"]
        print(f"| {value} | {len(group['lung'])} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
