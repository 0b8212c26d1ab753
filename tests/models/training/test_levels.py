"""Label levels fitted in closed form (both architectures), and the GAN's level hold."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from cfx.models.inference import draw_noise, generate_volumes, label_means
from cfx.models.nets.cond_gan3d import CondGAN3DGenerator
from cfx.models.training.gan import GANSettings, GANTrainer, TrainingBatch
from cfx.models.training.levels import fit_levels, level_draw
from tests.models.conftest import (
    FIELD_DIMS,
    FIELDS,
    PHRASES,
    RECORDS,
    conditions,
    fit_text,
    tiny_generator,
)
from tests.models.training.test_gan import source


def _planted_draws(weight, bias, seed=0, noise=0.0):
    """Batches of random designs and label maps whose CT is each voxel's label level, the
    planted linear map of the row's design (plus Gaussian noise)."""
    rng = torch.Generator().manual_seed(seed)

    def draw():
        design = torch.randn(6, weight.shape[1], generator=rng)
        which = torch.randint(0, weight.shape[0] - 1, (6, 4, 4, 4), generator=rng)  # last: none
        labels = F.one_hot(which, weight.shape[0]).permute(0, 4, 1, 2, 3).float()
        levels = design @ weight.T + bias  # (6, L)
        clean = torch.einsum("nl,nlxyz->nxyz", levels, labels)[:, None]
        return design, labels, clean + noise * torch.randn(clean.shape, generator=rng)

    return draw


def test_the_fit_recovers_planted_levels_and_gives_an_absent_label_zero():
    weight = torch.tensor([[0.3, -0.2, 0.0], [0.0, 0.5, 0.1], [0.9, 0.9, 0.9]])
    bias = torch.tensor([-0.5, 0.25, 0.7])
    fitted_weight, fitted_bias = fit_levels(_planted_draws(weight, bias), rows=40)
    torch.testing.assert_close(fitted_weight[:2], weight[:2], rtol=0, atol=1e-5)
    torch.testing.assert_close(fitted_bias[:2], bias[:2], rtol=0, atol=1e-5)
    assert not fitted_weight[2].any() and fitted_bias[2] == 0  # never drawn


def test_the_fit_is_numpys_voxelwise_least_squares_on_the_rows_drawn():
    weight, bias = torch.tensor([[0.3, -0.2], [0.1, 0.4], [0.0, 0.0]]), torch.zeros(3)
    draw = _planted_draws(weight, bias, seed=4, noise=0.1)
    fitted_weight, fitted_bias = fit_levels(draw, rows=13)  # three batches of 6: 18 rows
    replay = _planted_draws(weight, bias, seed=4, noise=0.1)
    rows = [replay() for _ in range(3)]
    design = np.concatenate([np.repeat(d.numpy(), 64, 0) for d, _, _ in rows]).astype(float)
    design = np.hstack([design, np.ones((len(design), 1))])
    which = np.concatenate([lab.argmax(1).reshape(len(lab), -1).numpy().ravel()
                            for _, lab, _ in rows])
    target = np.concatenate([c.reshape(len(c), -1).numpy().ravel() for _, _, c in rows])
    for label in range(2):
        fit = np.linalg.lstsq(design[which == label], target[which == label], rcond=None)[0]
        np.testing.assert_allclose(fitted_weight[label].numpy(), fit[:-1], atol=1e-5)
        np.testing.assert_allclose(fitted_bias[label].numpy(), fit[-1], atol=1e-5)


class _Cohort:
    """A fixed cohort of ``n`` rows of the toy source, read by index (as ``cfx train``'s
    cohort sources are); ``read`` keeps the indices each batch asked for."""

    def __init__(self, n):
        self.rows, self.cohort_size, self.read = source(np.random.default_rng(7), n), n, []

    def whole_of(self, subjects):
        self.read.append([int(i) for i in subjects])
        return TrainingBatch(self.rows.labels[subjects], self.rows.ct[subjects],
                             [self.rows.phrases[i] for i in subjects])

    def __call__(self, rng, batch_size):
        return self.whole_of(rng.integers(self.cohort_size, size=batch_size))


