"""The max-T sign-flip null in torch: the flips x data products and the max reduction on a GPU.

:func:`cfx.analysis.permutation.one_sample_permutation` with ``device="cuda"`` (or any torch device,
``"cpu"`` included) calls :func:`winners_torch` instead of its numpy loop. The algorithm
is the numpy one, step for step: per voxel chunk, the float32 product ``flips @ normalised`` gives
``r = s . x / |x|`` for every draw, the winning voxel of each draw is found by a max (and min,
two-sided) reduction on the device, and only those winners (one integer per draw) come back, to
be recomputed in float64 on the host by the same numpy expression as the numpy path. So where the
two paths pick the same winners the maxima are bit-identical; they can differ only where two
voxels tie within float32 rounding (~1e-7 relative in ``r``), which moves a maximum by at most that
much (test: ``tests/analysis/test_permutation_torch.py``). If the user has allowed TF32 matrix
products (``torch.set_float32_matmul_precision("high")``), products carry ~1e-3 relative error
and so can the choice of winner; the default ("highest") keeps full float32.

This module uses torch as an array library only (no network, nothing from ``models``); torch is
imported inside the function, so importing :mod:`analysis` never loads it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

__all__ = ["winners_torch", "check_torch_device"]

_CHUNK_BYTES = {"cpu": 32 * 2**20, "cuda": 512 * 2**20}
"""Size of one (n_permutations, n_voxels_chunk) float32 block: 32 MiB on the CPU (as numpy), 512
MiB on a GPU (fewer, larger products; a GPU of 8 GB holds it beside the data)."""


def check_torch_device(device: str):
    """The ``torch.device`` named by ``device``; ValueError when torch cannot use it here.

    Parameters
    ----------
    device : str
        A torch device string: ``"cpu"``, ``"cuda"``, ``"cuda:1"``.

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        An unknown device string, or a CUDA device that torch does not see.
    """
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device: got {device!r}; expected None (numpy), 'cpu' or 'cuda' "
                         "(optionally 'cuda:N').") from None
    if parsed.type not in ("cpu", "cuda"):
        raise ValueError(f"device: got {device!r}; expected None (numpy), 'cpu' or 'cuda'.")
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = 0 if parsed.index is None else parsed.index
        if index >= count:
            raise ValueError(f"device: got {device!r} but torch sees {count} CUDA GPU(s); "
                             "use device=None (numpy) or 'cpu'.")
    return parsed


def winners_torch(flips: np.ndarray, normalised: np.ndarray, alternative: str,
                  device: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Per voxel chunk, the chunk and the voxel where each draw's oriented ``s . x / |x|`` peaks.

    The products and the max (min) reductions run in float32 on ``device``; only the winners
    come back to the host.

    Parameters
    ----------
    flips : ndarray of float64, shape (n_permutations, n_subjects)
        Sign flips, +-1.
    normalised : ndarray of float64, shape (n_subjects, n_voxels)
        Each voxel's values divided by their Euclidean norm (0 for an all-zero voxel).
    alternative : {"two-sided", "greater", "less"}
        The peak of ``|r|``, ``r`` or ``-r``.
    device : str
        Torch device of the products and reductions (checked by :func:`check_torch_device`).

    Yields
    ------
    block : ndarray of float64, shape (n_subjects, n_voxels_chunk)
        A view of ``normalised``, chunks in voxel order.
    winner : ndarray of int64, shape (n_permutations,)
        Per draw, the column of ``block`` where the oriented ``r`` is largest (the first one on
        ties).
    """
    import torch

    where = check_torch_device(device)
    n_perm = flips.shape[0]
    chunk = max(1, _CHUNK_BYTES[where.type] // (4 * n_perm))
    signs = torch.from_numpy(flips.astype(np.float32)).to(where)
    with torch.inference_mode():
        for start in range(0, normalised.shape[1], chunk):
            block = normalised[:, start:start + chunk]
            r = signs @ torch.from_numpy(block.astype(np.float32)).to(where)  # (n_perm, chunk)
            if alternative == "less":
                winner = r.argmin(dim=1)
            else:
                winner = r.argmax(dim=1)
                if alternative == "two-sided":
                    lowest = r.argmin(dim=1)
                    peaks = r.gather(1, torch.stack([winner, lowest], dim=1))
                    winner = torch.where(-peaks[:, 1] > peaks[:, 0], lowest, winner)
            yield block, winner.cpu().numpy()
