"""The diffusion trainer: it learns, drops the condition, resumes bit for bit."""

import numpy as np
import pytest
import torch
from monai.networks.schedulers import DDPMScheduler

from cfx.models.checkpoint import load_training_state, save_training_state
from cfx.models.training.diffusion import DiffusionSettings, DiffusionTrainer
from tests.models.conftest import (
    FIELDS,
    PHRASES,
    RECORDS,
    encode_record,
    phrases_of,
    tiny_diffusion,
)
from tests.models.training.test_gan import source


def _trainer(encoder, prediction="v_prediction", **settings):
    settings = DiffusionSettings(**{"batch_size": 2, "lr": 1e-3, "ema_decay": 0.9, **settings})
    trainer = DiffusionTrainer(tiny_diffusion(activate=False, prediction=prediction), encoder,
                               source, settings)
    trainer.fit_text([PHRASES[field] for field in FIELDS])
    return trainer


def _spy_contexts(trainer, monkeypatch):
    """Record the context every training forward reads."""
    seen = []
    forward = type(trainer.network).forward

    def spy(self, sample, labels, timesteps, context):
        seen.append(context.detach().clone())
        return forward(self, sample, labels, timesteps, context)

    monkeypatch.setattr(type(trainer.network), "forward", spy)
    return seen


def test_a_few_steps_lower_the_loss_and_move_the_weights(encoder):
    trainer = _trainer(encoder, lr=3e-3)
    before = {k: v.clone() for k, v in trainer.network.state_dict().items()}
    losses = [trainer.train_step()["mse"] for _ in range(15)]
    assert trainer.step == 15 and np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < losses[0]
    after = trainer.network.state_dict()
    assert not torch.equal(before["unet.out.2.conv.weight"], after["unet.out.2.conv.weight"])
    attention = [k for k in after if "attn2.to_k" in k and k.endswith("weight")]
    assert attention and all(not torch.equal(before[k], after[k]) for k in attention)
    # the EMA lags the live weights; the whitening is the same in both
    assert not torch.equal(trainer.ema.unet.out[2].conv.weight,
                           trainer.network.unet.out[2].conv.weight)
    for ema, live in zip(trainer.ema.text, trainer.network.text, strict=True):
        assert torch.equal(ema.mean, live.mean) and ema.mean.abs().sum() > 0


def test_the_layers_that_read_the_record_learn_at_their_own_rate(encoder):
    trainer = _trainer(encoder, fusion_lr_scale=4.0)
    rest, text = trainer.optimizer.param_groups
    assert rest["lr"] == 1e-3 and text["lr"] == 4e-3
    names = {id(p): n for n, p in trainer.network.named_parameters()}
    text_names = sorted(names[id(p)] for p in text["params"])
    assert "unet.down_blocks.0.resnets.0.norm2.film.weight" in text_names
    assert all(".film." in n or ".attn2." in n for n in text_names)
    assert any(".attn2.to_k." in n for n in text_names)
    assert not any(".attn2." in names[id(p)] or ".film." in names[id(p)]
                   for p in rest["params"])
    assert len(rest["params"]) + len(text_names) == len(names)


def test_the_ema_warms_up_then_decays_at_the_set_rate(encoder):
    """Step k averages with decay min(ema_decay, (1 + k) / (10 + k)), so a short run's EMA is
    not mostly its initial weights."""
    trainer = _trainer(encoder, ema_decay=0.2)
    key = "unet.out.2.conv.weight"
    for step, decay in [(1, 2 / 11), (2, 0.2), (3, 0.2)]:
        average = trainer.ema.state_dict()[key].clone()
        trainer.train_step()
        live = trainer.network.state_dict()[key]
        assert trainer.step == step
        torch.testing.assert_close(trainer.ema.state_dict()[key],
                                   decay * average + (1 - decay) * live)


