"""Where the sweep's groups run: in this process, or as Ray tasks.

A *group* is one subject at one sweep seed: every value of the attribute generated from one noise
draw, its CTs and difference maps written atomically. Both executors run :func:`run_groups` and
hand back the sha256 of every file they wrote; the engine alone holds the run lock and writes the
manifest, so the run folder means the same whichever executor filled it.

Ray ships the generator to its tasks by pickling it. A generator that is costly to pickle (a
network on a GPU) should define ``__reduce__`` so that it is rebuilt inside the task from what
names it (model name or checkpoint folder, cohort); each task then calls its optional
``configure(device=..., batch_size=...)`` with the device it sees.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cfx.counterfactual.cohort import Subject
from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.labels import LabelVocabulary
from cfx.counterfactual.sweep.generators import CounterfactualGenerator, Request
from cfx.counterfactual.sweep.manifest import sha256
from cfx.counterfactual.volume import read_labels, write_volume

__all__ = ["GroupJob", "Work", "run_groups", "compresslevel", "resolve_device", "configure",
           "LocalExecutor", "RayExecutor", "resolve_executor", "EXECUTORS", "DEVICES"]

EXECUTORS = ("local", "ray")
DEVICES = ("auto", "cpu", "cuda")
_SLAB = 16  # slices per step of compresslevel's check


@dataclass(frozen=True)
class GroupJob:
    """One subject and seed to generate.

    Attributes
    ----------
    subject : Subject
    noise_seed : int
        The 64-bit seed every value of the group shares.
    requests : tuple of Request
        One per value, in the sweep's value order.
    cts : tuple of str
        Run-relative CT path of each request.
    diffs : tuple of (int, str)
        Index of a non-reference value and the run-relative path of its difference map.
    reference : int
        Index of the reference value in ``requests``.
    write : frozenset of str
        The paths to (re)write; the others are intact already.
    """

    subject: Subject
    noise_seed: int
    requests: tuple[Request, ...]
    cts: tuple[str, ...]
    diffs: tuple[tuple[int, str], ...]
    reference: int
    write: frozenset[str]


@dataclass(frozen=True)
class Work:
    """What every group of one sweep shares."""

    out: Path
    attribute: str
    labels: LabelVocabulary
    device: str = "auto"
    batch_size: int = 1


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when a CUDA GPU is visible, else ``"cpu"``; ``"cuda"`` without
    one is a user error."""
    if device not in DEVICES:
        raise UserInputError(f"--device: {device!r} is not one of {', '.join(DEVICES)}")
    if device == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        raise UserInputError("--device cuda: no CUDA GPU is visible here; use --device auto or cpu")
    return "cpu"


def configure(generator: CounterfactualGenerator, device: str, batch_size: int) -> None:
    """Call the generator's optional ``configure(device=..., batch_size=...)``; the device is
    resolved only for generators that have one, so others never import torch."""
    method = getattr(generator, "configure", None)
    if method is not None:
        method(device=resolve_device(device), batch_size=batch_size)


def compresslevel(volume: np.ndarray) -> int:
    """gzip level for a sweep output: 1 (deflate) for volumes that are mostly zero (difference
    maps where the values agree) or integral (stored as int16), 0 (stored) for noisy float HU,
    which deflate shrinks by ~10 % for ~10 times the time of storing them. Checked slab by slab
    along the last axis, so no whole-volume temporary is made."""
    if np.count_nonzero(volume) <= volume.size * 3 // 4:
        return 1
    slabs = range(0, volume.shape[-1], _SLAB)
    return 1 if all(np.array_equal(volume[..., k:k + _SLAB], np.rint(volume[..., k:k + _SLAB]))
                    for k in slabs) else 0


def _write(path: Path, volume: np.ndarray, affine: np.ndarray) -> str:
    write_volume(path, volume, affine, compresslevel=compresslevel(volume))
    return sha256(path)


def _write_difference(path: Path, value: np.ndarray, reference: np.ndarray,
                      affine: np.ndarray) -> str:
    """Write ``value - reference``, computed only when a writer is free for it."""
    return _write(path, value - reference, affine)


def run_groups(generator: CounterfactualGenerator, jobs: Sequence[GroupJob], work: Work,
               writers: int = 2) -> Iterator[tuple[GroupJob, dict[str, str]]]:
    """Generate ``jobs`` in order while ``writers`` threads compress and write the previous
    group's files (zlib releases the GIL, so writing overlaps the next forward pass).

    Two groups' volumes are held at most, and a group's only until its files are written: each
    difference map is computed when a writer takes it up, and the CTs are released as soon as
    their writes (and those of the maps made from them) finish.

    Yields
    ------
    (GroupJob, dict of str to str)
        Each job, in order, once its files in ``job.write`` are on disk, with the run-relative
        path -> hex sha256 of each.
    """
    def collect(job, futures):
        return job, {relative: future.result() for relative, future in futures.items()}

    with ThreadPoolExecutor(max_workers=writers, thread_name_prefix="cfx-write") as pool:
        pending = deque()
        mask = None
        for job in jobs:
            if mask is None or mask.source != str(job.subject.mask):  # a subject's seeds share it
                mask = read_labels(job.subject.mask, work.labels)
            volumes = [np.asarray(v, np.float32) for v in generator.generate(
                job.subject, mask, work.attribute, job.requests, job.noise_seed)]
            futures = {relative: pool.submit(_write, work.out / relative, volume, mask.affine)
                       for relative, volume in zip(job.cts, volumes, strict=True)
                       if relative in job.write}
            futures.update({relative: pool.submit(_write_difference, work.out / relative,
                                                  volumes[index], volumes[job.reference],
                                                  mask.affine)
                            for index, relative in job.diffs if relative in job.write})
            del volumes  # the writers hold what they still need
            pending.append((job, futures))
            while len(pending) > 1:
                yield collect(*pending.popleft())
        while pending:
            yield collect(*pending.popleft())


