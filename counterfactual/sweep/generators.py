"""What the sweep asks of a generator, and the generators it knows by name.

A generator turns one subject's mask, a list of edited records and one seed into one CT per
record, all drawn with the *same* noise: the pairing of counterfactuals is explicit in the call.
Diffusion checkpoints also take :class:`SamplingOptions` (``--guidance``, ``--steps``,
``--from-ct``, ``--strength``); the other models refuse them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from counterfactual.cohort import Cohort, Subject
from counterfactual.errors import UserInputError
from counterfactual.prompts import PromptTemplate
from counterfactual.volume import Volume

__all__ = ["Request", "CounterfactualGenerator", "PhantomOracleGenerator", "SamplingOptions",
           "resolve_generator", "KNOWN_MODELS", "DEFAULT_MODEL"]


@dataclass(frozen=True)
class Request:
    """One counterfactual of a subject: its record with the swept attribute set, written as the
    whole prompt (what the manifest shows) and as per-field phrases (what a learned generator
    reads, see :meth:`PromptTemplate.phrases`)."""

    value: object
    record: dict
    prompt: str
    phrases: dict

    @classmethod
    def build(cls, value, record: dict, template: PromptTemplate,
              where: str = "record") -> Request:
        """The request of ``record`` (swept value ``value``) written with ``template``."""
        return cls(value, record, template.render(record, where),
                   template.phrases(record, where))


@dataclass(frozen=True)
class SamplingOptions:
    """How a diffusion model samples; None leaves the checkpoint's default.

    Attributes
    ----------
    guidance : float or None
        Classifier-free guidance weight ``W >= 0`` (0 ignores the record, 1 reads it plainly).
    steps : int or None
        DDIM steps from noise.
    from_ct : bool
        Start from each subject's CT instead of noise (real-scan counterfactuals).
    strength : float or None
        With ``from_ct``: how far the CT is noised, in (0, 1].
    eta : float or None
        DDIM stochasticity in [0, 1]; 0 is deterministic (the noise of each step, when any, is
        shared by every value too).
    """

    guidance: float | None = None
    steps: int | None = None
    from_ct: bool = False
    strength: float | None = None
    eta: float | None = None

    def given(self) -> list[str]:
        """The options set, as command-line flags."""
        flags = [("--guidance", self.guidance is not None), ("--steps", self.steps is not None),
                 ("--from-ct", self.from_ct), ("--strength", self.strength is not None),
                 ("--eta", self.eta is not None)]
        return [flag for flag, given in flags if given]

    def refuse(self, model: str, kind: str) -> None:
        """Raise if any option is set: ``model`` (a ``kind``) does not sample by diffusion."""
        given = self.given()
        if given:
            raise UserInputError(f"{', '.join(given)}: only diffusion models take "
                                 f"{'this option' if len(given) == 1 else 'these options'}; "
                                 f"model {model} is {kind}")


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
        from counterfactual.phantom.oracle import PhantomOracle

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


KNOWN_MODELS = ("phantom-oracle",)  # plus the bundled checkpoints (models/bundled/)
DEFAULT_MODEL = "phantom-gan-64"  # the bundled GAN (models/bundled/phantom-gan-64)


def resolve_generator(name: str, cohort: Cohort,
                      sampling: SamplingOptions | None = None) -> CounterfactualGenerator:
    """The generator called ``name`` for ``cohort``: ``phantom-oracle``, a bundled checkpoint
    name, or a checkpoint folder written by ``cfx train``. ``sampling`` options are for
    diffusion checkpoints only (a user error for any other model)."""
    sampling = sampling or SamplingOptions()
    if name == "phantom-oracle":
        sampling.refuse(name, "the phantom's exact renderer")
        return PhantomOracleGenerator(cohort)
    from counterfactual.sweep.learned import bundled_models, find_checkpoint, learned_generator

    folder = find_checkpoint(name)
    if folder is not None:
        return learned_generator(folder, sampling)
    known = (*KNOWN_MODELS, *bundled_models())
    raise UserInputError(f"--model: unknown model {name!r}; available: {', '.join(known)}, or "
                         "a checkpoint folder made by cfx train")