@pytest.mark.parametrize("prediction", ["v_prediction", "epsilon"])
def test_the_loss_is_the_prediction_error_of_ddpm_noising(encoder, monkeypatch, prediction):
    """The network sees x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) n and is scored on n
    (epsilon) or on v = sqrt(abar_t) n - sqrt(1 - abar_t) x_0 (velocity)."""
    trainer = _trainer(encoder, prediction, p_uncond=0.0)
    seen = []
    forward = type(trainer.network).forward

    def spy(self, sample, labels, timesteps, context):
        out = forward(self, sample, labels, timesteps, context)
        seen.append((sample.detach().clone(), timesteps.clone(), out.detach().clone()))
        return out

    monkeypatch.setattr(type(trainer.network), "forward", spy)
    rng_state = trainer.rng.bit_generator.state
    noise_state = trainer.noise.get_state()
    loss = trainer.train_step()["mse"]
    rng = np.random.default_rng()
    rng.bit_generator.state = rng_state
    batch = source(rng, 2)
    generator = torch.Generator().manual_seed(0)
    generator.set_state(noise_state)
    noise = torch.randn((2, 1, 16, 16, 16), generator=generator)
    timesteps = torch.randint(0, 1000, (2,), generator=generator)
    clean = trainer.network.from_hu(torch.from_numpy(batch.ct)[:, None])
    expected = DDPMScheduler(**trainer.network.noise_schedule).add_noise(clean, noise, timesteps)
    sample, seen_timesteps, predicted = seen[0]
    assert torch.equal(seen_timesteps, timesteps)
    torch.testing.assert_close(sample, expected)
    abar = DDPMScheduler(**trainer.network.noise_schedule).alphas_cumprod[timesteps]
    abar = abar.float().reshape(-1, 1, 1, 1, 1)
    target = noise if prediction == "epsilon" else abar.sqrt() * noise - (1 - abar).sqrt() * clean
    assert loss == pytest.approx(torch.nn.functional.mse_loss(predicted, target).item(),
                                 rel=1e-5)


def test_rows_read_their_records_by_field_name(encoder):
    """Each row's context is the model's condition of that record (fields matched by name,
    whatever the order of the phrases; missing fields as None)."""
    trainer = _trainer(encoder)
    records = [RECORDS[0], {"diagnosis": "UILD", "smoking": "no"}, {}]
    got = trainer._context([dict(reversed(phrases_of(r).items())) for r in records])
    expected = torch.cat([trainer.network.condition(encode_record(trainer.network, encoder, r))
                          for r in records])
    assert got.shape == (3, 3, 6)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("p_uncond", [0.0, 1.0])
def test_condition_dropout_trains_on_the_record_with_no_field(encoder, monkeypatch, p_uncond):
    trainer = _trainer(encoder, p_uncond=p_uncond, batch_size=4)
    seen = _spy_contexts(trainer, monkeypatch)
    for _ in range(3):
        trainer.train_step()
    null = trainer.network.null_condition()
    nulls = [torch.equal(row, null[0]) for context in seen for row in context]
    assert len(nulls) == 12
    if p_uncond == 1.0:
        assert all(nulls)
    else:  # only the source's own dropping can empty a record (probability 1/64 per row)
        assert sum(nulls) <= 1


def test_condition_dropout_rate(encoder, monkeypatch):
    trainer = _trainer(encoder, p_uncond=0.5, batch_size=8)
    seen = _spy_contexts(trainer, monkeypatch)
    for _ in range(6):
        trainer.train_step()
    null = trainer.network.null_condition()
    share = np.mean([torch.equal(row, null[0]) for context in seen for row in context])
    assert 0.3 < share < 0.75  # 48 rows at 0.5 (+ 1/64 from the source)


def test_resume_equals_an_uninterrupted_run(encoder, tmp_path):
    straight = _trainer(encoder)
    for _ in range(4):
        straight.train_step()

    first = _trainer(encoder)
    for _ in range(2):
        first.train_step()
    save_training_state(tmp_path, *first.training_state())
    resumed = DiffusionTrainer(tiny_diffusion(activate=False, seed=5), encoder, source,
                               first.settings)
    resumed.load_training_state(*load_training_state(tmp_path))
    assert resumed.step == 2
    for _ in range(2):
        resumed.train_step()

    for a, b in ((straight.network, resumed.network), (straight.ema, resumed.ema)):
        sa, sb = a.state_dict(), b.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    sa, sb = straight.optimizer.state_dict(), resumed.optimizer.state_dict()
    assert all(torch.equal(sa["state"][i][k], sb["state"][i][k])
               for i in sa["state"] for k in sa["state"][i])
    assert straight.rng.bit_generator.state == resumed.rng.bit_generator.state
    assert torch.equal(straight.noise.get_state(), resumed.noise.get_state())


def test_fit_text_fits_each_field_on_its_phrases(encoder):
    trainer = _trainer(encoder)
    expected = tiny_diffusion(activate=False)
    expected.fit_text([encoder.encode(PHRASES[field]).pooled for field in FIELDS])
    for network in (trainer.network, trainer.ema):
        state = network.state_dict()
        for key, value in expected.state_dict().items():
            if key.startswith("text."):
                torch.testing.assert_close(state[key], value, atol=1e-6, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_mixed_precision_steps_on_cuda(encoder):
    trainer = DiffusionTrainer(tiny_diffusion(activate=False), encoder, source,
                               DiffusionSettings(batch_size=2), device="cuda")
    trainer.fit_text([PHRASES[field] for field in FIELDS])
    assert trainer._autocast
    assert all(np.isfinite(trainer.train_step()["mse"]) for _ in range(3))
