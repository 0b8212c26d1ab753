"""``cfx sweep`` overhead against the bare model, and the peak memory of a whole-volume sweep.

Run from the repository root with the project's interpreter::

    python benchmarks/sweep_overhead.py [--model phantom-oracle] [--cohort DIR] [--seeds 0,1,2]

1. Overhead: in one process, the bare model (``generator.generate`` on every subject × seed
   group, masks already in memory) and ``run_sweep`` of the same groups into a fresh folder
   (mask reading, difference maps, NIfTI writing, checksums, manifest) run alternately
   ``--repeats`` times; the fastest of each gives wall seconds per volume and their ratio
   (target <= 1.15), and the same for CPU seconds of all threads (the sweep writes files in
   threads while the model runs, so on a busy machine wall time shows less of that overlap).
   ``--model`` is any name ``resolve_generator`` knows, so a learned model plugs in by name;
   the default cohort is the bundled demo cohort.
2. Peak memory (measured first): a child process (the same interpreter) sweeps one
   256×256×128 phantom subject (two values, one seed, on CPU) and reports its peak resident
   memory (``resource.getrusage``), beside a child that only imports cfx.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_BIG = ("--subjects", "1", "--shape", "256,256,128", "--spacing", "1.5,1.5,2.5")


def _overhead(model: str, cohort_path: Path, seeds: tuple[int, ...], repeats: int) -> dict:
    from cfx.counterfactual.cohort import load_cohort
    from cfx.counterfactual.prompts import DEFAULT_TEMPLATE
    from cfx.counterfactual.sweep.engine import SweepConfig, _plan, noise_seed, run_sweep
    from cfx.counterfactual.sweep.generators import resolve_generator
    from cfx.counterfactual.volume import read_labels

    cohort = load_cohort(cohort_path)
    generator = resolve_generator(model, cohort)
    with tempfile.TemporaryDirectory() as tmp:
        def config(k):
            return SweepConfig("smoking", ("yes", "no"), seeds, Path(tmp) / f"run{k}", quiet=True)

        groups = _plan(config(0), cohort, DEFAULT_TEMPLATE)  # the sweep's own groups
        masks = {s.id: read_labels(s.mask) for s in cohort}
        volumes = sum(len(g.requests) for g in groups)
        bare, sweep = [], []
        for k in range(repeats):
            start = (time.perf_counter(), time.process_time())
            for g in groups:
                generator.generate(g.subject, masks[g.subject.id], "smoking", g.requests,
                                   noise_seed(g.subject.id, g.seed))
            bare.append(_per_volume(start, volumes))
            start = (time.perf_counter(), time.process_time())
            run_sweep(config(k), cohort, generator)
            sweep.append(_per_volume(start, volumes))
    wall, cpu = (min(s[i] for s in sweep) / min(b[i] for b in bare) for i in (0, 1))
    return {"model": model, "volumes": volumes, "bare": min(bare), "sweep": min(sweep),
            "ratio": wall, "cpu_ratio": cpu}


def _per_volume(start: tuple[float, float], volumes: int) -> tuple[float, float]:
    """Wall and CPU (all threads) seconds per volume since ``start``."""
    return ((time.perf_counter() - start[0]) / volumes,
            (time.process_time() - start[1]) / volumes)


def _child(case: str, folder: str) -> None:
    """Run one memory case in this process and print its figures as JSON."""
    start = time.perf_counter()
    from cfx.counterfactual.cohort import load_cohort
    from cfx.counterfactual.sweep.engine import SweepConfig, run_sweep
    from cfx.counterfactual.sweep.generators import resolve_generator

    if case == "phantom":
        from cfx.counterfactual.cli import app

        app(["phantom", "--out", folder, "--quiet", *_BIG], standalone_mode=False)
    if case == "sweep":
        cohort = load_cohort(folder)
        run_sweep(SweepConfig("smoking", ("yes", "no"), (0,), Path(folder) / "run", quiet=True,
                              device="cpu"), cohort, resolve_generator("phantom-oracle", cohort))
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": time.perf_counter() - start, "peak_gib": peak_kib / 2**20}))


def _run_child(case: str, folder: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", case, folder],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _memory() -> dict:
    """Children only: a child's peak RSS starts from its parent's at fork, so the parent stays
    small (standard library only) until these have run."""
    with tempfile.TemporaryDirectory() as tmp:
        cohort = str(Path(tmp) / "cohort")
        _run_child("phantom", cohort)
        return {"imports": _run_child("imports", cohort), "sweep": _run_child("sweep", cohort)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="phantom-oracle")
    parser.add_argument("--cohort", type=Path, default=None,
                        help="default: the bundled demo cohort")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("CASE", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    memory = _memory()
    from cfx.counterfactual.data import DEMO_COHORT

    seeds = tuple(int(s) for s in args.seeds.split(","))
    figures = _overhead(args.model, args.cohort or DEMO_COHORT, seeds, args.repeats)
    bare, sweep = figures["bare"], figures["sweep"]
    print(f"overhead ({figures['model']}, {figures['volumes']} volumes, best of "
          f"{args.repeats}): bare {bare[0] * 1e3:.1f} ms/volume wall ({bare[1] * 1e3:.1f} CPU), "
          f"cfx sweep {sweep[0] * 1e3:.1f} ms/volume wall ({sweep[1] * 1e3:.1f} CPU); ratio "
          f"{figures['ratio']:.2f} wall (target <= 1.15), {figures['cpu_ratio']:.2f} CPU; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"peak memory, 256x256x128 sweep (2 values, 1 seed, CPU, phantom-oracle): "
          f"{memory['sweep']['peak_gib']:.2f} GiB in {memory['sweep']['seconds']:.1f} s "
          f"(imports alone {memory['imports']['peak_gib']:.2f} GiB)")


if __name__ == "__main__":
    main()
