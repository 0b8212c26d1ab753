"""The decay of the FiLM's record weights: a levelled GAN's label means move through the levels."""

import numpy as np
import torch

from cfx.models.nets.cond_gan3d import CondGAN3DGenerator
from cfx.models.training.gan import GANSettings, GANTrainer
from tests.models.conftest import FIELD_DIMS, FIELDS, PHRASES, RECORDS
from tests.models.training.test_gan import source
from tests.models.training.test_gan_edit import _edit


def _trainer(encoder, **settings):
    torch.manual_seed(0)
    generator = CondGAN3DGenerator(FIELDS, FIELD_DIMS, channels=(4, 8, 8), text_width=32,
                                   token_dims=8, noise_dims=2, label_levels=True)
    settings = GANSettings(**{"batch_size": 4, "lr_generator": 3e-3, "lr_discriminator": 3e-3,
                              "discriminator_layers": 1, "adversarial_weight": 0.0,
                              "ema_decay": 0.95, **settings})
    trainer = GANTrainer(generator, encoder, source, settings)
    trainer.fit_text([PHRASES[field] for field in FIELDS])
    trainer.calibrate_output(source(np.random.default_rng(99), 8))
    return trainer


def test_the_record_columns_are_views_of_each_projection():
    generator = CondGAN3DGenerator(FIELDS, FIELD_DIMS, channels=(4, 8, 8), text_width=32,
                                   token_dims=8, noise_dims=2)
    columns = generator.film_text_weights()
    assert [tuple(c.shape) for c in columns] == [(16, sum(FIELD_DIMS)), (16, sum(FIELD_DIMS)),
                                                  (8, sum(FIELD_DIMS))]
    with torch.no_grad():
        columns[0].fill_(3.0)
    weight = generator.fuse[0].project.weight
    assert (weight[:, :sum(FIELD_DIMS)] == 3.0).all() and (weight[:, sum(FIELD_DIMS):] == 0).all()
    crossed = CondGAN3DGenerator(FIELDS, FIELD_DIMS, channels=(4, 8, 8), text_width=32,
                                 token_dims=8, noise_dims=2, fusion="cross-attention")
    assert crossed.film_text_weights() == []


def test_each_step_shrinks_the_record_columns_by_decay_times_the_text_learning_rate(encoder):
    free, decayed = (_trainer(encoder, film_decay=decay, fusion_lr_scale=2.0)
                     for decay in (0.0, 40.0))
    text = sum(FIELD_DIMS)
    for _ in range(3):
        free_losses, decayed_losses = free.train_step(), decayed.train_step()
        shrink = 1 - 40.0 * 6e-3  # text layers learn at 2 x 3e-3
        for a, b in zip(free.network.fuse, decayed.network.fuse, strict=True):
            torch.testing.assert_close(b.project.weight[:, :text],
                                       a.project.weight[:, :text] * shrink)
            # the noise columns and the bias are Adam's alone
            assert torch.equal(b.project.weight[:, text:], a.project.weight[:, text:])
            assert torch.equal(b.project.bias, a.project.bias)
            with torch.no_grad():
                a.project.weight.copy_(b.project.weight)  # both go on from the same state
        assert torch.equal(free.network.label_levels.weight, decayed.network.label_levels.weight)
        assert decayed_losses["l1"] == free_losses["l1"]


def test_with_the_decay_the_levels_carry_the_planted_shift_and_the_unplanted_edit_stays_small(
        encoder):
    """The toy source plants +20 HU inside the labels for smokers and nothing for diagnosis.
    After 200 L1 + regional-mean steps the decay leaves the planted edit as it is (measured:
    smoking +20.1..20.5 HU inside the labels with decay 0 and 20) and the FiLM's record weights
    all but gone (norm 0.11-0.17 / 0.008-0.013), so the labels' means move through the levels.
    The unplanted IPF-vs-UILD edit is then small and steady, 0.79-1.03 HU of mean |change| over
    torch seeds 0-2 and one or two threads; without the decay it wanders with the run, 0.40-1.58
    HU: with both paths free the FiLM and the levels drift against each other, which the
    training records cannot see and an edit can. (On this toy the decay does not always make it
    smaller than the undecayed run's, so that is not asserted.)"""
    runs = {}
    for decay in (0.0, 20.0):
        trainer = _trainer(encoder, film_decay=decay, region_weight=100.0)
        for _ in range(200):
            trainer.train_step()
        norm = torch.cat([w.flatten() for w in trainer.ema.film_text_weights()]).norm().item()
        runs[decay] = (_edit(trainer, encoder, RECORDS[0], RECORDS[2])[0],
                       _edit(trainer, encoder, RECORDS[0], RECORDS[1])[1], norm)
    assert RECORDS[0]["smoking"] == "yes" and RECORDS[2]["smoking"] == "no"
    assert RECORDS[0]["diagnosis"] != RECORDS[1]["diagnosis"]
    assert all(18.0 < runs[decay][0] < 23.0 for decay in runs)
    assert runs[20.0][1] < 1.5  # under 8 % of the planted shift
    assert runs[20.0][2] < 0.15 * runs[0.0][2]
