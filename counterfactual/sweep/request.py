"""What the sweep asks of a generator: one counterfactual (:class:`Request`) and, for diffusion
models, how to sample (:class:`SamplingOptions`).

Both the generic generator module (:mod:`cfx.counterfactual.sweep.generators`) and the learned
generators (:mod:`cfx.counterfactual.sweep.learned`) import these; neither imports the other's
dependants, so there is no import cycle. The options' ranges are checked in one place, where the
model samples (:func:`cfx.models.sampling.check_sampling` and the sampler's own options).
"""

from __future__ import annotations

from dataclasses import dataclass

from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.prompts import PromptTemplate

__all__ = ["Request", "SamplingOptions"]


@dataclass(frozen=True)
class Request:
    """One counterfactual of a subject: its record with the swept attribute set, written as the
    whole prompt (what the manifest shows) and as per-field phrases (what a learned generator
    reads, see :meth:`PromptTemplate.phrases`); ``source``: the per-field phrases of the record
    the subject's CT shows (what an edit from that CT starts from), None when unknown."""

    value: object
    record: dict
    prompt: str
    phrases: dict
    source: dict | None = None

    @classmethod
    def build(cls, value, record: dict, template: PromptTemplate, where: str = "record",
              source: dict | None = None) -> Request:
        """The request of ``record`` (swept value ``value``) written with ``template``, from a
        CT showing record ``source``."""
        return cls(value, record, template.render(record, where),
                   template.phrases(record, where),
                   None if source is None else template.phrases(source, where))


@dataclass(frozen=True)
class SamplingOptions:
    """How a diffusion model samples; None leaves the checkpoint's default.

    Attributes
    ----------
    guidance : float or None
        Classifier-free guidance weight ``W >= 0`` (0 ignores the record, 1 reads it plainly).
    steps : int or None
        Sampler steps from noise.
    from_ct : bool
        Start from each subject's CT instead of noise (real-scan counterfactuals).
    strength : float or None
        With ``from_ct``: how far the CT is noised, in (0, 1].
    eta : float or None
        DDIM stochasticity in [0, 1]; 0 is deterministic (the noise of each step, when any, is
        shared by every value too). An option of the ``ddim`` sampler only.
    keep_outside : str or None
        With ``from_ct``: a region of the label vocabulary; every voxel outside it is held to
        the CT while sampling (:func:`cfx.models.sampling.sample_volumes` ``keep``).
    """

    guidance: float | None = None
    steps: int | None = None
    from_ct: bool = False
    strength: float | None = None
    eta: float | None = None
    keep_outside: str | None = None

    def given(self) -> list[str]:
        """The options set, as command-line flags."""
        flags = [("--guidance", self.guidance is not None), ("--steps", self.steps is not None),
                 ("--from-ct", self.from_ct), ("--strength", self.strength is not None),
                 ("--eta", self.eta is not None),
                 ("--keep-outside", self.keep_outside is not None)]
        return [flag for flag, given in flags if given]

    def refuse(self, model: str, kind: str) -> None:
        """Raise if any option is set: ``model`` (a ``kind``) does not sample by diffusion."""
        given = self.given()
        if given:
            raise UserInputError(f"{', '.join(given)}: only diffusion models take "
                                 f"{'this option' if len(given) == 1 else 'these options'}; "
                                 f"model {model} is {kind}")
