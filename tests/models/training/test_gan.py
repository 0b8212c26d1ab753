"""The GAN trainer: it learns, a resumed run equals an uninterrupted one, and saves safely."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from cfx.models.checkpoint import load_training_state, save_training_state
from cfx.models.training.gan import GANSettings, GANTrainer, TrainingBatch
from tests.models.conftest import (
    FIELDS,
    PHRASES,
    RECORDS,
    conditions,
    encode_record,
    phrases_of,
    tiny_generator,
)

_HU = np.array([-1000.0, -850.0, -800.0, -950.0], np.float32)  # per channel


def source(rng: np.random.Generator, batch_size: int) -> TrainingBatch:
    """Blocky label maps; CT = a value per label, +20 HU inside the labels for smokers, plus
    noise. Each field of a record is missing with probability 1/4; phrases are listed in reverse
    field order (the trainer must read them by name)."""
    coarse = rng.integers(0, 4, (batch_size, 4, 4, 4))
    labels = coarse.repeat(4, 1).repeat(4, 2).repeat(4, 3)
    records = [RECORDS[int(i)] for i in rng.integers(len(RECORDS), size=batch_size)]
    keep = rng.random((batch_size, len(FIELDS))) >= 0.25
    records = [{f: r[f] for f, k in zip(FIELDS, row, strict=True) if k}
               for r, row in zip(records, keep, strict=True)]
    shift = np.array([20.0 if r.get("smoking") == "yes" else 0.0 for r in records], np.float32)
    ct = _HU[labels] + shift[:, None, None, None] * (labels > 0) \
        + rng.normal(0, 10, labels.shape).astype(np.float32)
    phrases = [dict(reversed(phrases_of(r).items())) for r in records]
    return TrainingBatch(labels, ct, phrases)


def _trainer(encoder, fusion="affine", seed=0, **settings):
    generator = tiny_generator(fusion, activate=False)
    settings = GANSettings(**{"batch_size": 2, "lr_generator": 1e-3, "lr_discriminator": 1e-3,
                              "seed": seed, "discriminator_layers": 1, **settings})
    trainer = GANTrainer(generator, encoder, source, settings)
    trainer.fit_text([PHRASES[field] for field in FIELDS])
    trainer.calibrate_output(source(np.random.default_rng(99), 8))
    return trainer


@pytest.mark.parametrize("fusion", ["affine", "cross-attention"])
def test_a_few_steps_lower_the_l1_and_move_every_network(encoder, fusion):
    trainer = _trainer(encoder, fusion)
    before = {k: v.clone() for k, v in trainer.network.state_dict().items()}
    d_before = [p.clone() for p in trainer.discriminator.parameters()]
    losses = [trainer.train_step() for _ in range(12)]
    assert trainer.step == 12
    assert all(np.isfinite(list(loss.values())).all() for loss in losses)
    assert np.mean([loss["l1"] for loss in losses[-3:]]) < losses[0]["l1"]
    after = trainer.network.state_dict()
    assert not torch.equal(before["head.weight"], after["head.weight"])
    assert not torch.equal(before["fuse.0.project.weight" if fusion == "affine"
                                  else "fuse.0.out.weight"],
                           after["fuse.0.project.weight" if fusion == "affine"
                                 else "fuse.0.out.weight"])
    d_after = list(trainer.discriminator.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(d_before, d_after, strict=True))
    # the EMA lags the live weights
    assert not torch.equal(trainer.ema.head.weight, trainer.network.head.weight)
    for ema, live in zip(trainer.ema.text, trainer.network.text, strict=True):
        assert torch.equal(ema.mean, live.mean) and ema.mean.abs().sum() > 0


def test_calibrate_output_starts_at_the_mean_intensity(encoder):
    trainer = _trainer(encoder)
    batch = source(np.random.default_rng(99), 8)
    expected = float(trainer.network.from_hu(torch.from_numpy(batch.ct)).mean())
    assert trainer.network.head.bias.item() == pytest.approx(expected, abs=1e-6)
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

    for a, b in ((straight.network, resumed.network), (straight.ema, resumed.ema),
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
    trainer.fit_text([PHRASES[field] for field in FIELDS])
    assert trainer._autocast
    losses = [trainer.train_step() for _ in range(3)]
    assert all(np.isfinite(list(loss.values())).all() for loss in losses)


def test_l1_only_leaves_the_discriminator_alone(encoder):
    trainer = _trainer(encoder)
    trainer.settings = replace(trainer.settings, adversarial_weight=0.0)
    d_before = {k: v.clone() for k, v in trainer.discriminator.state_dict().items()}
    head = trainer.network.head.weight.clone()
    losses = [trainer.train_step() for _ in range(3)]
    assert all(loss.keys() == {"l1", "grad_norm_g"} for loss in losses)
    assert all(torch.equal(d_before[k], v)
               for k, v in trainer.discriminator.state_dict().items())
    assert trainer.optimizer_d.state_dict()["state"] == {}
    assert not torch.equal(head, trainer.network.head.weight)


@pytest.mark.parametrize("fusion", ["affine", "cross-attention"])
def test_fit_text_fits_each_field_on_its_phrases(encoder, fusion):
    """The trainer's fit equals fitting the generator by hand, and the EMA gets it too."""
    trainer = _trainer(encoder, fusion)
    encodings = [encoder.encode(PHRASES[field]) for field in FIELDS]
    expected = tiny_generator(fusion, activate=False)
    expected.fit_text([e.pooled for e in encodings],
                      torch.cat([e.tokens[e.mask] for e in encodings]))
    for network in (trainer.network, trainer.ema):
        state = network.state_dict()
        for key, value in expected.state_dict().items():
            if key.startswith(("text.", "tokens.")):
                torch.testing.assert_close(state[key], value, atol=1e-6, rtol=1e-5)


