"""What the sweep asks of a generator, and the generators it knows by name.

A generator turns one subject's mask, a list of edited records and one seed into one CT per
record, all drawn with the *same* noise: the pairing of counterfactuals is explicit in the call.
Diffusion checkpoints also take :class:`~cfx.counterfactual.sweep.request.SamplingOptions`
(``--guidance``, ``--steps``, ``--from-ct``, ``--strength``, ``--eta``); the other models refuse
them. :class:`~cfx.counterfactual.sweep.request.Request` and the model names
(:mod:`cfx.counterfactual.sweep.catalog`) are re-exported here for the sweep's callers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from cfx.counterfactual.cohort import Cohort, Subject
from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.sweep.catalog import (
    DEFAULT_MODEL,
    KNOWN_MODELS,
    bundled_models,
    find_checkpoint,
)
from cfx.counterfactual.sweep.request import Request, SamplingOptions
from cfx.counterfactual.volume import Volume

__all__ = ["Request", "CounterfactualGenerator", "PhantomOracleGenerator", "SamplingOptions",
           "resolve_generator", "KNOWN_MODELS", "DEFAULT_MODEL"]


class CounterfactualGenerator(Protocol):
    """The sweep's view of a model.

    Optional: ``sampling``, a JSON-able dict of how it samples, which the run manifest records
    with the settings a resumed run must share.

    Optional: ``configure(device=..., batch_size=...)``, called once before generating with
    ``device`` ``"cpu"`` or ``"cuda"`` (``--device auto`` resolved) and ``--batch-size``;
    generators without it ignore both. ``--executor ray`` pickles the generator into each task
    and calls ``configure`` there: a heavy one should define ``__reduce__`` to be rebuilt from
    what names it (checkpoint folder) rather than shipping its weights.
    """

    name: str
    content_hash: str
    text_encoder: str | None

    def check(self, cohort: Cohort, attribute: str) -> None:
        """Raise ``UserInputError`` if this model cannot serve ``cohort`` and ``attribute``."""

    def generate(self, subject: Subject, mask: Volume, attribute: str,
                 requests: Sequence[Request], seed: int) -> list[np.ndarray]:
        """One float32 HU volume on the mask's grid per request, all from the same noise.

        ``seed`` (a 64-bit integer the sweep derives from subject and sweep seed) fixes that noise.
        """


class PhantomOracleGenerator:
    """The phantom's exact counterfactual: the subject's anatomy re-rendered with one attribute
    changed and the noise drawn from the sweep's seed. Works only on cohorts made by
    ``cfx phantom`` (it reads their ``truth.json``)."""

    name = "phantom-oracle"
    text_encoder = None

    def __init__(self, cohort: Cohort):
        from cfx.counterfactual.phantom.oracle import PhantomOracle

        folder = cohort.source if cohort.source.is_dir() else cohort.source.parent
        truth = folder / "truth.json"
        if not truth.exists():
            raise UserInputError(f"{folder}: --model phantom-oracle needs a phantom cohort (made "
                                 "by cfx phantom, with truth.json); use a learned model here")
        self._oracle = PhantomOracle.from_cohort(folder)
        self.content_hash = "sha256:" + hashlib.sha256(truth.read_bytes()).hexdigest()

    def check(self, cohort: Cohort, attribute: str) -> None:
        known = self._oracle.attributes
        if attribute not in known:
            raise UserInputError(f"--attribute: the phantom knows {', '.join(known)}; "
                                 f"{attribute!r} is none of them")

    def generate(self, subject: Subject, mask: Volume, attribute: str,
                 requests: Sequence[Request], seed: int) -> list[np.ndarray]:
        return [self._oracle.render(subject.id, {attribute: r.value}, seed) for r in requests]


def resolve_generator(name: str, cohort: Cohort,
                      sampling: SamplingOptions | None = None) -> CounterfactualGenerator:
    """The generator called ``name`` for ``cohort``: ``phantom-oracle``, a bundled checkpoint
    name, or a checkpoint folder written by ``cfx train``. ``sampling`` options are for
    diffusion checkpoints only (a user error for any other model)."""
    sampling = sampling or SamplingOptions()
    if name == "phantom-oracle":
        sampling.refuse(name, "the phantom's exact renderer")
        return PhantomOracleGenerator(cohort)
    folder = find_checkpoint(name)
    if folder is not None:
        from cfx.counterfactual.sweep.learned import learned_generator  # torch: only when needed

        return learned_generator(folder, sampling)
    known = (*KNOWN_MODELS, *bundled_models())
    raise UserInputError(f"--model: unknown model {name!r}; available: {', '.join(known)}, or "
                         "a checkpoint folder made by cfx train")