@pytest.mark.parametrize(("rows", "passes"), [(20, 2), (27, 3), (5, 1)])
def test_a_fixed_cohort_is_read_in_whole_passes_each_subject_equally_often(rows, passes):
    cohort = _Cohort(9)
    draw, fitted_rows = level_draw(cohort, np.random.default_rng(0), rows, batch_size=4)
    assert fitted_rows == 9 * passes
    read = 0
    while read < fitted_rows:
        read += len(draw().phrases)
    assert read == fitted_rows and [len(b) for b in cohort.read][:2] == [4, 4]
    order = sum(cohort.read, [])
    for start in range(0, len(order), 9):  # each pass every subject once, in its own order
        assert sorted(order[start:start + 9]) == list(range(9))
    assert order[:9] != order[9:18] or passes == 1


def test_a_stream_gives_whole_subjects_and_a_source_without_them_its_rows():
    calls = []

    class Stream:
        def whole(self, rng, batch_size):
            calls.append(("whole", batch_size))

        def __call__(self, rng, batch_size):
            calls.append(("rows", batch_size))

    stream = Stream()
    for src in (stream, stream.__call__):
        draw, rows = level_draw(src, np.random.default_rng(0), 30, batch_size=4)
        draw()
        assert rows == 30
    assert calls == [("whole", 4), ("rows", 4)]


def test_a_gan_fits_a_fixed_cohorts_levels_on_each_subject_once(encoder):
    """Two passes over nine subjects give numpy's voxelwise least squares over the nine, each
    counted once (rows drawn with replacement would weight some twice and some not at all)."""
    cohort = _Cohort(9)
    torch.manual_seed(0)
    generator = CondGAN3DGenerator(FIELDS, FIELD_DIMS, channels=(4, 8, 8), text_width=32,
                                   token_dims=8, noise_dims=2, label_levels=True)
    trainer = GANTrainer(generator, encoder, cohort, GANSettings(batch_size=4, level_rows=18))
    trainer.fit_text([PHRASES[field] for field in FIELDS])
    trainer.fit_levels(18)
    labels, real = trainer._tensors(cohort.rows)
    design = trainer._condition(cohort.rows.phrases).pooled.double().numpy()
    design = np.hstack([design, np.ones((9, 1))])
    counts = labels.sum((2, 3, 4)).double().numpy()
    means = ((real * labels).sum((2, 3, 4)).double().numpy() / np.maximum(counts, 1))
    for label in range(4):
        weights = np.sqrt(counts[:, label])[:, None]
        fit = np.linalg.lstsq(design * weights, means[:, label] * weights[:, 0], rcond=None)[0]
        np.testing.assert_allclose(generator.label_levels.weight[label].detach().numpy(),
                                   fit[:-1], atol=1e-5)
        np.testing.assert_allclose(generator.label_levels.bias[label].item(), fit[-1],
                                   atol=1e-5)


def _gan_trainer(encoder, level_rows):
    torch.manual_seed(0)
    generator = CondGAN3DGenerator(FIELDS, FIELD_DIMS, channels=(4, 8, 8), text_width=32,
                                   token_dims=8, noise_dims=2, label_levels=True)
    settings = GANSettings(batch_size=4, lr_generator=3e-3, lr_discriminator=3e-3,
                           discriminator_layers=1, adversarial_weight=0.0, ema_decay=0.95,
                           level_rows=level_rows)
    trainer = GANTrainer(generator, encoder, source, settings)
    trainer.fit_text([PHRASES[field] for field in FIELDS])
    return trainer