def test_a_batch_reads_each_record_by_field_name(encoder):
    """Each row's condition is the generator's condition of that record (fields matched by name,
    whatever the order of the phrases; missing fields as None), rows in batch order."""
    trainer = _trainer(encoder, "cross-attention")
    records = [RECORDS[0], {"diagnosis": "UILD", "smoking": "no"}, {}, RECORDS[0]]
    phrases = [dict(reversed(phrases_of(r).items())) for r in records]
    got = trainer._condition(phrases)
    expected = conditions(trainer.network, encoder, records)
    assert got.pooled.shape == (4, 4) and got.tokens.shape == expected.tokens.shape
    torch.testing.assert_close(got.pooled, expected.pooled, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.tokens, expected.tokens, atol=1e-5, rtol=1e-5)
    assert torch.equal(got.token_mask, expected.token_mask)
    assert not got.token_mask[1].all() and got.token_mask[2].sum() == 1  # padded rows
    one = trainer.network.condition(encode_record(trainer.network, encoder, records[1]))
    assert torch.equal(one.pooled, got.pooled[1:2])  # the cached row, exactly


def test_learns_the_planted_smoking_shift_the_same_for_any_record(encoder):
    """L1 training on the toy source recovers the +20 HU planted inside the labels for
    ``Smoker: yes``, and, the fields being read one by one, the yes/no edit moves a full record
    as far as a smoking-only one (a whole-prompt embedding moved it about half as far)."""
    trainer = _trainer(encoder, lr_generator=3e-3, batch_size=4, adversarial_weight=0.0,
                       ema_decay=0.95)
    for _ in range(200):
        trainer.train_step()
    batch = source(np.random.default_rng(5), 4)
    labels = torch.nn.functional.one_hot(torch.from_numpy(batch.labels).long(), 4)
    labels = labels.permute(0, 4, 1, 2, 3).float()
    noise = torch.randn(4, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    inside = torch.from_numpy(batch.labels) > 0

    def shift(record, other):  # mean HU change, inside and outside the labels
        with torch.no_grad():
            out = [trainer.ema.to_hu(trainer.ema(
                labels, noise, conditions(trainer.ema, encoder, [r] * 4)))[:, 0]
                for r in (record, other)]
        change = out[0] - out[1]
        return change[inside].mean().item(), change[~inside].mean().item()

    full, full_outside = shift(RECORDS[0], RECORDS[2])  # smoking yes vs no, all else equal
    alone, _ = shift({"smoking": "yes"}, {"smoking": "no"})
    assert 10 < full < 30  # planted +20 HU
    assert full - full_outside > 5  # where it was planted
    assert abs(full - alone) < 1
    diagnosis, _ = shift(RECORDS[0], RECORDS[1])  # IPF vs UILD: nothing planted
    assert abs(diagnosis) < 5