class LocalExecutor:
    """Groups one after another in this process, with the generator the engine was given."""

    name = "local"

    def check(self, device: str) -> None:
        """Refuse ``--device cuda`` where no GPU is visible, before anything is written."""
        if device == "cuda":
            resolve_device(device)

    def run(self, generator: CounterfactualGenerator, jobs: Sequence[GroupJob],
            work: Work) -> Iterator[tuple[GroupJob, dict[str, str]]]:
        """Yield each job with the checksums of the files it wrote, in job order."""
        if jobs:
            configure(generator, work.device, work.batch_size)
        yield from run_groups(generator, jobs, work)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserInputError("--executor ray: Ray is not installed; install it with "
                             "pip install 'cfx[ray]' (or pip install ray)") from None
    return ray


def _run_chunk(generator: CounterfactualGenerator, jobs: list[GroupJob],
               work: Work) -> list[tuple[int, dict[str, str]]]:
    """A Ray task: configure the generator for this worker's device, run its groups in order."""
    configure(generator, work.device, work.batch_size)
    return [(index, written) for index, (_, written) in
            enumerate(run_groups(generator, jobs, work))]


def _chunks(n_jobs: int, n_tasks: int) -> list[range]:
    """Contiguous, near-equal index ranges (a subject's seeds stay together)."""
    bounds = [n_jobs * k // n_tasks for k in range(n_tasks + 1)]
    return [range(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


class RayExecutor:
    """Groups as Ray tasks: contiguous chunks, one task each, one GPU per task when the cluster
    has GPUs (one CPU otherwise).

    Uses the running Ray instance, or starts a local one (``ray.init()``, which joins the cluster
    named by ``RAY_ADDRESS`` if set) and shuts it down afterwards. Tasks write volume files
    atomically into the shared run folder and return their checksums; results are yielded as
    tasks finish.

    Parameters
    ----------
    tasks : int, optional
        Number of tasks; default one per GPU, or one per CPU without GPUs.
    """

    name = "ray"

    def __init__(self, tasks: int | None = None):
        if tasks is not None and tasks < 1:
            raise UserInputError(f"tasks: got {tasks}; give an integer >= 1")
        self.tasks = tasks

    def check(self, device: str) -> None:
        """Refuse early when Ray is missing (the device is resolved inside each task)."""
        _import_ray()
        if device not in DEVICES:
            raise UserInputError(f"--device: {device!r} is not one of {', '.join(DEVICES)}")

    def run(self, generator: CounterfactualGenerator, jobs: Sequence[GroupJob],
            work: Work) -> Iterator[tuple[GroupJob, dict[str, str]]]:
        """Yield each job with the checksums of the files it wrote, as tasks finish."""
        if not jobs:
            return
        ray = _import_ray()
        started = not ray.is_initialized()
        if started:
            ray.init(include_dashboard=False, log_to_driver=False)
        try:
            yield from self._run(ray, generator, list(jobs), work)
        finally:
            if started:
                ray.shutdown()

    def _run(self, ray, generator, jobs, work):
        gpus = int(ray.cluster_resources().get("GPU", 0))
        workers = gpus or max(1, int(ray.cluster_resources().get("CPU", 1)))
        chunks = _chunks(len(jobs), min(self.tasks or workers, len(jobs)))
        task = ray.remote(_run_chunk).options(**({"num_gpus": 1} if gpus else {"num_cpus": 1}))
        shipped = ray.put(generator)
        pending = {task.remote(shipped, [jobs[i] for i in chunk], work): chunk
                   for chunk in chunks}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            chunk = pending.pop(ready[0])
            try:
                results = ray.get(ready[0])
            except ray.exceptions.RayTaskError as exc:
                if isinstance(exc.cause, UserInputError):
                    raise exc.cause from None
                raise
            for index, written in results:
                yield jobs[chunk[index]], written


def resolve_executor(name: str) -> LocalExecutor | RayExecutor:
    """The executor called ``name`` (``local`` or ``ray``)."""
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        return RayExecutor()
    raise UserInputError(f"--executor: {name!r} is not one of {', '.join(EXECUTORS)}")
