"""How well a learned checkpoint recovers the phantom's planted effects on subjects it never saw.

Run from the repository root with the project's interpreter::

    python benchmarks/recovery.py MODEL [--subjects 12] [--shape 64] [--contrasts smoking,sex,...]
                                  [--guidance W] [--steps N] [--from-ct] [--strength S]
                                  [--keep-outside REGION] [--body-from-ct]
                                  [--device cpu] [--update-card]

``MODEL`` is a bundled model name or a checkpoint folder written by ``cfx train``, GAN or
diffusion: the generator is the one ``cfx sweep --model MODEL`` builds
(:func:`~cfx.counterfactual.sweep.learned.learned_generator`), so ``--guidance``, ``--steps``,
``--from-ct``, ``--strength`` and ``--keep-outside`` are the sweep's diffusion options, with
its defaults (the checkpoint's), its range checks and its one-line refusal for a GAN.

The held-out cohort is a phantom cohort drawn with master seed :data:`EVAL_SEED` (no training
run uses it) on ``--shape`` voxels per axis over the 320 mm field of view of training phantoms
(``PHANTOM_FOV_MM``): by default the grid the checkpoint was trained on when it was trained on
phantoms, 64³ otherwise. For each subject and contrast below, the checkpoint draws the subject's
complete record with the attribute set to each of the two values from one noise draw (as ``cfx
sweep`` does). With ``--from-ct`` the cohort is written as ``cfx phantom`` writes it (to a
temporary folder), and both values are drawn from the subject's own CT (the oracle's render of its
true record), noised to the same strength with the same noise. A model reading the body outline
takes it, as the sweep does, from the subject's CT when there is one (``--from-ct``, or
``--body-from-ct`` from noise: a cohort with CTs), else draws it around the lungs. The
difference (value − reference)
is compared with the oracle's exact difference map (``PhantomOracle.expected_difference``):

- lung-mean difference (HU), planted vs recovered (mean and SD over subjects), and the ratio;
- mean absolute difference outside the lungs (HU), which should be ~0 (nothing is planted there),
  and apart over the body (soft tissue, bone and airway: the body outline of the subject's true
  CT, :func:`~cfx.analysis.controls.body_outline`) and over the air outside it. The two
  partition the off-lung voxels, so unlike ``cfx stats``' control regions
  (:func:`~cfx.analysis.controls.control_labels`) no margin around the labels is left out;
- voxelwise Pearson correlation with the oracle map over the whole volume
  (``score_difference``);

and the wall time of generation per volume. ``sex`` has no planted effect: its lung-mean
difference should be ~0. Contrasts of attributes the model does not read are left out (an error
when named in ``--contrasts``). ``--update-card`` writes the table, with the options used, into
the checkpoint's ``README.md`` (section "Recovery of planted effects"; a diffusion checkpoint keeps
one subsection per mode, from noise and from the CT).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cfx.analysis.controls import body_outline
from cfx.counterfactual.cohort import Subject
from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.phantom import (
    PhantomOracle,
    PhantomSettings,
    make_truth,
    score_difference,
    write_phantom,
)
from cfx.counterfactual.phantom.anatomy import MIN_SIZE
from cfx.counterfactual.prompts import DEFAULT_TEMPLATE
from cfx.counterfactual.sweep.generators import Request, SamplingOptions
from cfx.counterfactual.sweep.learned import (
    LearnedGenerator,
    bundled_models,
    find_checkpoint,
    learned_generator,
)
from cfx.counterfactual.training import PHANTOM_FOV_MM
from cfx.counterfactual.volume import Volume

EVAL_SEED = 90_001  # master seed of the held-out phantom cohort
DEFAULT_SIDE = 64  # voxels per axis of the held-out grid for a model not trained on phantoms
CONTRASTS = (  # attribute, value, reference
    ("smoking", "yes", "no"),
    ("sex", "male", "female"),
    ("age", 80, 40),
    ("mortality", "dead", "alive"),
    ("diagnosis", "IPF", "CTD-ILD"),
)
_CARD_HEADING = "## Recovery of planted effects"
_MODE_HEADINGS = ("### From noise", "### From each subject's CT")  # diffusion: from_ct False, True


@dataclass(frozen=True)
class Recovery:
    """Figures of one contrast over the held-out subjects (HU unless stated).

    ``seconds`` is the wall time of generating its ``volumes`` (two per subject).
    """

    attribute: str
    value: object
    reference: object
    planted: float
    recovered: float
    recovered_sd: float
    off_lung: float
    correlation: float
    body: float = float("nan")
    air: float = float("nan")
    seconds: float = float("nan")
    volumes: int = 0

    @property
    def ratio(self) -> float:
        return self.recovered / self.planted if self.planted else float("nan")


def phantom_grid(shape: int | Sequence[int]) -> tuple[tuple[int, int, int],
                                                      tuple[float, float, float]]:
    """``(shape, spacing)`` of a held-out grid: ``shape`` voxels per axis (one number: a cube)
    over the training phantoms' field of view, spacing in mm."""
    shape = (int(shape),) * 3 if np.isscalar(shape) else tuple(int(n) for n in shape)
    return shape, tuple(PHANTOM_FOV_MM / n for n in shape)


