"""The diffusion sampling loop: deterministic for a seed, guidance, noise shared by paired rows,
from a CT, sliding windows. What each sampler must do is in ``samplers/test_conformance.py``."""

import pytest
import torch
from monai.networks.schedulers import DDIMScheduler

from cfx.models.samplers import make_sampler
from cfx.models.sampling import draw_diffusion_noise, sample_volumes, step_noise_seed
from tests.models.conftest import FIELDS, PHRASES, RECORDS, encode_record, tiny_diffusion

SHAPE = (16, 16, 16)


def _fitted(encoder, activate=True, **config):
    model = tiny_diffusion(activate=activate, **config)
    model.fit_text([encoder.encode(PHRASES[field]).pooled for field in FIELDS])
    return model


@pytest.fixture(scope="module")
def model(encoder):
    return _fitted(encoder)


def _labels(shape=SHAPE, seed=0):
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, 4, (1, *(n // 4 for n in shape)), generator=gen)
    labels = coarse.repeat_interleave(4, 1).repeat_interleave(4, 2).repeat_interleave(4, 3)
    return torch.nn.functional.one_hot(labels, 4).permute(0, 4, 1, 2, 3).float()


def _ddim(model, eta):
    return make_sampler("ddim", model.noise_schedule, eta=eta)


def _context(model, encoder, *records):
    return torch.cat([model.condition(encode_record(model, encoder, r)) for r in records])


def _ct(shape=SHAPE, seed=0):
    """A CT in HU: blocks of lung, soft tissue and air."""
    hu = torch.tensor([-1000.0, -850.0, 40.0, -900.0])
    return hu[_labels(shape, seed).argmax(1, keepdim=True)]


def test_noise_is_a_function_of_the_seed():
    a, b, c = (draw_diffusion_noise(SHAPE, s) for s in (3, 3, 4))
    assert a.initial.shape == (1, 1, *SHAPE)
    assert torch.equal(a.initial, b.initial) and a.step_seed == b.step_seed
    assert not torch.equal(a.initial, c.initial) and a.step_seed != c.step_seed
    seeds = [step_noise_seed(a.step_seed, k) for k in range(50)]
    assert len(set(seeds)) == 50 and seeds == [step_noise_seed(a.step_seed, k) for k in range(50)]
    assert all(0 <= seed < 2**63 for seed in seeds)


@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_deterministic_for_a_seed_and_null_pairs_are_identical(model, encoder, eta):
    labels, context = _labels(), _context(model, encoder, RECORDS[0], RECORDS[2], RECORDS[0])

    def run(context, seed):
        return sample_volumes(model, labels, context, draw_diffusion_noise(SHAPE, seed), steps=6,
                              sampler=_ddim(model, eta))

    first, again, other = run(context, 3), run(context, 3), run(context[:1], 4)
    assert first.shape == (3, *SHAPE) and first.dtype == torch.float32
    assert torch.equal(first, again)
    assert torch.equal(first[0], first[2])  # the same record twice: a null pair
    assert (first[0] - first[1]).abs().mean() > 0.1  # smoking yes vs no, HU
    assert (first[0] - other[0]).abs().mean() > 1.0
    assert torch.all((first >= -1024) & (first <= 1024))


def test_stochastic_steps_add_noise_shared_by_every_row(model, encoder):
    """With eta > 0 the steps add noise (unlike eta 0), and every row adds the same: at guidance
    0 the text is ignored, so different records give identical volumes only if so."""
    labels, context = _labels(), _context(model, encoder, RECORDS[0], RECORDS[2])
    noise = draw_diffusion_noise(SHAPE, 1)
    deterministic = sample_volumes(model, labels, context, noise, steps=6, guidance=0)
    stochastic = sample_volumes(model, labels, context, noise, steps=6, guidance=0,
                                sampler=_ddim(model, 1.0))
    assert torch.equal(deterministic[0], deterministic[1])
    assert torch.equal(stochastic[0], stochastic[1])
    assert (stochastic[0] - deterministic[0]).abs().mean() > 1.0


def test_guidance_zero_ignores_the_text_and_larger_guidance_scales_the_difference(model,
                                                                                  encoder):
    labels, context = _labels(), _context(model, encoder, RECORDS[0], RECORDS[2])
    noise = draw_diffusion_noise(SHAPE, 2)
    unconditional = sample_volumes(model, labels, context, noise, steps=4, guidance=0)
    plain = sample_volumes(model, labels, context, noise, steps=4, guidance=1)
    guided = sample_volumes(model, labels, context, noise, steps=4, guidance=3)
    assert torch.equal(unconditional[0], unconditional[1])
    null = sample_volumes(model, labels, model.null_condition(), noise, steps=4)
    assert torch.equal(unconditional[0], null[0])  # guidance 0 = the record with no field
    assert (plain[0] - unconditional[0]).abs().mean() > 0.1
    assert (guided[0] - plain[0]).abs().mean() > 0.1
    assert (guided[0] - guided[1]).abs().mean() > (plain[0] - plain[1]).abs().mean()


def test_guided_prediction_mixes_the_two_branches(model, encoder, monkeypatch):
    """eps = eps_u + W (eps_c - eps_u), checked on one step against the model's two outputs."""
    labels, context = _labels(), _context(model, encoder, RECORDS[0])
    noise = draw_diffusion_noise(SHAPE, 5)
    with torch.no_grad():
        t = torch.tensor([999])
        conditional = model(noise.initial, labels, t, context)
        unconditional = model(noise.initial, labels, t, model.null_condition())
    seen = []
    original = DDIMScheduler.step

    def spy(self, model_output, timestep, sample, eta=0.0, generator=None):
        seen.append(model_output)
        return original(self, model_output, timestep, sample, eta, generator)

    monkeypatch.setattr(DDIMScheduler, "step", spy)
    sample_volumes(model, labels, context, noise, steps=1, guidance=2.5)
    torch.testing.assert_close(seen[0], unconditional + 2.5 * (conditional - unconditional),
                               atol=1e-4, rtol=1e-4)


def test_from_ct_at_the_smallest_strength_returns_the_ct(model, encoder):
    labels, context = _labels(), _context(model, encoder, RECORDS[0], RECORDS[2])
    ct, noise = _ct(), draw_diffusion_noise(SHAPE, 0)
    near = sample_volumes(model, labels, context, noise, steps=10, ct=ct, strength=1e-4)
    full = sample_volumes(model, labels, context, noise, steps=10, ct=ct, strength=1.0)
    error = (near - ct[0, 0]).abs().mean(dim=(1, 2, 3))
    assert error.max() < 40  # HU; the noise at t = 0 has sigma 0.022 window units = 23 HU
    assert (full - ct[0, 0]).abs().mean() > 5 * error.max()
    assert (near[0] - near[1]).abs().mean() < (full[0] - full[1]).abs().mean()


def test_a_volume_larger_than_the_window_runs_by_sliding_window(model, encoder, monkeypatch):
    labels, context = _labels((32, 16, 16)), _context(model, encoder, RECORDS[0])
    noise = draw_diffusion_noise((32, 16, 16), 0)
    shapes = []
    forward = type(model).forward

    def spy(self, sample, *args):
        shapes.append(tuple(sample.shape))
        return forward(self, sample, *args)

    monkeypatch.setattr(type(model), "forward", spy)
    whole = sample_volumes(model, labels, context, noise, steps=4)
    assert shapes == [(1, 1, 32, 16, 16)] * 4
    shapes.clear()
    windows = sample_volumes(model, labels, context, noise, steps=4, roi=(16, 16, 16),
                             overlap=0.5)
    assert shapes == [(1, 1, 16, 16, 16)] * 3 * 4  # 3 windows along x, every step
    larger = sample_volumes(model, labels, context, noise, steps=4, roi=(64, 64, 64))
    assert windows.shape == whole.shape == (1, 32, 16, 16) and torch.isfinite(windows).all()
    assert torch.equal(larger, whole)  # a window larger than the volume is the whole volume
    assert not torch.equal(windows, whole)


def test_a_volume_off_the_multiple_is_padded_and_cropped(model, encoder):
    labels = _labels((16, 16, 16))[..., :14]
    noise = draw_diffusion_noise((16, 16, 14), 0)
    out = sample_volumes(model, labels, _context(model, encoder, RECORDS[0]), noise, steps=2)
    assert out.shape == (1, 16, 16, 14) and torch.isfinite(out).all()


@pytest.mark.parametrize("kwargs, match", [
    ({"steps": 0}, "steps: got 0; give 1 to 1000 steps"),
    ({"guidance": -1.0}, r"guidance: got -1.0; give a weight >= 0 \(0 ignores the record"),
    ({"strength": 0.0, "ct": _ct()}, r"strength: got 0.0; give a value in \(0, 1\]"),
    ({"strength": 0.5}, "strength: 0.5 needs a ct to start from; without one use 1"),
    ({"ct": torch.zeros(1, 1, 8, 8, 8)}, r"ct: expected shape \(1, 1, 16, 16, 16\), got "
                                         r"\(1, 1, 8, 8, 8\)"),
    ({"roi": (16, 16, 5)}, r"roi: need 3 positive multiples of 2, got \(16, 16, 5\)"),
    ({"overlap": 1.0}, r"overlap: must be in \[0, 1\), got 1.0"),
])
def test_errors(model, encoder, kwargs, match):
    labels, context = _labels(), _context(model, encoder, RECORDS[0])
    noise = draw_diffusion_noise(SHAPE, 0)
    with pytest.raises(ValueError, match=match):
        sample_volumes(model, labels, context, noise, **{"steps": 4, **kwargs})


def test_shape_errors(model, encoder):
    labels, context = _labels(), _context(model, encoder, RECORDS[0])
    with pytest.raises(ValueError, match="must share a grid"):
        sample_volumes(model, labels, context, draw_diffusion_noise((16, 16, 8), 0), steps=4)
    with pytest.raises(ValueError, match=r"context: expected shape \(R, 3, 6\), got \(3, 6\)"):
        sample_volumes(model, labels, context[0], draw_diffusion_noise(SHAPE, 0), steps=4)
