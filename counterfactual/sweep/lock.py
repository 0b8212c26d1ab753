"""Who may write to a run folder: OS file locks, released even on kill -9.

* An unsharded sweep holds ``.cfx.lock`` exclusively: nothing else writes to the folder.
* A shard ``i/n`` holds ``.cfx.lock`` shared (shards run side by side, an unsharded sweep is
  kept out) and ``.cfx.shard-i-of-n.lock`` exclusively (the same shard cannot run twice).
* Short steps that read or write ``manifest.json`` (opening the run, merging the shards) hold
  ``.cfx.merge.lock``, waiting for it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from cfx.counterfactual.errors import UserInputError

__all__ = ["run_lock", "shard_lock", "merge_lock", "LOCK_NAME"]

LOCK_NAME = ".cfx.lock"
_MERGE = ".cfx.merge.lock"


@contextlib.contextmanager
def _flock(path: Path, mode: int, busy: str) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, mode)
        except BlockingIOError:
            raise UserInputError(busy) from None
        yield
    finally:
        os.close(fd)


def _busy(folder: Path) -> str:
    return (f"{folder}: another cfx sweep is writing to this folder; wait for it or choose "
            "another --out")


@contextlib.contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` for the duration of the block."""
    with _flock(folder / LOCK_NAME, fcntl.LOCK_EX | fcntl.LOCK_NB, _busy(folder)):
        yield


@contextlib.contextmanager
def shard_lock(folder: Path, index: int, count: int) -> Iterator[None]:
    """Hold shard ``index``/``count`` of ``folder``: alongside other shards, never alongside an
    unsharded sweep or another copy of the same shard."""
    with _flock(folder / LOCK_NAME, fcntl.LOCK_SH | fcntl.LOCK_NB, _busy(folder)):
        with _flock(folder / f".cfx.shard-{index}-of-{count}.lock", fcntl.LOCK_EX | fcntl.LOCK_NB,
                    f"{folder}: shard {index}/{count} is already running into this folder"):
            yield


@contextlib.contextmanager
def merge_lock(folder: Path) -> Iterator[None]:
    """Wait for, then hold, the lock on the run's ``manifest.json``."""
    with _flock(folder / _MERGE, fcntl.LOCK_EX, ""):
        yield
