"""The training guard: its divergence rule against a hand computation, and on both real trainers
a diverged step rolled back to the last good weights (compared with weights recorded while
training), at a lower learning rate, or the run stopped with the last good state."""

import math

import numpy as np
import pytest
import torch

from cfx.models.training.guard import DivergenceError, GuardSettings, TrainingGuard
from tests.models.training import test_diffusion, test_gan


class ScriptedTrainer:
    """Returns scripted values; its one weight grows by the learning rate each step (in place,
    so a guard that kept a reference instead of a copy would see its saved states move)."""

    main_loss = "loss"

    def __init__(self, script):
        self.script, self.calls, self.step, self.lr = list(script), 0, 0, 1.0
        self.weight = torch.zeros(1)

    def train_step(self):
        values = self.script[self.calls]
        self.calls += 1
        self.step += 1
        self.weight += self.lr
        return dict(values)

    def training_state(self):
        return {"weight": self.weight}, {"step": self.step, "lr": self.lr}

    def load_training_state(self, tensors, meta):
        self.weight.copy_(tensors["weight"])
        self.step, self.lr = meta["step"], meta["lr"]

    def scale_lr(self, factor):
        self.lr *= factor


def _losses(*values):
    return [{"loss": v} for v in values]


def test_the_spike_rule_by_hand():
    """warmup 3, smoothing 0.5, factor 4: the running mean after 8, 4, 2 is 8 -> 6 -> 4; 15.9
    (<= 16) passes and the mean becomes 9.95; 39.9 > 4 x 9.95 = 39.8 diverges. The state of
    step 4 was never confirmed (step 5's loss is computed on it), so the guard returns to step 3,
    with its running mean, at half the learning rate."""
    settings = GuardSettings(warmup=3, smoothing=0.5, loss_factor=4.0, snapshot_every=1,
                             max_rollbacks=1)
    trainer = ScriptedTrainer(_losses(8, 4, 2, 15.9, 39.9, 15.9, 5, 5, 5))
    outcomes = list(TrainingGuard(trainer, settings).run(total=6, keep_every=100))
    rollbacks = [o.rollback for o in outcomes if o.rollback is not None]
    assert len(rollbacks) == 1
    (rollback,) = rollbacks
    assert (rollback.step, rollback.to_step, rollback.lr_scale) == (5, 3, 0.5)
    assert rollback.reason == "loss 39.9 is over 4x its running mean 9.95"
    # after the rollback, 15.9 at step 4 again: 15.9 <= 4 x 4 (the mean of step 3), it passes
    assert [o.step for o in outcomes] == [1, 2, 3, 4, 5, 4, 5, 6, 7]
    assert outcomes[-1].probe and outcomes[-1].confirmed.step == 6
    # weights: 3 steps at lr 1, then 3 at lr 0.5; the trainer is left in the confirmed state
    assert trainer.step == 6 and trainer.weight.item() == pytest.approx(4.5)
    assert outcomes[-1].confirmed.tensors["weight"].item() == pytest.approx(4.5)


def test_warmup_lets_spikes_pass_but_never_a_non_finite_value():
    trainer = ScriptedTrainer(_losses(1, 100, 1, math.inf))
    guard = TrainingGuard(trainer, GuardSettings(warmup=5, max_rollbacks=0))
    with pytest.raises(DivergenceError) as error:
        list(guard.run(total=10, keep_every=100))
    assert error.value.step == 4 and error.value.reason == "loss is inf"
    assert error.value.good.step == 0 and error.value.good.tensors["weight"].item() == 0
    assert "training diverged at step 4 (loss is inf) after 0 rollbacks" in str(error.value)


def test_gradient_norms_have_their_own_factor_and_other_values_only_need_to_be_finite():
    settings = GuardSettings(warmup=1, smoothing=0.0, loss_factor=2.0, grad_factor=50.0,
                             max_rollbacks=1)
    script = [{"loss": 1.0, "grad_norm_g": 1.0, "adversarial_d": 1.0},
              {"loss": 1.5, "grad_norm_g": 40.0, "adversarial_d": 1e6},  # all pass
              {"loss": 1.5, "grad_norm_g": 2001.0, "adversarial_d": 1.0},  # > 50 x 40
              {"loss": 1.5, "grad_norm_g": 1.0, "adversarial_d": math.nan}]
    trainer = ScriptedTrainer(script)
    guard = TrainingGuard(trainer, settings)
    with pytest.raises(DivergenceError) as error:
        list(guard.run(total=10, keep_every=100))
    assert [r.reason for r in guard.rollbacks] == [
        "grad_norm_g 2e+03 is over 50x its running mean 40"]
    assert error.value.reason == "adversarial_d is nan"


