"""Data-parallel training: one global batch split over processes (``torchrun``, gloo or NCCL).

Each of ``world`` processes runs the same trainer with the same seed. Every step, each process
draws the *whole* global batch from its numpy generator (so all generators stay in step and any
process's saved state is everyone's) but reads and computes only its own contiguous rows
(:func:`shard_rows`, :class:`ShardedSource`); its torch generator draws the noise of the whole
batch and keeps the same rows. The networks run under torch's ``DistributedDataParallel``, which
averages the gradients over the processes after each backward pass: with equal shares, the mean
of the per-process mean losses is the global batch's mean loss, so the averaged gradient is the
single-process gradient of the whole batch, and gradient clipping, Adam and the EMA then see the
same numbers on every process. What differs is only the order of floating-point sums (a
process's batch reduction, then the all-reduce), so a data-parallel run equals one process on
the whole batch to rounding, and Adam's first steps (an update close to ``lr * sign(gradient)``)
can turn a rounding difference in a near-zero gradient into up to ``2 * lr`` per step in that
weight (measured in ``tests/models/training/test_distributed.py``).

The losses a trainer reports are averaged over the processes (:func:`average_values`), so the
divergence guard takes the same decision in every process.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch import distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["shard_rows", "ShardedSource", "data_parallel", "average_values"]


def shard_rows(batch_size: int, rank: int, world: int) -> slice:
    """The rows of a global batch of ``batch_size`` that process ``rank`` of ``world`` trains.

    Raises
    ------
    ValueError
        ``batch_size`` not a multiple of ``world`` (equal shares keep the mean exact), or
        ``rank`` outside ``[0, world)``.
    """
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank must be in [0, world), got rank {rank} of world {world}")
    if batch_size % world:
        raise ValueError(f"batch_size must be a multiple of the number of processes, got "
                         f"{batch_size} rows over {world} processes")
    share = batch_size // world
    return slice(rank * share, (rank + 1) * share)


class ShardedSource:
    """A batch source that returns only ``rows`` of each global batch it draws.

    Parameters
    ----------
    source : callable
        ``source(rng, batch_size) -> TrainingBatch``. If it has ``read_rows(rng, batch_size,
        rows)`` (drawing the whole batch, reading only ``rows``), that is called instead, so the
        other rows are never read.
    rows : slice
    """

    def __init__(self, source, rows: slice):
        self.source, self.rows = source, rows

    def __call__(self, rng: np.random.Generator, batch_size: int):
        if hasattr(self.source, "read_rows"):
            return self.source.read_rows(rng, batch_size, self.rows)
        batch = self.source(rng, batch_size)
        return replace(batch, labels=batch.labels[self.rows], ct=batch.ct[self.rows],
                       phrases=list(batch.phrases[self.rows]))


def data_parallel(module: nn.Module) -> DistributedDataParallel:
    """``module`` under ``DistributedDataParallel`` (its parameters and buffers broadcast from
    rank 0; on CUDA, on the module's device). The wrapper is only called; the module itself
    keeps its state dict keys and is what optimisers, EMA and checkpoints hold."""
    device = next(module.parameters()).device
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


def average_values(values: dict[str, float]) -> dict[str, float]:
    """``values`` averaged over the processes of the default group (one all-reduce)."""
    keys = sorted(values)
    total = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        total = total.cuda()
    dist.all_reduce(total)
    total = total.cpu() / dist.get_world_size()
    return {k: float(v) for k, v in zip(keys, total.tolist(), strict=True)}
