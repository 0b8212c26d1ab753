"""Peak memory and time of whole-volume sweeps at real CT sizes, beside the network's own cost.

Each case is one subject swept over two values of ``smoking`` at one seed (``cfx sweep``'s
engine, :func:`cfx.counterfactual.sweep.engine.run_sweep`: read and check the mask and CT, fit them
to the model's training grid, generate, resample the outputs back onto the subject's grid, write
the CTs and the difference map), run in a child process of its own so that cases do not share
a peak. The subject is the bundled demo cohort's P000 (mask nearest-neighbour, CT linearly)
resampled onto:

- ``512``: 512 x 512 x 320 voxels of 0.7 x 0.7 x 1 mm (358 x 358 x 320 mm), a real chest CT;
- ``256``: 256 x 256 x 128 voxels of 1.4 x 1.4 x 2.5 mm (the same field of view, coarser).

Models are the bundled ones (``cfx models list``): ``phantom-gan-64`` (5 mm grid, windows of
64³) and ``phantom-diffusion-32`` from each subject's CT (``--from-ct``, 10 mm grid, windows of
64³) with ``--steps`` sampler steps at the default strength 0.6. Printed per case:

- peak RSS of the child process (``resource.getrusage(RUSAGE_SELF).ru_maxrss``), and its RSS
  after imports and loading the model (before the sweep);
- seconds per generated volume of the sweep (wall clock, two volumes per case);
- the pure network forward over the same windows: the windows the sweep ran (counted by MONAI's
  ``sliding_window_inference`` with a free predictor on the model grid) times the seconds of
  one forward pass of one window (median of three), per volume.

``--quick`` runs a 32 x 32 x 16 subject only (a smoke test, seconds).

Usage::

    python benchmarks/memory.py [--sizes 256,512] [--models gan,diffusion] [--steps 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZES = {  # name -> (shape, spacing in mm)
    "512": ((512, 512, 320), (0.7, 0.7, 1.0)),
    "256": ((256, 256, 128), (1.4, 1.4, 2.5)),
    "quick": ((32, 32, 16), (11.2, 11.2, 20.0)),
}
MODELS = {"gan": "phantom-gan-64", "diffusion": "phantom-diffusion-32"}
_SUBJECT = "P000"


def _rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_cohort(folder: Path, size: str) -> Path:
    """A one-subject cohort (mask, CT, clinical.csv) on the grid of ``size``, from the demo
    cohort's first subject; returns the cohort folder."""
    from cfx.counterfactual.data import DEMO_COHORT
    from cfx.counterfactual.grid import resample
    from cfx.counterfactual.volume import read_labels, read_volume, write_volume

    shape, spacing = SIZES[size]
    mask = read_labels(DEMO_COHORT / "masks" / f"{_SUBJECT}.nii.gz")
    ct = read_volume(DEMO_COHORT / "ct" / f"{_SUBJECT}.nii.gz")
    centre = mask.affine[:3, :3] @ ((np.asarray(mask.shape) - 1) / 2) + mask.affine[:3, 3]
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = centre - np.asarray(spacing) * (np.asarray(shape) - 1) / 2
    root = folder / f"cohort-{size}"
    write_volume(root / "masks" / f"{_SUBJECT}.nii.gz",
                 resample(mask.data, mask.affine, shape, affine, "nearest"), affine)
    write_volume(root / "ct" / f"{_SUBJECT}.nii.gz",
                 resample(ct.data, ct.affine, shape, affine, "linear"), affine,
                 compresslevel=1)
    (root / "clinical.csv").write_text(f"subject,age,smoking\n{_SUBJECT},60,no\n")
    return root


