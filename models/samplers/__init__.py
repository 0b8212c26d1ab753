"""Samplers of the diffusion model by name (:data:`SAMPLERS`), all following the
:class:`~cfx.models.samplers.base.Sampler` protocol.

A checkpoint's ``sampling`` block names its sampler (``"sampler"``, :data:`DEFAULT_SAMPLER` when
absent) and holds the sampler's own options beside ``steps`` and ``guidance``. Adding a sampler:
one module here with its class, one entry in :data:`SAMPLERS`, and its case in the conformance
test (``tests/models/samplers/test_conformance.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from cfx.models.samplers.base import Sampler, check_request, start_timestep
from cfx.models.samplers.ddim import DDIMSampler

__all__ = ["Sampler", "SAMPLERS", "DEFAULT_SAMPLER", "make_sampler", "check_request",
           "start_timestep", "DDIMSampler"]

SAMPLERS: dict[str, Callable[..., Sampler]] = {"ddim": DDIMSampler}
"""Name -> class, called with the sampler's options and the network's noise schedule."""
DEFAULT_SAMPLER = "ddim"


def make_sampler(name: str, schedule: Mapping, **options) -> Sampler:
    """The sampler called ``name`` over the noise ``schedule`` (MONAI scheduler arguments, see
    :attr:`~cfx.models.nets.cond_diffusion3d.CondDiffusion3D.noise_schedule`), with ``options``.

    Raises
    ------
    ValueError
        An unknown name (``"sampler: ..."``), an option it does not take (``"<options>: ..."``)
        or one out of range (``"<option>: got <value>; give ..."``).
    """
    if name not in SAMPLERS:
        raise ValueError(f"sampler: got {name!r}; give one of {', '.join(SAMPLERS)}")
    try:
        return SAMPLERS[name](**options, **schedule)
    except TypeError as exc:
        raise ValueError(f"{', '.join(sorted(options))}: sampler {name} takes no such option "
                         f"({exc})") from None
