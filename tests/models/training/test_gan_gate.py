"""The GAN's label gate: its decay after each step, decoupled from Adam."""

import numpy as np
import torch

from cfx.models.nets.cond_gan3d import CondGAN3DGenerator
from cfx.models.training.gan import GANSettings, GANTrainer
from tests.models.conftest import FIELD_DIMS, FIELDS, PHRASES, RECORDS
from tests.models.training.test_gan import source
from tests.models.training.test_gan_edit import _edit


def _gated_trainer(encoder, **settings):
    torch.manual_seed(0)
    generator = CondGAN3DGenerator(FIELDS, FIELD_DIMS, channels=(4, 8, 8), text_width=32,
                                   token_dims=8, noise_dims=2, gate=True)
    settings = GANSettings(**{"batch_size": 2, "lr_generator": 1e-3, "lr_discriminator": 1e-3,
                              "discriminator_layers": 1, **settings})
    trainer = GANTrainer(generator, encoder, source, settings)
    trainer.fit_text([PHRASES[field] for field in FIELDS])
    trainer.calibrate_output(source(np.random.default_rng(99), 8))
    return trainer


def test_each_step_shrinks_the_gates_by_decay_times_the_fusion_learning_rate(encoder):
    free, decayed = (_gated_trainer(encoder, gate_decay=decay, fusion_lr_scale=2.0)
                     for decay in (0.0, 40.0))
    for _ in range(3):
        free_losses, decayed_losses = free.train_step(), decayed.train_step()
        shrink = 1 - 40.0 * 2e-3  # fusion layers learn at 2 x 1e-3
        for a, b in zip(free.network.gates(), decayed.network.gates(), strict=True):
            torch.testing.assert_close(b, a * shrink)  # Adam's step first, then the decay
            with torch.no_grad():
                a.copy_(b)  # both runs go on from the same state
        assert decayed_losses["l1"] == free_losses["l1"]
    # the other weights are Adam's alone; the EMA follows the decayed gates
    assert torch.equal(free.network.head.weight, decayed.network.head.weight)
    assert not torch.equal(decayed.ema.gates()[0], free.ema.gates()[0])


def _flat(rng, batch_size):
    """:func:`source` with CTs that do not depend on the record."""
    batch = source(rng, batch_size)
    ct = np.where(batch.labels > 0, -800.0, -1000.0).astype(np.float32)
    return type(batch)(batch.labels, ct + rng.normal(0, 10, ct.shape).astype(np.float32),
                       batch.phrases)


def test_without_a_record_effect_the_gates_close_and_the_record_moves_less(encoder):
    """Measured after 60 steps at lr 1e-2 on CTs the record does not change: with decay 0 the
    gates reach 1.4 and two records differ by a mean |change| of 53 HU (the fusion layers
    wander at that learning rate); with decay 50 the gates fall to 0.02 (Adam's own steps of
    about lr keep them off 0) and the records differ by 0.7 HU."""
    runs = {}
    for decay in (0.0, 50.0):
        trainer = _gated_trainer(encoder, gate_decay=decay, lr_generator=1e-2,
                                 adversarial_weight=0.0, ema_decay=0.5)
        trainer.source = _flat
        for _ in range(60):
            trainer.train_step()
        runs[decay] = (max(g.abs().max().item() for g in trainer.network.gates()),
                       _edit(trainer, encoder, RECORDS[0], RECORDS[-1])[1])
    assert runs[0.0][0] > 0.5 and runs[50.0][0] < 0.05
    assert runs[50.0][1] < 0.2 * runs[0.0][1]