def default_shape(config: Mapping) -> tuple[int, int, int]:
    """The grid a checkpoint was trained on if it was trained on phantoms, else 64³."""
    cohort = config.get("training_cohort") or {}
    if cohort.get("kind") == "phantom" and cohort.get("shape"):
        return tuple(int(n) for n in cohort["shape"])
    return (DEFAULT_SIDE,) * 3


def held_out(subjects: int, shape=(64, 64, 64), spacing=(5.0, 5.0, 5.0)) -> PhantomOracle:
    """The held-out phantom cohort (default effects), without any file."""
    return PhantomOracle.from_truth(make_truth(_settings(subjects, shape, spacing)),
                                    "held-out phantom")


def write_held_out(folder: str | Path, subjects: int, shape=(64, 64, 64),
                   spacing=(5.0, 5.0, 5.0)) -> tuple[PhantomOracle, dict[str, Path]]:
    """Write the held-out cohort as ``cfx phantom`` does into ``folder`` (new or empty).

    Returns
    -------
    oracle : PhantomOracle
        Read back from the folder's ``truth.json`` (the same as :func:`held_out`).
    cts : dict of str to Path
        Subject id -> its CT (``ct/<id>.nii.gz``, HU).
    """
    folder = write_phantom(folder, _settings(subjects, shape, spacing), quiet=True)
    oracle = PhantomOracle.from_cohort(folder)
    return oracle, {sid: folder / "ct" / f"{sid}.nii.gz" for sid in oracle.subject_ids}


def _settings(subjects: int, shape, spacing) -> PhantomSettings:
    return PhantomSettings(subjects=subjects, shape=tuple(shape), spacing=tuple(spacing),
                           seed=EVAL_SEED)


def evaluate(model: LearnedGenerator, oracle: PhantomOracle, contrasts=CONTRASTS,
             cts: Mapping[str, Path] | None = None) -> list[Recovery]:
    """Recovery figures of ``model`` on every subject of ``oracle`` for each contrast.

    ``cts`` (subject id -> CT file) gives each subject its CT, which a ``--from-ct`` diffusion
    generator starts from; other generators ignore it.
    """
    rows = {c: [] for c in contrasts}
    seconds = dict.fromkeys(contrasts, 0.0)
    affine = oracle.affine()
    for index, sid in enumerate(oracle.subject_ids):
        labels = oracle.labels(sid)
        lung = oracle.lung_mask(sid)
        body = body_outline(oracle.render(sid), labels) & ~lung
        air = ~body & ~lung
        mask = Volume(labels, affine, sid)
        truth = oracle.truth(sid)
        subject = Subject(sid, Path(sid), None if cts is None else Path(cts[sid]), truth)
        for contrast in contrasts:
            attribute, value, reference = contrast
            requests = [Request.build(v, {**truth, attribute: v}, DEFAULT_TEMPLATE,
                                      source=truth)
                        for v in (value, reference)]
            start = time.perf_counter()
            a, b = model.generate(subject, mask, attribute, requests, seed=1000 + index)
            seconds[contrast] += time.perf_counter() - start
            predicted = a - b
            expected = oracle.expected_difference(sid, attribute, value, reference)
            score = score_difference(predicted, expected, lung)
            rows[contrast].append(
                (score.region_mean_expected, score.region_mean_predicted,
                 float(np.abs(predicted[~lung]).mean()), score.correlation,
                 float(np.abs(predicted[body]).mean()), float(np.abs(predicted[air]).mean())))
    out = []
    for (attribute, value, reference), values in rows.items():
        array = np.array(values, dtype=np.float64)
        correlation = (float(np.nanmean(array[:, 3])) if np.isfinite(array[:, 3]).any()
                       else float("nan"))
        out.append(Recovery(attribute, value, reference, float(array[:, 0].mean()),
                            float(array[:, 1].mean()),
                            float(array[:, 1].std(ddof=1)) if len(array) > 1 else 0.0,
                            float(array[:, 2].mean()), correlation, float(array[:, 4].mean()),
                            float(array[:, 5].mean()), seconds[(attribute, value, reference)],
                            2 * len(array)))
    return out


