"""The GAN trainer: it learns, a resumed run equals an uninterrupted one, and saves safely."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from models.checkpoint import load_training_state, save_training_state
from models.training.gan import GANSettings, GANTrainer, TrainingBatch
from tests.models.conftest import PROMPTS, tiny_generator

_HU = np.array([-1000.0, -850.0, -800.0, -950.0], np.float32)  # per channel


def source(rng: np.random.Generator, batch_size: int) -> TrainingBatch:
    """Blocky label maps; CT = a value per label, +20 HU for smokers, plus noise."""
    coarse = rng.integers(0, 4, (batch_size, 4, 4, 4))
    labels = coarse.repeat(4, 1).repeat(4, 2).repeat(4, 3)
    prompts = [PROMPTS[int(i)] for i in rng.integers(len(PROMPTS), size=batch_size)]
    shift = np.array([20.0 if "yes" in p else 0.0 for p in prompts], np.float32)
    ct = _HU[labels] + shift[:, None, None, None] * (labels > 0) \
        + rng.normal(0, 10, labels.shape).astype(np.float32)
    return TrainingBatch(labels, ct, prompts)


def _trainer(encoder, fusion="affine", seed=0):
    generator = tiny_generator(fusion, activate=False)
    settings = GANSettings(batch_size=2, lr_generator=1e-3, lr_discriminator=1e-3, seed=seed,
                           discriminator_layers=1)
    trainer = GANTrainer(generator, encoder, source, settings)
    trainer.fit_text(PROMPTS)
    trainer.calibrate_output(source(np.random.default_rng(99), 8))
    return trainer


@pytest.mark.parametrize("fusion", ["affine", "cross-attention"])
def test_a_few_steps_lower_the_l1_and_move_every_network(encoder, fusion):
    trainer = _trainer(encoder, fusion)
    before = {k: v.clone() for k, v in trainer.generator.state_dict().items()}
    d_before = [p.clone() for p in trainer.discriminator.parameters()]
    losses = [trainer.train_step() for _ in range(12)]
    assert trainer.step == 12
    assert all(np.isfinite(list(loss.values())).all() for loss in losses)
    assert np.mean([loss["l1"] for loss in losses[-3:]]) < losses[0]["l1"]
    after = trainer.generator.state_dict()
    assert not torch.equal(before["head.weight"], after["head.weight"])
    assert not torch.equal(before["fuse.0.project.weight" if fusion == "affine"
                                  else "fuse.0.out.weight"],
                           after["fuse.0.project.weight" if fusion == "affine"
                                 else "fuse.0.out.weight"])
    d_after = list(trainer.discriminator.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(d_before, d_after, strict=True))
    # the EMA lags the live weights
    assert not torch.equal(trainer.ema.head.weight, trainer.generator.head.weight)
    assert torch.equal(trainer.ema.text.mean, trainer.generator.text.mean)


def test_calibrate_output_starts_at_the_mean_intensity(encoder):
    trainer = _trainer(encoder)
    batch = source(np.random.default_rng(99), 8)
    expected = float(trainer.generator.from_hu(torch.from_numpy(batch.ct)).mean())
    assert trainer.generator.head.bias.item() == pytest.approx(expected, abs=1e-6)
    assert trainer.ema.head.bias.item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("fusion", ["affine", "cross-attention"])
def test_resume_equals_an_uninterrupted_run(encoder, tmp_path, fusion):
    straight = _trainer(encoder, fusion)
    for _ in range(4):
        straight.train_step()

    first = _trainer(encoder, fusion)
    for _ in range(2):
        first.train_step()
    save_training_state(tmp_path, *first.training_state())
    resumed = GANTrainer(tiny_generator(fusion, activate=False), encoder, source,
                         first.settings)
    resumed.load_training_state(*load_training_state(tmp_path))
    assert resumed.step == 2
    for _ in range(2):
        resumed.train_step()

    for a, b in ((straight.generator, resumed.generator), (straight.ema, resumed.ema),
                 (straight.discriminator, resumed.discriminator)):
        sa, sb = a.state_dict(), b.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), type(a).__name__
    assert straight.rng.bit_generator.state == resumed.rng.bit_generator.state
    assert torch.equal(straight.noise.get_state(), resumed.noise.get_state())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_mixed_precision_steps_on_cuda(encoder):
    generator = tiny_generator(activate=False)
    trainer = GANTrainer(generator, encoder, source, GANSettings(batch_size=2,
                                                                 discriminator_layers=1),
                         device="cuda")
    trainer.fit_text(PROMPTS)
    assert trainer._autocast
    losses = [trainer.train_step() for _ in range(3)]
    assert all(np.isfinite(list(loss.values())).all() for loss in losses)


def test_l1_only_leaves_the_discriminator_alone(encoder):
    trainer = _trainer(encoder)
    trainer.settings = replace(trainer.settings, adversarial_weight=0.0)
    d_before = {k: v.clone() for k, v in trainer.discriminator.state_dict().items()}
    head = trainer.generator.head.weight.clone()
    losses = [trainer.train_step() for _ in range(3)]
    assert all(loss.keys() == {"l1"} for loss in losses)
    assert all(torch.equal(d_before[k], v)
               for k, v in trainer.discriminator.state_dict().items())
    assert trainer.optimizer_d.state_dict()["state"] == {}
    assert not torch.equal(head, trainer.generator.head.weight)
