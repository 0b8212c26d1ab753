"""The GAN's minimal-edit loss: the change between one draw read with two records."""

import numpy as np
import torch

from tests.models.conftest import RECORDS, conditions
from tests.models.training.test_gan import _trainer, source


def _edit(trainer, encoder, record, other):
    """Mean |HU change| of the EMA generator between two records over a fixed batch."""
    batch = source(np.random.default_rng(5), 4)
    labels = torch.nn.functional.one_hot(torch.from_numpy(batch.labels).long(), 4)
    labels = labels.permute(0, 4, 1, 2, 3).float()
    noise = torch.randn(4, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = (trainer.ema.to_hu(trainer.ema(labels, noise, conditions(trainer.ema, encoder,
                                                                        [r] * 4)))
                for r in (record, other))
    inside = torch.from_numpy(batch.labels)[:, None] > 0
    change = a - b
    return change[inside].mean().item(), change.abs().mean().item()


def test_the_first_step_has_no_edit_because_the_text_starts_silent(encoder):
    trainer = _trainer(encoder, edit_weight=5.0)
    first = trainer.train_step()
    assert first["edit"] == 0.0  # the fusion layers start at zero: no record moves anything
    second = trainer.train_step()
    assert second["edit"] > 0.0
    assert "edit" not in _trainer(encoder).train_step()


def test_the_edit_loss_shrinks_the_unplanted_edits_more_than_the_planted_one(encoder):
    """The toy source plants +20 HU inside the labels for smokers and nothing for diagnosis.
    After 150 steps without and with an edit weight of 5 (measured: smoking +17.8 and +14.5 HU,
    the unplanted IPF-vs-UILD edit 1.38 and 0.98 HU of mean |change|), the planted edit keeps
    most of its size and the unplanted one loses more of its own."""
    runs = {}
    for weight in (0.0, 5.0):
        trainer = _trainer(encoder, lr_generator=3e-3, batch_size=4, adversarial_weight=0.0,
                           ema_decay=0.95, edit_weight=weight)
        for _ in range(150):
            trainer.train_step()
        runs[weight] = (_edit(trainer, encoder, RECORDS[0], RECORDS[2])[0],
                        _edit(trainer, encoder, RECORDS[0], RECORDS[1])[1])
    (smoking, unplanted), (smoking_free, unplanted_free) = runs[5.0], runs[0.0]
    assert 10 < smoking_free < 30 and smoking > 0.75 * smoking_free
    assert unplanted < 0.8 * unplanted_free
    assert smoking / smoking_free > unplanted / unplanted_free