def describe_sampling(model: LearnedGenerator) -> str:
    """How ``model`` draws its volumes, in words (the options a table was made with)."""
    sampling = getattr(model, "sampling", None)
    if sampling is None:
        return f"a GAN (`{model.architecture.checkpoint}`): one forward pass per volume"
    where = (f"from each subject's CT noised to strength {sampling['strength']:g}"
             if sampling["from_ct"] else "from noise")
    if "keep_outside" in sampling:
        where += (f", every voxel outside the {sampling['keep_outside']} held to the CT (off it "
                  "the change is 0 by construction)")
    return (f"diffusion (`{model.architecture.checkpoint}`): {sampling['steps']} DDIM steps "
            f"(eta {sampling['eta']:g}), guidance {sampling['guidance']:g}, {where}")


def table(results: list[Recovery], oracle: PhantomOracle, sampling: str | None = None,
          command: str | None = None) -> str:
    """Markdown text of the figures: the options (``sampling``, ``command``), the cohort, the
    table and the generation time per volume."""
    grid = "x".join(map(str, oracle.shape))
    lines = []
    if sampling is not None:
        lines.append(f"Sampling: {sampling}.")
    if command is not None:
        lines.append(f"Command: `{command}`.")
    lines += [f"Held-out phantom subjects: {len(oracle.subject_ids)} (seed {EVAL_SEED}, {grid} "
              f"voxels of {oracle.spacing[0]:g} mm), one noise draw per subject shared by both "
              "values.", "",
              "| contrast | planted lung-mean Δ (HU) | recovered (mean ± SD) | ratio | "
              "mean abs Δ off-lung (HU) | body | air outside | voxelwise r |",
              "|---|---|---|---|---|---|---|---|"]
    for r in results:
        ratio = "—" if not r.planted else f"{r.ratio:.2f}"
        correlation = "—" if np.isnan(r.correlation) else f"{r.correlation:.2f}"
        lines.append(f"| {r.attribute} {r.value} − {r.reference} | {r.planted:+.1f} | "
                     f"{r.recovered:+.1f} ± {r.recovered_sd:.1f} | {ratio} | {r.off_lung:.1f} | "
                     f"{r.body:.1f} | {r.air:.1f} | {correlation} |")
    volumes = sum(r.volumes for r in results)
    if volumes:
        seconds = sum(r.seconds for r in results)
        lines += ["", f"Generation: {volumes} volumes in {seconds:.1f} s, "
                      f"{seconds / volumes:.2f} s per volume."]
    return "\n".join(lines)


def _update_card(folder: Path, text: str, heading: str | None = None) -> None:
    """Write ``text`` as the card's recovery section, or as its subsection ``heading`` (keeping
    the other subsections)."""
    card = folder / "README.md"
    head, _, section = card.read_text(encoding="utf-8").partition(_CARD_HEADING)
    if heading is not None:
        parts = {}
        for chunk in re.split(r"(?m)^(?=### )", section):
            if chunk.startswith("### "):
                parts[chunk.split("\n", 1)[0].strip()] = chunk.strip()
        parts[heading] = f"{heading}\n{text}"
        order = [h for h in _MODE_HEADINGS if h in parts] + \
                [h for h in parts if h not in _MODE_HEADINGS]
        text = "\n\n".join(parts[h] for h in order)
    card.write_text(f"{head.rstrip()}\n\n{_CARD_HEADING}\n{text}\n", encoding="utf-8")


def _shape(text: str) -> tuple[int, int, int]:
    try:
        values = tuple(int(p) for p in text.split(","))
    except ValueError:
        values = ()
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or min(values) < MIN_SIZE:
        raise argparse.ArgumentTypeError(f"got {text!r}; give N or X,Y,Z voxels, integers >= "
                                         f"{MIN_SIZE}")
    return values


def _contrasts(text: str) -> tuple[tuple, ...]:
    known = {c[0]: c for c in CONTRASTS}
    names = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"got {text!r}; give attributes among "
                                         f"{', '.join(known)}, comma-separated")
    return tuple(known[n] for n in dict.fromkeys(names))


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"got {text!r}; give an integer >= 1")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="bundled model name or checkpoint folder (GAN or diffusion)")
    parser.add_argument("--subjects", type=_at_least_one, default=12,
                        help="held-out phantom subjects (default 12)")
    parser.add_argument("--shape", type=_shape, metavar="N|X,Y,Z",
                        help="held-out grid over 320 mm (default: the checkpoint's training "
                             "phantom grid, else 64)")
    parser.add_argument("--contrasts", type=_contrasts, metavar="A,B,...",
                        help="attributes to contrast (default: every one the model reads), "
                             f"among {', '.join(c[0] for c in CONTRASTS)}")
    parser.add_argument("--guidance", type=float, metavar="W",
                        help="diffusion: classifier-free guidance weight (default the "
                             "checkpoint's)")
    parser.add_argument("--steps", type=int, metavar="N",
                        help="diffusion: DDIM steps (default the checkpoint's)")
    parser.add_argument("--from-ct", action="store_true",
                        help="diffusion: edit each held-out subject's CT instead of sampling "
                             "from noise")
    parser.add_argument("--strength", type=float, metavar="S",
                        help="with --from-ct: how far the CT is noised, in (0, 1] (default 0.6)")
    parser.add_argument("--keep-outside", metavar="REGION",
                        help="with --from-ct: hold every voxel outside REGION to the CT")
    parser.add_argument("--body-from-ct", action="store_true",
                        help="from noise, give each held-out subject its CT too, so a model "
                             "reading the body takes it from the CT (as a sweep over a cohort "
                             "with CTs) instead of drawing it around the lungs")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where the model runs (default cpu)")
    parser.add_argument("--update-card", action="store_true",
                        help="write the table into the checkpoint's README.md")
    return parser


