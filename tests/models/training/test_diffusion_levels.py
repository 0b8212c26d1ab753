"""A diffusion model with label levels: each label's level a linear map of the record, fitted
by least squares; the network trained and sampled on the residual."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from cfx.models.sampling import draw_diffusion_noise, sample_volumes
from cfx.models.training.diffusion import DiffusionSettings, DiffusionTrainer
from tests.models.conftest import FIELDS, PHRASES, RECORDS, tiny_diffusion
from tests.models.test_sampling import SHAPE, _context, _ct, _labels
from tests.models.training.test_gan import source


def _trainer(encoder, lr=3e-3, seed=0):
    settings = DiffusionSettings(batch_size=4, lr=lr, ema_decay=0.9, seed=seed)
    trainer = DiffusionTrainer(tiny_diffusion(activate=False, label_levels=True), encoder,
                               source, settings)
    trainer.fit_text([PHRASES[field] for field in FIELDS])
    trainer.start_levels()
    return trainer


def _fitted(encoder, levels):
    """An activated tiny model with label levels: random levels, or all zero."""
    model = tiny_diffusion(label_levels=True)
    model.fit_text([encoder.encode(PHRASES[field]).pooled for field in FIELDS])
    with torch.no_grad():
        if levels:
            generator = torch.Generator().manual_seed(3)
            model.levels.weight.copy_(torch.randn(model.levels.weight.shape, generator=generator)
                                      * 0.05)
            model.levels.bias.copy_(torch.tensor([0.02, -0.03, 0.05, 0.01]))
        else:
            model.levels.weight.zero_()
            model.levels.bias.zero_()
    return model


def test_the_level_map_is_each_labels_linear_map_of_the_record_where_the_label_is(encoder):
    model = _fitted(encoder, levels=True)
    labels, context = _labels(), _context(model, encoder, RECORDS[0], RECORDS[5])
    with torch.no_grad():
        levels = model.level_map(labels, context)
    weight, bias = model.levels.weight.detach().numpy(), model.levels.bias.detach().numpy()
    which = labels[0].argmax(0).numpy()  # the label of each voxel
    for row in range(2):
        flat = context[row].flatten().numpy()
        expected = (weight @ flat + bias)[which]  # by hand, per voxel
        np.testing.assert_allclose(levels[row, 0].numpy(), expected, rtol=1e-5, atol=1e-6)
    plain = tiny_diffusion()
    assert plain.levels is None and not plain.level_map(labels, context).any()


def test_a_new_run_starts_the_levels_at_one_batchs_label_means(encoder):
    trainer = _trainer(encoder)
    batch = source(np.random.default_rng(1), 4)  # seed + 1, as the docstring says
    window = np.clip((batch.ct[:, None] + 1024.0) / 1024.0 - 1.0, -1, 1)  # clipped, as served
    expected = [window[:, 0][batch.labels == label].mean() for label in range(4)]
    for network in (trainer.network, trainer.ema):
        np.testing.assert_allclose(network.levels.bias.detach().numpy(), expected, rtol=1e-5)
    assert trainer.rng.bit_generator.state == np.random.default_rng(0).bit_generator.state


def test_the_network_is_trained_on_the_ct_less_the_level_map(encoder, monkeypatch):
    trainer = _trainer(encoder)
    seen = []
    add_noise = trainer.scheduler.add_noise
    monkeypatch.setattr(trainer.scheduler, "add_noise",
                        lambda original, noise, t: seen.append(original) or add_noise(
                            original, noise, t))
    batch = source(np.random.default_rng(0), 4)  # the first batch the step draws
    before = trainer.network.levels.bias.detach().clone()
    losses = trainer.train_step()
    assert set(losses) == {"mse", "grad_norm", "level_mse"}
    labels = F.one_hot(torch.from_numpy(batch.labels).long(), 4).permute(0, 4, 1, 2, 3).float()
    clean = ((torch.from_numpy(batch.ct)[:, None] + 1024.0) / 1024.0 - 1.0).clamp(-1, 1)
    # the level map of the step's records has the biases of before the step (the weights were
    # zero, so the records do not enter it yet)
    levels = torch.einsum("l,nlxyz->nxyz", before, labels)[:, None]
    torch.testing.assert_close(seen[0], clean - levels, rtol=0, atol=1e-5)
    assert losses["level_mse"] == pytest.approx(F.mse_loss(levels, clean).item(), rel=1e-4)


def test_the_levels_learn_the_planted_shift_inside_the_labels_and_none_outside(encoder):
    """The toy source plants +20 HU inside the labels for smokers and nothing in the background
    (noise SD 10 HU). After 150 steps the smoker - non-smoker difference of each label's level
    (EMA weights, measured: +19.6..20.0 HU inside, 0.0 HU outside) is the planted one."""
    trainer = _trainer(encoder)
    losses = [trainer.train_step()["level_mse"] for _ in range(150)]
    assert np.mean(losses[-10:]) < losses[0]
    ema = trainer.ema
    context = _context(ema, encoder, RECORDS[0], RECORDS[2])  # smoking yes, no
    with torch.no_grad():
        yes, no = ema.levels(context.flatten(1))
    shift = ((yes - no) * 1024.0).tolist()  # HU per label
    assert abs(shift[0]) < 2.0
    assert all(17.0 < s < 23.0 for s in shift[1:])


def test_a_sample_is_the_residual_drawn_plus_each_rows_level_map(encoder):
    """The network never reads the levels, so from the same noise a model with levels draws
    the same residual as with zero levels, plus its level map (guided as the prediction)."""
    levelled, plain = _fitted(encoder, True), _fitted(encoder, False)
    labels, context = _labels(), _context(levelled, encoder, RECORDS[0], RECORDS[2])
    null = levelled.null_condition(2)
    for guidance in (1.0, 2.5):
        outputs = [sample_volumes(model, labels, context, draw_diffusion_noise(SHAPE, 0),
                                  steps=4, guidance=guidance) for model in (levelled, plain)]
        with torch.no_grad():
            conditional = levelled.level_map(labels, context)[:, 0]
            unconditional = levelled.level_map(labels, null)[:, 0]
        expected = (unconditional + guidance * (conditional - unconditional)) * 1024.0
        inside = (outputs[0].abs() < 1023.0) & (outputs[1].abs() < 1023.0)  # not clipped
        assert inside.float().mean() > 0.2
        torch.testing.assert_close((outputs[0] - outputs[1])[inside], expected[inside],
                                   rtol=0, atol=0.05)


def test_held_voxels_stay_the_ct_with_levels(encoder):
    model = _fitted(encoder, True)
    labels, context = _labels(), _context(model, encoder, RECORDS[0], RECORDS[2])
    keep = torch.zeros(1, 1, *SHAPE, dtype=torch.bool)
    keep[..., :8] = True
    out = sample_volumes(model, labels, context, draw_diffusion_noise(SHAPE, 0), steps=6,
                         ct=_ct(), strength=1.0, keep=keep)
    ct = model.to_hu(model.from_hu(_ct()))[0, 0]
    held = keep[0, 0]
    for row in out:
        torch.testing.assert_close(row[held], ct[held], rtol=0, atol=0.01)
    assert (out[0] - out[1])[~held].abs().mean() > 1.0  # the records differ where not held
