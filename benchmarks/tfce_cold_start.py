"""Where a fresh process spends its time before its first TFCE map: imports, compiling, the call.

Each case runs in its own fresh process with ``NUMBA_CACHE_DIR`` pointed at a folder of its own,
on the t-map of ``benchmarks/voxelwise_end_to_end.py`` (40 subjects, 50^3, 11,710 lung voxels):

- ``cold, compiled``: empty cache, the kernel forced (``cfx.analysis.tfce._LABEL_BUDGET = 0``): what
  every first call cost before small cold calls were labelled;
- ``cold``: empty cache, as shipped: one map is labelled with scipy, nothing compiles;
- ``cached``: the cache written by a process before it (the kernel loads).

Per case: ``import numpy``, ``import cfx.analysis.tfce`` (numba and scipy), numba's compiler start
(only when a case compiles or loads: timed apart by asking for the kernel's signature first),
the first ``tfce`` call, a second call, and the process's total from its start. Target (issue 21):
the first map of a cold process under 1.0 s. Run: ``python benchmarks/tfce_cold_start.py
[--repeats N]``; the median of N runs per case is printed (default 3).

Measured on the 2-core CPU shared with other jobs (load 4.6-6), medians of 3, seconds:

    case              numpy  cfx.analysis.tfce  compiler  1st call  2nd call  process
    cold, compiled    0.12       0.50         0.28      1.30      0.00      2.64
    cold              0.16       0.63          -        0.32      0.25      1.48
    cached            0.18       0.75         0.36      0.02      0.00      1.36

Before (every cold first call compiled): 0.28 s of numba starting its compiler (``refresh`` of its
target context: importing its implementations, initialising its runtime; a cached kernel pays it
too) + 1.30 s compiling = 1.6 s. After: the map is labelled in 0.32 s and nothing compiles.
``import cfx.analysis.tfce`` (0.5-0.75 s under this load) is mostly numba and scipy being imported.
The same load, ``voxelwise_end_to_end.py``'s cold children: one map 2.6-3.1 s before, 0.30-0.37 s
after; 100 flips end to end 3.3 s before, 2.7-2.9 s after (that run compiles).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["CASES", "main"]

CASES = ("cold, compiled", "cold", "cached")

_CHILD = """
import json, sys, time
start = float(sys.argv[3])
t0 = time.perf_counter()
import numpy as np
t1 = time.perf_counter()
import cfx.analysis.tfce as tfce_module
from cfx.analysis import _tfce_kernel
t2 = time.perf_counter()
if sys.argv[2] == "forced":
    tfce_module._LABEL_BUDGET = 0
stat_map = np.load(sys.argv[1])
compiler = None
if sys.argv[2] == "forced" or _tfce_kernel.kernel_ready():
    _tfce_kernel._sweep.targetctx.refresh()  # numba starting its compiler, timed apart
    compiler = time.perf_counter() - t2
t3 = time.perf_counter()
tfce_module.tfce(stat_map)
t4 = time.perf_counter()
tfce_module.tfce(stat_map)
t5 = time.perf_counter()
print(json.dumps({"numpy": t1 - t0, "cfx.analysis.tfce": t2 - t1, "compiler": compiler,
                  "1st call": t4 - t3, "2nd call": t5 - t4, "process": time.time() - start}))
"""


def _t_map():
    """The lung-masked t-map of the end-to-end benchmark's data, shape (50, 50, 50)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from voxelwise_end_to_end import FULL, _t_map, lung_data

    data, mask = lung_data(FULL.n_subjects, FULL.shape)
    return _t_map(data, mask)


def _run(case, stat_map_path, cache):
    mode = "forced" if case == "cold, compiled" else "shipped"
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    printed = subprocess.run([sys.executable, "-c", _CHILD, str(stat_map_path), mode,
                              repr(time.time())], env=env, check=True, capture_output=True,
                             text=True).stdout
    return json.loads(printed)


def main(argv=None) -> dict:
    """Time every case ``--repeats`` times; print and return the medians per phase."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    medians = {}
    with tempfile.TemporaryDirectory() as folder:
        stat_map_path = Path(folder) / "t.npy"
        np.save(stat_map_path, _t_map())
        runs = {case: [] for case in CASES}
        for repeat in range(args.repeats):
            for case in CASES:
                cache = Path(folder) / f"cache-{repeat}-{case == 'cold, compiled'}"
                if case == "cached":  # the cache the compiling process of this repeat wrote
                    cache = Path(folder) / f"cache-{repeat}-True"
                runs[case].append(_run(case, stat_map_path, cache))
    phases = list(runs[CASES[0]][0])
    print(f"{'case':16s} " + " ".join(f"{p:>13s}" for p in phases))
    for case, results in runs.items():
        medians[case] = {p: (None if results[0][p] is None
                             else statistics.median(r[p] for r in results)) for p in phases}
        print(f"{case:16s} " + " ".join("            -" if v is None else f"{v:13.2f}"
                                        for v in medians[case].values()))
    first = medians["cold"]["1st call"]
    print(f"first map in a cold process: {first:.2f} s (target < 1.0 s: "
          f"{'met' if first < 1.0 else 'NOT met'}); forcing the compile: "
          f"{medians['cold, compiled']['1st call']:.2f} s + "
          f"{medians['cold, compiled']['compiler']:.2f} s compiler start")
    return medians


if __name__ == "__main__":
    main()