def _command(args: argparse.Namespace, shape: tuple[int, int, int],
             contrasts: Sequence[tuple], model: LearnedGenerator) -> str:
    """The command line that reproduces a table (the resolved options)."""
    words = ["python", "benchmarks/recovery.py", args.model, "--subjects", str(args.subjects),
             "--shape", ",".join(map(str, shape)) if len(set(shape)) > 1 else str(shape[0]),
             "--contrasts", ",".join(c[0] for c in contrasts)]
    sampling = getattr(model, "sampling", None)
    if sampling is not None:
        words += ["--steps", str(sampling["steps"]), "--guidance", f"{sampling['guidance']:g}"]
        if sampling["from_ct"]:
            words += ["--from-ct", "--strength", f"{sampling['strength']:g}"]
        if "keep_outside" in sampling:
            words += ["--keep-outside", sampling["keep_outside"]]
    if args.body_from_ct:
        words.append("--body-from-ct")
    return " ".join(words)


def run(args: argparse.Namespace) -> tuple[str, LearnedGenerator]:
    """The table of parsed arguments ``args``, and the generator that drew it.

    Raises
    ------
    UserInputError
        Unknown model, sampling options a GAN does not take or out of range, or a contrast of
        an attribute the model does not read (one line, as ``cfx sweep`` words it).
    """
    folder = find_checkpoint(args.model)
    if folder is None:
        raise UserInputError(f"MODEL: unknown model {args.model!r}; give a bundled model "
                             f"({', '.join(bundled_models()) or 'none'}) or a checkpoint "
                             "folder made by cfx train")
    # 1. the sweep's generator, with the sweep's checks of the sampling options
    model = learned_generator(folder, SamplingOptions(args.guidance, args.steps, args.from_ct,
                                                      args.strength,
                                                      keep_outside=args.keep_outside))
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserInputError("--device: cuda asked for but no CUDA device is visible; use "
                             "--device cpu")
    model.configure(device=args.device)
    # 2. the contrasts the model reads
    fields = model.model.fields
    contrasts = args.contrasts or tuple(c for c in CONTRASTS if c[0] in fields)
    unread = [c[0] for c in contrasts if c[0] not in fields]
    if unread:
        raise UserInputError(f"--contrasts: model {model.name} was not trained to read "
                             f"{', '.join(unread)} (its fields: {', '.join(fields)})")
    skipped = [c[0] for c in CONTRASTS if c[0] not in fields]
    if args.contrasts is None and skipped:
        print(f"left out {', '.join(skipped)}: model {model.name} does not read it",
              file=sys.stderr)
    # 3. the held-out cohort, written with its CTs for --from-ct and --body-from-ct
    shape, spacing = phantom_grid(args.shape or default_shape(model.config))
    with_cts = bool(getattr(model, "sampling", {}).get("from_ct")) or args.body_from_ct
    with tempfile.TemporaryDirectory(prefix="cfx-recovery-") as scratch:
        if with_cts:
            oracle, cts = write_held_out(Path(scratch) / "held-out", args.subjects, shape,
                                         spacing)
        else:
            oracle, cts = held_out(args.subjects, shape, spacing), None
        # 4. generate and score
        results = evaluate(model, oracle, contrasts, cts)
    threads = torch.get_num_threads()
    threads = f", {threads} torch thread{'s' * (threads > 1)}" if args.device == "cpu" else ""
    body = ("" if model.body is None else "; the body label from each subject's CT" if with_cts
            else "; the body label drawn around the lungs (no CT)")
    text = table(results, oracle, f"{describe_sampling(model)}{body}; on {args.device}{threads}",
                 _command(args, shape, contrasts, model))
    return text, model


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    start = time.perf_counter()
    try:
        text, model = run(args)
    except UserInputError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(text)
    print(f"\n({time.perf_counter() - start:.0f} s)")
    if args.update_card:
        sampling = getattr(model, "sampling", None)
        heading = None if sampling is None else _MODE_HEADINGS[bool(sampling["from_ct"])]
        _update_card(model.folder, text, heading)
    return 0


if __name__ == "__main__":
    sys.exit(main())
