"""Training that cannot silently diverge: checks every step, rolls back, lowers the learning rate.

:class:`TrainingGuard` drives either trainer (:class:`cfx.models.training.gan.GANTrainer`,
:class:`cfx.models.training.diffusion.DiffusionTrainer`) through its ``train_step`` and watches what
the step returns: the losses and the total gradient norm of each network *before* clipping
(the trainers clip it to ``clip_norm``). A step **diverges** when

- any watched value is not finite (NaN or infinite loss or gradient norm), or
- after ``warmup`` accepted steps, the trainer's main loss (``trainer.main_loss``: the GAN's L1,
  the diffusion model's MSE) exceeds ``loss_factor`` times its running mean, or a gradient norm
  (a value named ``grad_norm*``) exceeds ``grad_factor`` times its running mean.

The running mean of a value is the exponential moving average of its accepted values,
``m <- smoothing * m + (1 - smoothing) * value``, started at the first accepted value; values of
a diverged step never enter it.

A step's loss is computed with the weights the previous step left, so the state after step
``s`` is **good** once step ``s + 1`` passes the checks. The guard keeps the last good state in
memory (every ``snapshot_every`` steps, every step the caller wants saved and the last step: the
trainer's resume state, see :mod:`cfx.models.training.state`, plus the running means): only a good
state is ever handed out to be saved, the last one after one extra step whose update is
discarded. On divergence it restores the last good state (networks, EMA, optimisers, random
generators) and multiplies every learning rate by ``lr_factor``; after ``max_rollbacks``
rollbacks the next divergence raises :class:`DivergenceError`, which carries the last good
state.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

import torch

__all__ = ["GuardSettings", "Snapshot", "Rollback", "Outcome", "DivergenceError",
           "TrainingGuard", "GuardedTrainer"]


class GuardedTrainer(Protocol):
    """What the guard needs of a trainer (both trainers of :mod:`cfx.models.training` have it)."""

    main_loss: str
    step: int

    def train_step(self) -> dict[str, float]: ...

    def training_state(self) -> tuple[dict[str, torch.Tensor], dict]: ...

    def load_training_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None: ...

    def scale_lr(self, factor: float) -> None: ...


@dataclass(frozen=True)
class GuardSettings:
    """The divergence rule and what is done about it (recorded in the checkpoint's config).

    Attributes
    ----------
    warmup : int
        Accepted steps before the spike rules apply (non-finite values are caught from the
        first step).
    smoothing : float
        Decay of the running means, in [0, 1).
    loss_factor : float
        The main loss diverges above this many times its running mean.
    grad_factor : float
        A gradient norm diverges above this many times its running mean.
    snapshot_every : int
        Steps between kept states (a rollback loses at most this many steps plus one).
    max_rollbacks : int
        Rollbacks allowed in the whole run (resumes included); the next divergence stops it.
    lr_factor : float
        Every learning rate is multiplied by this at each rollback, in (0, 1).
    """

    warmup: int = 50
    smoothing: float = 0.98
    loss_factor: float = 10.0
    grad_factor: float = 100.0
    snapshot_every: int = 25
    max_rollbacks: int = 3
    lr_factor: float = 0.5

    def __post_init__(self):
        if self.warmup < 0 or self.snapshot_every < 1 or self.max_rollbacks < 0:
            raise ValueError(f"warmup >= 0, snapshot_every >= 1 and max_rollbacks >= 0 needed, "
                             f"got {self.warmup}, {self.snapshot_every}, {self.max_rollbacks}")
        if not 0 <= self.smoothing < 1 or not 0 < self.lr_factor < 1:
            raise ValueError(f"smoothing in [0, 1) and lr_factor in (0, 1) needed, got "
                             f"{self.smoothing} and {self.lr_factor}")
        if not (self.loss_factor > 1 and self.grad_factor > 1):
            raise ValueError(f"loss_factor and grad_factor must be > 1, got {self.loss_factor} "
                             f"and {self.grad_factor}")

    def rule(self) -> str:
        """The divergence rule in words (for the model card)."""
        return (f"a non-finite loss or gradient norm, or after {self.warmup} steps the main "
                f"loss above {self.loss_factor:g}x or a gradient norm above "
                f"{self.grad_factor:g}x its running mean (EMA, decay {self.smoothing:g}); "
                f"then roll back to the last good state and multiply the learning rate by "
                f"{self.lr_factor:g}, at most {self.max_rollbacks} times")


@dataclass(frozen=True)
class Snapshot:
    """A good training state: what :meth:`GuardedTrainer.training_state` returned after step
    ``step``, copied, with the guard's running means under ``meta["guard"]``."""

    step: int
    tensors: dict[str, torch.Tensor]
    meta: dict


@dataclass(frozen=True)
class Rollback:
    """One divergence and what was done: the state of step ``to_step`` restored and the
    learning rate from then on ``lr_scale`` times the run's initial one."""

    step: int
    reason: str
    to_step: int
    lr_scale: float

    def message(self) -> str:
        return (f"step {self.step}: diverged ({self.reason}); rolled back to step "
                f"{self.to_step}, learning rate x{self.lr_scale:g} of the initial one")


@dataclass(frozen=True)
class Outcome:
    """What one call of the trainer's ``train_step`` came to.

    Attributes
    ----------
    step : int
        The trainer's step after the call.
    values : dict of str to float
        What ``train_step`` returned.
    rollback : Rollback or None
        Set when the step diverged and was rolled back.
    confirmed : Snapshot or None
        A kept state this step confirmed good.
    probe : bool
        The extra step that confirms the last state (its update is discarded).
    """

    step: int
    values: dict[str, float]
    rollback: Rollback | None = None
    confirmed: Snapshot | None = None
    probe: bool = False


class DivergenceError(RuntimeError):
    """Training diverged with no rollback left.

    Attributes
    ----------
    step : int
    reason : str
    good : Snapshot
        The last good state.
    rollbacks : list of Rollback
    """

    def __init__(self, step: int, reason: str, good: Snapshot, rollbacks: Sequence[Rollback]):
        self.step, self.reason, self.good = step, reason, good
        self.rollbacks = list(rollbacks)
        super().__init__(f"training diverged at step {step} ({reason}) after "
                         f"{len(self.rollbacks)} rollbacks; the last good state is step "
                         f"{good.step}")


class TrainingGuard:
    """Runs a trainer to a step count, rolling back diverged steps.

    Parameters
    ----------
    trainer : GuardedTrainer
        Its current state is taken as good (a new run's initial weights, or a resumed run's
        saved state, which a guard confirmed before saving it).
    settings : GuardSettings
    resumed : dict, optional
        ``meta["guard"]`` of the training state the trainer was resumed from: the running
        means and the rollbacks so far.
    """

    def __init__(self, trainer: GuardedTrainer, settings: GuardSettings = GuardSettings(),
                 resumed: Mapping | None = None):
        self.trainer, self.settings = trainer, settings
        resumed = resumed or {}
        self._means: dict[str, float] = dict(resumed.get("means", {}))
        self._accepted = int(resumed.get("accepted", 0))
        self.rollbacks = [Rollback(**r) for r in resumed.get("rollbacks", [])]
        self.good = self._snapshot()
        self._candidate: Snapshot | None = None

    @property
    def lr_scale(self) -> float:
        """The learning rate now, as a multiple of the run's initial one."""
        return self.rollbacks[-1].lr_scale if self.rollbacks else 1.0

    def summary(self) -> dict:
        """JSON for the checkpoint's config: the settings, the rule and the rollbacks."""
        return {"rule": self.settings.rule(), "settings": asdict(self.settings),
                "rollbacks": [asdict(r) for r in self.rollbacks], "lr_scale": self.lr_scale}

    # -- the loop -----------------------------------------------------------------------------

    def run(self, total: int, keep_every: int) -> Iterator[Outcome]:
        """Train until the state after step ``total`` is confirmed good, then leave the trainer
        in that state.

        Parameters
        ----------
        total : int
            Step count to reach.
        keep_every : int
            States of these multiples of steps (and of ``total``) are handed out in
            ``Outcome.confirmed`` once confirmed (the ones the caller saves).

        Yields
        ------
        Outcome
            One per ``train_step`` call: ``total - trainer.step + 1`` of them when nothing
            diverges.

        Raises
        ------
        DivergenceError
            A divergence after ``max_rollbacks`` rollbacks.
        """
        every = self.settings.snapshot_every
        while self.good.step < total:
            probe = self.trainer.step >= total
            values = self.trainer.train_step()
            step = self.trainer.step
            reason = self._verdict(values)
            if reason is not None:
                yield Outcome(step, values, rollback=self._roll_back(step, reason))
                continue
            self._accept(values)
            confirmed = None
            if self._candidate is not None:
                self.good, self._candidate = self._candidate, None
                if self.good.step % keep_every == 0 or self.good.step == total:
                    confirmed = self.good
            if not probe and (step % every == 0 or step % keep_every == 0 or step == total):
                self._candidate = self._snapshot()
            yield Outcome(step, values, confirmed=confirmed, probe=probe)
        self._restore(self.good)

    # -- rules --------------------------------------------------------------------------------

    def _factor(self, key: str) -> float | None:
        if key == self.trainer.main_loss:
            return self.settings.loss_factor
        return self.settings.grad_factor if key.startswith("grad_norm") else None

    def _verdict(self, values: Mapping[str, float]) -> str | None:
        """Why the step diverged, or None."""
        for key, value in values.items():
            if not math.isfinite(value):
                return f"{key} is {value}"
        if self._accepted < self.settings.warmup:
            return None
        for key, value in values.items():
            factor = self._factor(key)
            if factor is not None and key in self._means and value > factor * self._means[key]:
                return (f"{key} {value:.3g} is over {factor:g}x its running mean "
                        f"{self._means[key]:.3g}")
        return None

    def _accept(self, values: Mapping[str, float]) -> None:
        decay = self.settings.smoothing
        for key, value in values.items():
            if self._factor(key) is not None:
                mean = self._means.get(key)
                self._means[key] = value if mean is None else decay * mean + (1 - decay) * value
        self._accepted += 1

    # -- states -------------------------------------------------------------------------------

    def _guard_state(self) -> dict:
        return {"means": dict(self._means), "accepted": self._accepted,
                "rollbacks": [asdict(r) for r in self.rollbacks]}

    def _snapshot(self) -> Snapshot:
        tensors, meta = self.trainer.training_state()
        meta = copy.deepcopy(meta)
        meta["guard"] = self._guard_state()
        return Snapshot(self.trainer.step, {k: v.clone() for k, v in tensors.items()}, meta)

    def _restore(self, snapshot: Snapshot) -> None:
        self.trainer.load_training_state({k: v.clone() for k, v in snapshot.tensors.items()},
                                         copy.deepcopy(snapshot.meta))
        self._means = dict(snapshot.meta["guard"]["means"])
        self._accepted = snapshot.meta["guard"]["accepted"]

    def _roll_back(self, step: int, reason: str) -> Rollback:
        if len(self.rollbacks) >= self.settings.max_rollbacks:
            raise DivergenceError(step, reason, self.good, self.rollbacks)
        self._candidate = None
        good = self.good
        self._restore(good)
        self.trainer.scale_lr(self.settings.lr_factor)
        rollback = Rollback(step, reason, good.step, self.lr_scale * self.settings.lr_factor)
        self.rollbacks.append(rollback)
        # the restored state, at its lower learning rate, is the good state to return to
        self.good = self._snapshot()
        return rollback
