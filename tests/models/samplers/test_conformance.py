"""What every sampler must do (the :class:`~cfx.models.samplers.base.Sampler` protocol), run for
each registered sampler and for a toy newcomer defined here, which also runs through the sampling
loop without any other file knowing it.

References are independent of the samplers: the noise schedule is rebuilt with numpy from its
definition (MONAI's ``scaled_linear_beta``: betas evenly spaced in square root), and the
closed-form outputs come from the forward process ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) n``.
"""

import numpy as np
import pytest
import torch

from cfx.models.samplers import SAMPLERS, Sampler, check_request, make_sampler, start_timestep
from cfx.models.sampling import draw_diffusion_noise, sample_volumes
from tests.models.conftest import FIELDS, PHRASES, RECORDS, encode_record, tiny_diffusion

SHAPE = (16, 16, 16)
SCHEDULE = {"num_train_timesteps": 1000, "schedule": "scaled_linear_beta", "beta_start": 0.0005,
            "beta_end": 0.0195}
STOCHASTIC = {"ddim": {"eta": 0.7}}
"""Options that make a registered sampler stochastic (a deterministic one is not listed)."""


def _abar(schedule=SCHEDULE) -> np.ndarray:
    """``abar_t`` for t in [0, T), from the schedule's definition."""
    betas = np.linspace(schedule["beta_start"] ** 0.5, schedule["beta_end"] ** 0.5,
                        schedule["num_train_timesteps"], dtype=np.float64) ** 2
    return np.cumprod(1 - betas)


class ToySampler:
    """A newcomer: Euler steps of the probability-flow ODE ``d(x / sqrt(abar)) = eps d(sigma)``,
    ``sigma = sqrt((1 - abar) / abar)``, on ``round(strength * n)`` timesteps evenly spaced from
    the start to 0, the last step to the clean image. Deterministic; the clean-image estimate is
    not clipped."""

    def __init__(self, num_train_timesteps=1000, schedule="scaled_linear_beta",
                 beta_start=0.0005, beta_end=0.0195, prediction_type="epsilon"):
        assert schedule == "scaled_linear_beta"
        self.num_train_timesteps = num_train_timesteps
        self.prediction_type = prediction_type
        self._abar = torch.from_numpy(_abar({"num_train_timesteps": num_train_timesteps,
                                             "beta_start": beta_start, "beta_end": beta_end}))
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1)

    def set_timesteps(self, num_steps, strength=1.0):
        check_request(self.num_train_timesteps, num_steps, strength)
        start = start_timestep(self.num_train_timesteps, strength)
        count = max(1, round(strength * num_steps))
        self.timesteps = torch.linspace(start, 0, count).round().long().unique_consecutive()

    def _sigma(self, t):
        abar = self._abar[t] if t >= 0 else torch.tensor(1.0, dtype=torch.float64)
        return ((1 - abar) / abar).sqrt(), abar.sqrt()

    def step(self, model_output, t, sample, generator=None):
        later = self.timesteps[self.timesteps < t]
        sigma, root = self._sigma(t)
        sigma_next, root_next = self._sigma(int(later[0]) if len(later) else -1)
        eps = model_output if self.prediction_type == "epsilon" else \
            root * model_output + (1 - root**2).sqrt() * sample
        return (root_next * (sample / root + (sigma_next - sigma) * eps)).float()

    def add_noise(self, original, noise, t):
        abar = self._abar[t].float().view(-1, 1, 1, 1, 1)
        return abar.sqrt() * original + (1 - abar).sqrt() * noise


CASES = [(name, SAMPLERS[name], STOCHASTIC.get(name)) for name in SAMPLERS]
CASES.append(("toy", ToySampler, None))
IDS = [name for name, *_ in CASES]


@pytest.fixture(params=CASES, ids=IDS)
def case(request):
    return request.param