def test_a_gan_with_fitted_levels_holds_them_and_starts_its_output_at_the_rest(encoder):
    """The toy source plants +20 HU inside the labels for smokers: the fitted smoker -
    non-smoker level difference is that, and none in the background; no step moves the
    levels; the output's bias starts at the mean of the CT less the level map."""
    trainer = _gan_trainer(encoder, level_rows=256)
    trainer.fit_levels(256)
    assert trainer.rng.bit_generator.state == np.random.default_rng(0).bit_generator.state
    ema = trainer.ema
    pooled = conditions(ema, encoder, [RECORDS[0], RECORDS[2]]).pooled
    with torch.no_grad():
        yes, no = ema.label_levels(pooled) * 1024.0  # HU (half the default window)
    moved = (yes - no).tolist()
    assert abs(moved[0]) < 1.5 and all(18.0 < m < 22.0 for m in moved[1:])
    batch = source(np.random.default_rng(5), 8)
    trainer.calibrate_output(batch)
    labels, real = trainer._tensors(batch)
    with torch.no_grad():
        shift = trainer.network.label_levels(trainer._condition(batch.phrases).pooled)
    rest = real - torch.einsum("nl,nlxyz->nxyz", shift, labels)[:, None]
    assert trainer.network.head.bias.item() == pytest.approx(rest.mean().item(), abs=1e-6)
    fitted = {k: v.clone() for k, v in trainer.network.label_levels.state_dict().items()}
    for _ in range(2):
        trainer.train_step()
    for name, value in trainer.network.label_levels.state_dict().items():
        assert torch.equal(value, fitted[name])


def test_a_gan_without_fitted_levels_learns_them_by_steps(encoder):
    trainer = _gan_trainer(encoder, level_rows=0)
    before = trainer.network.label_levels.weight.detach().clone()
    trainer.train_step()
    assert not torch.equal(trainer.network.label_levels.weight, before)


def _levelled(encoder):
    """A tiny affine generator with random FiLM (it moves label means too) and random levels."""
    generator = fit_text(tiny_generator("affine"), encoder)
    levelled = CondGAN3DGenerator(FIELDS, FIELD_DIMS, channels=(4, 8, 8), text_width=32,
                                  token_dims=8, noise_dims=2, heads=2, label_levels=True,
                                  hold_levels=True).eval()
    levelled.load_state_dict(generator.state_dict(), strict=False)
    with torch.no_grad():
        levelled.label_levels.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(2))
        levelled.label_levels.bias.copy_(torch.tensor([0.01, -0.02, 0.03, 0.0]))
    return levelled


def test_the_record_moves_each_labels_mean_only_through_its_level(encoder):
    """By hand: each row is the generator's raw draw shifted, label by label, to the label
    means of the record-free draw less that record's level, plus its own level; so two rows'
    label means differ by exactly their levels' difference, which the raw draws do not."""
    levelled = _levelled(encoder)
    gen = torch.Generator().manual_seed(0)
    which = torch.randint(0, 4, (1, 16, 16, 16), generator=gen)
    labels = F.one_hot(which, 4).permute(0, 4, 1, 2, 3).float()
    noise, vector = draw_noise(levelled, (16, 16, 16), 1)
    condition = conditions(levelled, encoder, [RECORDS[0], RECORDS[5]])
    out = generate_volumes(levelled, labels, noise, vector, condition, (16, 16, 16))
    null = levelled.condition([None] * len(FIELDS))
    with torch.no_grad():
        raw = [levelled(labels, noise, condition.select([row]), vector) for row in range(2)]
        free = levelled(labels, noise, null, vector)
        levels = levelled.label_levels(condition.pooled)  # (2, 4) window units
        anchor = (label_means(free, labels) - levelled.label_levels(null.pooled)[0])
    for row in range(2):
        shift = anchor + levels[row] - label_means(raw[row], labels)
        expected = levelled.to_hu(raw[row] + shift[which][:, None])[0, 0]
        torch.testing.assert_close(out[row], expected, rtol=0, atol=1e-3)
    hu = 1024.0
    moved = label_means((out[1] - out[0])[None, None], labels)
    torch.testing.assert_close(moved, (levels[1] - levels[0]) * hu, rtol=0, atol=1e-2)
    unheld = label_means(((raw[1] - raw[0]) * hu), labels)
    assert (unheld - moved).abs().max() > 0.5  # HU: what the hold takes off
    levelled.config["hold_levels"] = False  # levels learnt by steps: the raw draws
    unheld = generate_volumes(levelled, labels, noise, vector, condition, (16, 16, 16))
    for row in range(2):
        torch.testing.assert_close(unheld[row], levelled.to_hu(raw[row])[0, 0], rtol=0,
                                   atol=1e-3)
    with pytest.raises(ValueError, match="hold_levels: needs label_levels"):
        CondGAN3DGenerator(FIELDS, FIELD_DIMS, hold_levels=True)
