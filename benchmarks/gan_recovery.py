"""How well a learned checkpoint recovers the phantom's planted effects on subjects it never saw.

Run from the repository root with the project's interpreter::

    python benchmarks/gan_recovery.py phantom-gan-64 [--subjects 12] [--update-card]

For each held-out phantom subject (a cohort drawn with a seed no training run uses) and each
contrast below, the checkpoint draws the subject's complete record with the attribute set to
each of the two values, from one noise draw (as ``cfx sweep`` does), and the difference is
compared with the oracle's exact difference map (``PhantomOracle.expected_difference``):

- lung-mean difference (HU), planted vs recovered (mean and SD over subjects), and the ratio;
- mean absolute difference outside the lungs (HU), which should be ~0 (nothing is planted there);
- voxelwise Pearson correlation with the oracle map over the whole volume
  (``score_difference``).

``sex`` has no planted effect: its lung-mean difference should be ~0. ``--update-card`` writes
the table into the checkpoint's ``README.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from counterfactual.cohort import Subject
from counterfactual.phantom import PhantomOracle, PhantomSettings, make_truth, score_difference
from counterfactual.prompts import DEFAULT_TEMPLATE
from counterfactual.sweep.generators import Request
from counterfactual.sweep.learned import LearnedGenerator, find_checkpoint
from counterfactual.volume import Volume

EVAL_SEED = 90_001  # master seed of the held-out phantom cohort
CONTRASTS = (  # attribute, value, reference
    ("smoking", "yes", "no"),
    ("sex", "male", "female"),
    ("age", 80, 40),
    ("mortality", "dead", "alive"),
    ("diagnosis", "IPF", "CTD-ILD"),
)
_CARD_HEADING = "## Recovery of planted effects"


@dataclass(frozen=True)
class Recovery:
    """Figures of one contrast over the held-out subjects (HU unless stated)."""

    attribute: str
    value: object
    reference: object
    planted: float
    recovered: float
    recovered_sd: float
    off_lung: float
    correlation: float

    @property
    def ratio(self) -> float:
        return self.recovered / self.planted if self.planted else float("nan")


def held_out(subjects: int, shape=(64, 64, 64), spacing=(5.0, 5.0, 5.0)) -> PhantomOracle:
    """The held-out phantom cohort (default effects)."""
    truth = make_truth(PhantomSettings(subjects=subjects, shape=tuple(shape),
                                       spacing=tuple(spacing), seed=EVAL_SEED))
    return PhantomOracle.from_truth(truth, "held-out phantom")


def evaluate(model: LearnedGenerator, oracle: PhantomOracle,
             contrasts=CONTRASTS) -> list[Recovery]:
    """Recovery figures of ``model`` on every subject of ``oracle`` for each contrast."""
    rows = {c: [] for c in contrasts}
    affine = oracle.affine()
    for index, sid in enumerate(oracle.subject_ids):
        labels = oracle.labels(sid)
        lung = oracle.lung_mask(sid)
        mask = Volume(labels, affine, sid)
        truth = oracle.truth(sid)
        for attribute, value, reference in contrasts:
            requests = []
            for v in (value, reference):
                record = {**truth, attribute: v}
                requests.append(Request.build(v, record, DEFAULT_TEMPLATE))
            subject = Subject(sid, Path(sid), None, truth)
            a, b = model.generate(subject, mask, attribute, requests, seed=1000 + index)
            predicted = a - b
            expected = oracle.expected_difference(sid, attribute, value, reference)
            score = score_difference(predicted, expected, lung)
            rows[(attribute, value, reference)].append(
                (score.region_mean_expected, score.region_mean_predicted,
                 float(np.abs(predicted[~lung]).mean()), score.correlation))
    out = []
    for (attribute, value, reference), values in rows.items():
        array = np.array(values, dtype=np.float64)
        out.append(Recovery(attribute, value, reference, float(array[:, 0].mean()),
                            float(array[:, 1].mean()), float(array[:, 1].std(ddof=1))
                            if len(array) > 1 else 0.0, float(array[:, 2].mean()),
                            float(np.nanmean(array[:, 3])) if np.isfinite(array[:, 3]).any()
                            else float("nan")))
    return out


def table(results: list[Recovery], oracle: PhantomOracle) -> str:
    """Markdown table of the figures."""
    grid = "x".join(map(str, oracle.shape))
    lines = [f"Held-out phantom subjects: {len(oracle.subject_ids)} (seed {EVAL_SEED}, {grid} "
             f"voxels of {oracle.spacing[0]:g} mm), one noise draw per subject shared by both "
             "values.", "",
             "| contrast | planted lung-mean Δ (HU) | recovered (mean ± SD) | ratio | "
             "mean abs Δ off-lung (HU) | voxelwise r |", "|---|---|---|---|---|---|"]
    for r in results:
        ratio = "—" if not r.planted else f"{r.ratio:.2f}"
        correlation = "—" if np.isnan(r.correlation) else f"{r.correlation:.2f}"
        lines.append(f"| {r.attribute} {r.value} − {r.reference} | {r.planted:+.1f} | "
                     f"{r.recovered:+.1f} ± {r.recovered_sd:.1f} | {ratio} | {r.off_lung:.1f} | "
                     f"{correlation} |")
    return "\n".join(lines)


def _update_card(folder: Path, text: str) -> None:
    card = folder / "README.md"
    body = card.read_text(encoding="utf-8")
    head = body.split(_CARD_HEADING)[0].rstrip()
    card.write_text(f"{head}\n\n{_CARD_HEADING}\n{text}\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="bundled model name or checkpoint folder")
    parser.add_argument("--subjects", type=int, default=12)
    parser.add_argument("--update-card", action="store_true",
                        help="write the table into the checkpoint's README.md")
    args = parser.parse_args(argv)
    folder = find_checkpoint(args.model)
    if folder is None:
        print(f"no checkpoint {args.model!r}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    oracle = held_out(args.subjects)
    results = evaluate(LearnedGenerator(folder), oracle)
    text = table(results, oracle)
    print(text)
    print(f"\n({time.perf_counter() - start:.0f} s)")
    if args.update_card:
        _update_card(folder, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