def _make(factory, prediction="epsilon", **options):
    return factory(**options, **SCHEDULE, prediction_type=prediction)


def test_follows_the_protocol(case):
    _, factory, _ = case
    assert isinstance(_make(factory), Sampler)


@pytest.mark.parametrize("steps", [1, 7, 20, 1000])
@pytest.mark.parametrize("strength", [1.0, 0.5, 1e-4])
def test_timesteps_decrease_strictly_within_training_range_from_the_start(case, steps,
                                                                          strength):
    _, factory, _ = case
    sampler = _make(factory)
    sampler.set_timesteps(steps, strength)
    timesteps = sampler.timesteps
    assert timesteps.dtype == torch.int64 and timesteps.ndim == 1 and len(timesteps) >= 1
    assert torch.all(timesteps[1:] < timesteps[:-1])
    assert 0 <= int(timesteps.min()) and int(timesteps.max()) < 1000
    assert int(timesteps[0]) == min(int(np.floor(strength * 1000)), 999)
    assert len(timesteps) <= steps + 1


def test_strength_below_one_starts_later_with_fewer_steps(case):
    _, factory, _ = case
    sampler = _make(factory)
    sampler.set_timesteps(20)
    full = sampler.timesteps.clone()
    sampler.set_timesteps(20, 0.4)
    assert sampler.timesteps[0] < full[0] and len(sampler.timesteps) < len(full)


@pytest.mark.parametrize("steps, strength, match", [
    (0, 1.0, "steps: got 0; give 1 to 1000 steps"),
    (1001, 1.0, "steps: got 1001; give 1 to 1000 steps"),
    (10, 0.0, r"strength: got 0.0; give a value in \(0, 1\]"),
    (10, 1.5, r"strength: got 1.5; give a value in \(0, 1\]"),
])
def test_requests_out_of_range_are_refused(case, steps, strength, match):
    _, factory, _ = case
    with pytest.raises(ValueError, match=match):
        _make(factory).set_timesteps(steps, strength)


def _one_step(sampler, seed):
    gen = torch.Generator().manual_seed(0)
    output, sample = (torch.randn((1, 1, *SHAPE), generator=gen) for _ in range(2))
    sampler.set_timesteps(10)
    t = int(sampler.timesteps[3])
    return sampler.step(output, t, sample, torch.Generator().manual_seed(seed))


def test_default_options_are_deterministic(case):
    _, factory, _ = case
    a, b = _one_step(_make(factory), 1), _one_step(_make(factory), 2)
    assert a.shape == (1, 1, *SHAPE) and torch.isfinite(a).all()
    assert torch.equal(a, b)  # the generator is not drawn from


def test_the_same_generator_seed_gives_the_same_step(case):
    _, factory, stochastic = case
    if stochastic is None:
        pytest.skip("deterministic sampler: no noise to share")
    a, again, other = (_one_step(_make(factory, **stochastic), s) for s in (1, 1, 2))
    deterministic = _one_step(_make(factory), 1)
    assert torch.equal(a, again)
    assert (a - other).abs().mean() > 0.01 and (a - deterministic).abs().mean() > 0.01


@pytest.mark.parametrize("t", [0, 400, 999])
def test_add_noise_is_the_forward_process(case, t):
    _, factory, _ = case
    gen = torch.Generator().manual_seed(0)
    original, noise = (torch.randn((1, 1, *SHAPE), generator=gen) for _ in range(2))
    abar = _abar()[t]
    expected = np.sqrt(abar) * original.double() + np.sqrt(1 - abar) * noise.double()
    out = _make(factory).add_noise(original, noise, torch.tensor([t]))
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def fitted(encoder):
    """A fresh model of each prediction type: MONAI starts its output convolution at zero, so it
    predicts exactly zero noise (or velocity)."""
    models = {}
    for prediction in ("epsilon", "v_prediction"):
        model = tiny_diffusion(activate=False, prediction=prediction)
        model.fit_text([encoder.encode(PHRASES[field]).pooled for field in FIELDS])
        models[prediction] = model
    return models


