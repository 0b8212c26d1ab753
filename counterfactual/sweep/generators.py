"""What the sweep asks of a generator, and the generators it knows by name.

A generator turns one subject's mask, a list of edited records and one seed into one CT per
record, all drawn with the *same* noise: the pairing of counterfactuals is explicit in the call.
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

__all__ = ["Request", "CounterfactualGenerator", "PhantomOracleGenerator", "resolve_generator",
           "KNOWN_MODELS", "DEFAULT_MODEL"]


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


class CounterfactualGenerator(Protocol):
    """The sweep's view of a model.

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


def resolve_generator(name: str, cohort: Cohort) -> CounterfactualGenerator:
    """The generator called ``name`` for ``cohort``: ``phantom-oracle``, a bundled checkpoint
    name, or a checkpoint folder written by ``cfx train``."""
    if name == "phantom-oracle":
        return PhantomOracleGenerator(cohort)
    from counterfactual.sweep.learned import LearnedGenerator, bundled_models, find_checkpoint

    folder = find_checkpoint(name)
    if folder is not None:
        return LearnedGenerator(folder)
    known = (*KNOWN_MODELS, *bundled_models())
    raise UserInputError(f"--model: unknown model {name!r}; available: {', '.join(known)}, or "
                         "a checkpoint folder made by cfx train")