@pytest.mark.parametrize("settings, message", [
    (dict(lr_factor=1.0), "lr_factor in (0, 1)"),
    (dict(loss_factor=1.0), "loss_factor and grad_factor must be > 1"),
    (dict(snapshot_every=0), "snapshot_every >= 1"),
])
def test_bad_settings(settings, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        GuardSettings(**settings)


# -- the real trainers ---------------------------------------------------------------------------

def _gan(encoder):
    trainer = test_gan._trainer(encoder)
    return trainer, trainer.network


def _diffusion(encoder):
    trainer = test_diffusion._trainer(encoder)
    return trainer, trainer.network


def _instrument(trainer, network, poison_after, once=True):
    """Record a copy of the live and EMA weights after every step (the latest per step), and
    write NaN into the live weights after each step in ``poison_after`` (a diverged update: the
    next step's loss is NaN), only the first time that step is reached when ``once``."""
    live, ema = {}, {}
    step = trainer.train_step

    def instrumented():
        values = step()
        live[trainer.step] = {k: v.clone() for k, v in network.state_dict().items()}
        ema[trainer.step] = {k: v.clone() for k, v in trainer.ema.state_dict().items()}
        if trainer.step in poison_after:
            if once:
                poison_after.discard(trainer.step)
            with torch.no_grad():
                next(network.parameters()).fill_(math.nan)
        return values

    trainer.train_step = instrumented
    return live, ema


def _equal(state, reference):
    return state.keys() == reference.keys() and all(torch.equal(state[k], reference[k])
                                                    for k in state)


def _ema_of(snapshot):
    return {k[len("ema."):]: v for k, v in snapshot.tensors.items() if k.startswith("ema.")}


def _lrs(trainer):
    return [g["lr"] for o in ("optimizer_g", "optimizer_d", "optimizer") if hasattr(trainer, o)
            for g in getattr(trainer, o).param_groups]


@pytest.mark.parametrize("build", [_gan, _diffusion], ids=["gan", "diffusion"])
def test_a_diverged_update_is_rolled_back_to_the_last_good_weights(encoder, build):
    """NaN weights after step 5: step 6's loss is NaN, the guard returns to step 4 (kept every 2
    steps and confirmed by step 5) with every network, EMA and learning rate as they were then,
    halves the learning rates and trains on; the states handed out to be saved are the recorded
    EMA weights of steps 4 and 8, finite."""
    trainer, network = build(encoder)
    initial = _lrs(trainer)
    live, ema = _instrument(trainer, network, poison_after={5})
    guard = TrainingGuard(trainer, GuardSettings(warmup=0, snapshot_every=2))
    outcomes = []
    for outcome in guard.run(total=8, keep_every=4):
        outcomes.append(outcome)
        if outcome.rollback is not None:
            assert trainer.step == 4
            assert _equal(network.state_dict(), live[4]) and _equal(trainer.ema.state_dict(),
                                                                    ema[4])
            assert _lrs(trainer) == [lr / 2 for lr in initial]
    (rollback,) = [o.rollback for o in outcomes if o.rollback is not None]
    assert (rollback.step, rollback.to_step, rollback.lr_scale) == (6, 4, 0.5)
    assert rollback.reason == f"{trainer.main_loss} is nan"
    assert rollback.message() == (f"step 6: diverged ({trainer.main_loss} is nan); rolled back "
                                  "to step 4, learning rate x0.5 of the initial one")
    confirmed = [o.confirmed for o in outcomes if o.confirmed is not None]
    assert [c.step for c in confirmed] == [4, 8]
    for snapshot in confirmed:
        assert _equal(_ema_of(snapshot), ema[snapshot.step])
        assert all(torch.isfinite(v).all() for v in snapshot.tensors.values()
                   if v.is_floating_point())
    # the extra step that confirmed step 8 is undone: the trainer is in the saved state
    assert outcomes[-1].probe and trainer.step == 8
    assert _equal(trainer.ema.state_dict(), ema[8]) and _lrs(trainer) == [
        lr / 2 for lr in initial]
    assert confirmed[-1].meta["guard"]["rollbacks"][0]["to_step"] == 4


@pytest.mark.parametrize("build", [_gan, _diffusion], ids=["gan", "diffusion"])
def test_when_the_rollbacks_are_spent_the_last_good_state_is_kept(encoder, build):
    """Every update from step 3 on diverges: two rollbacks to step 2, then an error naming step
    4 and carrying the state of step 2 (its recorded EMA weights)."""
    trainer, network = build(encoder)
    _, ema = _instrument(trainer, network, poison_after=set(range(3, 20)), once=False)
    guard = TrainingGuard(trainer, GuardSettings(warmup=0, snapshot_every=2, max_rollbacks=2))
    with pytest.raises(DivergenceError) as error:
        list(guard.run(total=8, keep_every=4))
    assert error.value.step == 4 and error.value.good.step == 2
    assert [(r.step, r.to_step, r.lr_scale) for r in error.value.rollbacks] == [
        (4, 2, 0.5), (4, 2, 0.25)]
    assert _equal(_ema_of(error.value.good), ema[2])


def test_a_resumed_guard_carries_its_running_means_and_rollbacks(encoder):
    trainer, network = _gan(encoder)
    _instrument(trainer, network, poison_after={3})
    guard = TrainingGuard(trainer, GuardSettings(warmup=0, snapshot_every=1))
    list(guard.run(total=6, keep_every=6))
    saved = guard.good.meta["guard"]
    assert saved["accepted"] == 6 and len(saved["rollbacks"]) == 1
    assert np.isfinite(list(saved["means"].values())).all()
    assert set(saved["means"]) == {"l1", "grad_norm_g", "grad_norm_d"}
    again = TrainingGuard(trainer, GuardSettings(warmup=0, snapshot_every=1), saved)
    assert again.good.meta["guard"] == saved and again.lr_scale == 0.5