def _labels():
    labels = torch.zeros(1, 4, *SHAPE)
    labels[:, 1] = 1
    return labels


def _ct():
    """A CT in HU: lung, soft tissue and air slabs."""
    ct = torch.full((1, 1, *SHAPE), -850.0)
    ct[..., :5] = -1000.0
    ct[..., 10:] = 40.0
    return ct


@pytest.mark.parametrize("strength", [1e-4, 0.3, 0.8])
def test_zero_noise_from_a_ct_returns_the_ct_plus_scaled_noise(case, fitted, strength):
    """Predicting zero noise keeps ``x_t / sqrt(abar_t)`` along the whole run, so the output is
    ``x_0 + sqrt((1 - abar_t) / abar_t) n`` at ``t = floor(strength T)``."""
    name, factory, _ = case
    model = fitted["epsilon"]
    ct, noise = _ct(), draw_diffusion_noise(SHAPE, 0)
    out = sample_volumes(model, _labels(), model.null_condition(), noise, steps=10, ct=ct,
                         strength=strength, sampler=factory(**model.noise_schedule))
    abar = _abar()[int(np.floor(strength * 1000))]
    expected = model.to_hu(model.from_hu(ct) + np.sqrt((1 - abar) / abar) * noise.initial)
    torch.testing.assert_close(out[0], expected[0, 0], atol=0.05, rtol=0)  # HU


@pytest.mark.parametrize("strength", [0.05, 0.5, 1.0])
def test_one_step_of_a_zero_velocity_model_lands_on_sqrt_abar_x_t(case, fitted, strength):
    """Predicting v = 0 means the clean-image estimate is ``sqrt(abar_t) x_t``, where one step
    (steps=1) goes: ``abar_t x_0 + sqrt(abar_t (1 - abar_t)) n``."""
    _, factory, _ = case
    model = fitted["v_prediction"]
    ct, noise = _ct(), draw_diffusion_noise(SHAPE, 0)
    out = sample_volumes(model, _labels(), model.null_condition(), noise, steps=1, ct=ct,
                         strength=strength, sampler=factory(**model.noise_schedule))
    abar = _abar()[min(int(strength * 1000), 999)]
    clean = abar * model.from_hu(ct) + np.sqrt(abar * (1 - abar)) * noise.initial
    torch.testing.assert_close(out[0], model.to_hu(clean)[0, 0], atol=0.05, rtol=0)  # HU


@pytest.fixture(scope="module")
def active(encoder):
    model = tiny_diffusion()
    model.fit_text([encoder.encode(PHRASES[field]).pooled for field in FIELDS])
    return model


def test_a_newcomer_registered_by_name_runs_through_the_sampling_loop(active, encoder,
                                                                      monkeypatch):
    """Registered in the test alone, the toy is made by name and sampled with: the same seed
    gives the same volumes, a null pair is identical, the record matters, and its volumes are
    not DDIM's."""
    monkeypatch.setitem(SAMPLERS, "toy", ToySampler)
    context = torch.cat([active.condition(encode_record(active, encoder, r))
                         for r in (RECORDS[0], RECORDS[2], RECORDS[0])])
    labels = _labels()

    def run(name, seed=3):
        return sample_volumes(active, labels, context, draw_diffusion_noise(SHAPE, seed), steps=6,
                              sampler=make_sampler(name, active.noise_schedule))

    toy = run("toy")
    assert toy.shape == (3, *SHAPE) and torch.isfinite(toy).all()
    assert torch.equal(toy, run("toy"))
    assert torch.equal(toy[0], toy[2]) and (toy[0] - toy[1]).abs().mean() > 0.1  # HU
    assert (toy - run("toy", seed=4)).abs().mean() > 1.0  # HU
    assert not torch.equal(toy, run("ddim"))
