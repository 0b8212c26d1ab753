"""A GAN with label levels: the record's pull on each label's mean learnt on its own path."""

import numpy as np
import torch

from cfx.models.nets.cond_gan3d import CondGAN3DGenerator
from cfx.models.training.gan import GANSettings, GANTrainer
from tests.models.conftest import FIELD_DIMS, FIELDS, PHRASES, RECORDS, conditions
from tests.models.training.test_gan import source
from tests.models.training.test_gan_edit import _edit


def _trainer(encoder, label_levels):
    torch.manual_seed(0)
    generator = CondGAN3DGenerator(FIELDS, FIELD_DIMS, channels=(4, 8, 8), text_width=32,
                                   token_dims=8, noise_dims=2, label_levels=label_levels)
    settings = GANSettings(batch_size=4, lr_generator=3e-3, lr_discriminator=3e-3,
                           discriminator_layers=1, adversarial_weight=0.0, ema_decay=0.95)
    trainer = GANTrainer(generator, encoder, source, settings)
    trainer.fit_text([PHRASES[field] for field in FIELDS])
    trainer.calibrate_output(source(np.random.default_rng(99), 8))
    return trainer


def test_the_levels_learn_the_planted_shift_inside_the_labels_and_none_outside(encoder):
    """The toy source plants +20 HU inside the labels for smokers, nothing in the background.
    After 200 L1 steps (measured: the levelled generator's smoking edit +20.6 HU inside the
    labels, the plain one's +15.8 HU), the levelled generator recovers the effect within 10 %,
    and its level path alone carries most of it, where it was planted: the smoker - non-smoker
    difference of each label's level is near +20 HU for the labels and near 0 for the
    background."""
    assert RECORDS[0] == {**RECORDS[2], "smoking": "yes"} and RECORDS[2]["smoking"] == "no"
    edits = {}
    for levels in (False, True):
        trainer = _trainer(encoder, levels)
        for _ in range(200):
            trainer.train_step()
        edits[levels] = _edit(trainer, encoder, RECORDS[0], RECORDS[2])[0]
    assert 18.0 < edits[True] < 22.0
    assert edits[True] - 2.0 > edits[False]
    ema = trainer.ema
    pooled = conditions(ema, encoder, [RECORDS[0], RECORDS[2]]).pooled
    with torch.no_grad():
        yes, no = ema.label_levels(pooled)
    half_window = (ema.hu_window[1] - ema.hu_window[0]) / 2
    levels = ((yes - no) * half_window).tolist()  # HU per label channel
    assert abs(levels[0]) < 3.0  # background
    assert all(12.0 < level < 28.0 for level in levels[1:])