def _forward_cost(generator, grid: tuple[int, ...]) -> tuple[int, float]:
    """The windows of one volume on the model grid ``grid`` (every sampler step counted), and
    the seconds of one forward pass of one window (median of three)."""
    import torch
    from monai.inferers import sliding_window_inference

    from cfx.models.samplers import make_sampler

    model, gan = generator.model, generator.architecture.checkpoint == "cond_gan3d"
    # the windows cfx.models.inference / cfx.models.sampling run: the GAN's roi (a smaller volume is
    # padded to it), the diffusion roi capped at the grid rounded up to the network's multiple
    window = tuple(generator.roi) if gan else tuple(
        min(r, -(-n // model.multiple) * model.multiple)
        for r, n in zip(generator.roi, grid, strict=True))
    calls = []

    def count(batch):
        calls.append(batch.shape[0])
        return batch

    sliding_window_inference(torch.zeros((1, 1, *grid)), window, 1, count,
                             overlap=0.5 if gan else 0.25)
    steps = 1
    if not gan:
        sampler = make_sampler(generator.sampler, model.noise_schedule)
        sampler.set_timesteps(generator.sampling["steps"], generator.sampling["strength"])
        steps = len(sampler.timesteps)
    condition = generator.last_condition
    labels = torch.zeros((1, model.config["label_channels"], *window))
    labels[:, 0] = 1
    noise = torch.randn((1, 1, *window))
    seconds = []
    with torch.no_grad():
        for _ in range(3):
            start = time.perf_counter()
            if gan:
                model(labels, noise, condition, torch.randn((1, model.noise_dims)))
            else:
                model(noise, labels, torch.full((1,), 500, dtype=torch.long), condition)
            seconds.append(time.perf_counter() - start)
    return len(calls) * steps, statistics.median(seconds)


class _Recording:
    """The sweep's generator, remembering the model grid and one record it generated."""

    def __init__(self, inner):
        self.__dict__["_inner"] = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def generate(self, subject, mask, attribute, requests, seed, **extra):
        inner = self._inner
        inner.last_grid = tuple(mask.shape)
        inner.last_condition = inner._records()(requests[0].phrases)
        return inner.generate(subject, mask, attribute, requests, seed, **extra)


def run_case(cohort: Path, kind: str, steps: int, out: Path) -> dict:
    """One case in this process: the sweep, then the network's own cost; a JSON-able dict."""
    import torch

    from cfx.counterfactual.cohort import load_cohort
    from cfx.counterfactual.sweep.engine import SweepConfig, run_sweep
    from cfx.counterfactual.sweep.generators import SamplingOptions, resolve_generator

    torch.set_num_threads(1)
    table = load_cohort(cohort)
    sampling = (SamplingOptions(steps=steps, from_ct=True) if kind == "diffusion"
                else SamplingOptions())
    generator = resolve_generator(MODELS[kind], table, sampling)
    generator._records()
    loaded = _rss_mb()
    recording = _Recording(generator)
    config = SweepConfig(attribute="smoking", values=("no", "yes"), seeds=(0,), out=out,
                         quiet=True, device="cpu")
    start = time.perf_counter()
    result = run_sweep(config, table, recording)
    seconds = time.perf_counter() - start
    peak = _rss_mb()
    windows, forward = _forward_cost(generator, generator.last_grid)
    return {"peak_rss_mb": peak, "loaded_rss_mb": loaded,
            "seconds_per_volume": seconds / result.generated, "windows_per_volume": windows,
            "forward_seconds_per_volume": windows * forward,
            "model_grid": list(generator.last_grid)}


def _child(args: argparse.Namespace) -> None:
    case = json.loads(args.case)
    report = run_case(Path(case["cohort"]), case["kind"], case["steps"], Path(case["out"]))
    print(json.dumps(report))


def main(argv: list[str] | None = None) -> list[dict]:
    """Run every size x model case, each in a child process; print and return the rows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,512", help="comma-separated: 256, 512")
    parser.add_argument("--models", default="gan,diffusion", help="comma-separated: gan, diffusion")
    parser.add_argument("--steps", type=int, default=5,
                        help="diffusion sampler steps of a full run (from the CT at strength "
                             "0.6: 60 %% of them run)")
    parser.add_argument("--quick", action="store_true", help="a 32 x 32 x 16 subject only")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case is not None:
        _child(args)
        return []
    sizes = ["quick"] if args.quick else args.sizes.split(",")
    rows = []
    print(f"{'size':>16} {'model':>22} {'peak RSS':>10} {'loaded':>8} {'s/volume':>9} "
          f"{'windows':>8} {'forward s':>10}  model grid")
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            cohort = make_cohort(Path(tmp), size)
            for kind in args.models.split(","):
                case = {"cohort": str(cohort), "kind": kind, "steps": args.steps,
                        "out": str(Path(tmp) / f"run-{size}-{kind}")}
                done = subprocess.run([sys.executable, __file__, "--case", json.dumps(case)],
                                      capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    raise RuntimeError(f"case {size} {kind} failed:\n{done.stderr}")
                row = {"size": size, "model": MODELS[kind],
                       **json.loads(done.stdout.strip().splitlines()[-1])}
                rows.append(row)
                shape = "x".join(map(str, SIZES[size][0]))
                print(f"{shape:>16} {row['model']:>22} {row['peak_rss_mb']:>7.0f} MB "
                      f"{row['loaded_rss_mb']:>5.0f} MB {row['seconds_per_volume']:>9.2f} "
                      f"{row['windows_per_volume']:>8} {row['forward_seconds_per_volume']:>10.2f}"
                      f"  {'x'.join(map(str, row['model_grid']))}", flush=True)
    return rows


if __name__ == "__main__":
    main()
