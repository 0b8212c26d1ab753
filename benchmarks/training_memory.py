"""Peak memory and speed of GAN training on a real-size cohort: streamed from disk vs in memory.

Each path runs in a fresh child process: it builds the batch source (``stream``:
:class:`cfx.counterfactual.training_stream.StreamingCohortSource`, preparing the disk cache on the
first run; ``memory``: :class:`cfx.counterfactual.training_data.CohortSource`, every CT read into
memory), builds the GAN trainer as ``cfx train`` does (bundled MiniLM text encoder, default
channels) and times a few training steps. Peak RSS comes from ``resource.getrusage``: the
training process itself, and the largest of its children (the ``DataLoader`` workers; the
kernel reports the largest, not the sum).

Usage::

    python benchmarks/training_memory.py --cohort /tmp/cohort40 --subjects 40 \
        --shape 256,256,160 --steps 5

The cohort is written with ``cfx phantom`` (spacing 1.25 x 1.25 x 2 mm) when the folder does
not exist.

Measured on the shared 2-core CPU (other jobs running, so speeds are rough), 40 subjects at
256x256x160 (1.25 x 1.25 x 2 mm), patch 64^3, batch 2, 2 workers, 3 steps after one warm-up:

- stream: peak RSS 1.71 GB (workers 0.46 GB each at most), 0.14 steps/s, 0.04 s per batch read;
  preparing the cache the first time 92 s (2.3 s per subject), 0.1 s when cached
- memory: peak RSS 6.39 GB (grows with the cohort), 0.04 steps/s, 0.35 s per batch read (the
  in-memory reader searches a whole volume for its lung voxels on every row); reading 25 s
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def _child(mode: str, cohort: str, cache: str, patch: int, batch: int, steps: int,
           workers: int) -> dict:
    import numpy as np
    import torch

    from cfx.counterfactual import training
    from cfx.counterfactual.cohort import load_cohort
    from cfx.counterfactual.grid import ModelGrid
    from cfx.counterfactual.training_data import CohortSource
    from cfx.counterfactual.training_stream import StreamingCohortSource
    from cfx.models.architectures import implementation, look_up
    from cfx.models.text import HFTextEncoder

    torch.set_num_threads(1)
    start = time.perf_counter()
    loaded = load_cohort(cohort)
    shape = (patch,) * 3
    if mode == "memory":
        source = CohortSource(loaded, shape)
    else:
        spacing, orientation, fov = training._cohort_geometry(loaded)
        source = StreamingCohortSource(loaded, shape, ModelGrid(spacing, orientation, shape, fov,
                                                                (0.0, 0.0)),
                                       cache, workers=workers)
    prepared = time.perf_counter() - start
    architecture = look_up("gan")
    options = dict.fromkeys(("fusion", "l1_weight", "edit_weight", "region_weight",
                             "adversarial_weight", "p_uncond", "sampling_steps"))
    given = implementation(architecture).given_options(options)
    arguments = training._new_arguments(
        cohort, Path(cache) / "unused", architecture, steps, f"{patch}", batch, "minilm", None,
        "64", 0.2, None, 0, None, False, options, given)
    arguments["command"] = "benchmark"
    encoder = HFTextEncoder("minilm", max_length=training.TEXT_MAX_LENGTH)
    trainer, *_ = training._trainer(architecture, arguments, None, Path(cache), encoder, source,
                                    torch.device("cpu"))
    trainer.train_step()  # warm-up
    clock = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    step_s = (time.perf_counter() - clock) / steps
    rng = np.random.default_rng(1)
    clock = time.perf_counter()
    for _ in range(steps):
        source(rng, batch)
    batch_s = (time.perf_counter() - clock) / steps
    del trainer, source  # shuts the persistent workers down, so their peak is reported
    gc.collect()
    return {"mode": mode, "prepare_s": round(prepared, 1), "steps_per_s": round(1 / step_s, 3),
            "batch_read_s": round(batch_s, 3),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "worker_peak_rss_gb": round(
                resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", default="/tmp/cfx-training-memory/cohort")
    parser.add_argument("--cache", default="/tmp/cfx-training-memory/cache")
    parser.add_argument("--subjects", type=int, default=40)
    parser.add_argument("--shape", default="256,256,160")
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--modes", default="stream,memory")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        print(json.dumps(_child(options.child, options.cohort, options.cache, options.patch,
                                options.batch, options.steps, options.workers)))
        return
    if not Path(options.cohort).exists():
        subprocess.run(["cfx", "phantom", "--out", options.cohort, "--subjects",
                        str(options.subjects), "--shape", options.shape, "--spacing",
                        "1.25,1.25,2", "--quiet"], check=True)
    print(f"cohort {options.cohort}: {options.subjects} subjects of {options.shape}; patch "
          f"{options.patch}^3, batch {options.batch}, {options.steps} steps, "
          f"{options.workers} workers")
    for mode in options.modes.split(","):
        run = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--child", mode],
                             capture_output=True, text=True, check=True)
        print(json.dumps(json.loads(run.stdout.strip().splitlines()[-1])))


if __name__ == "__main__":
    main()
