"""DDIM: its timesteps land where MONAI's steps go, its steps are MONAI's, eta is checked, and
the registry and checkpoint format agree on the default sampler."""

import pytest
import torch
from monai.networks.schedulers import DDIMScheduler

from cfx.models import checkpoint_files
from cfx.models.samplers import DEFAULT_SAMPLER, SAMPLERS, DDIMSampler, make_sampler
from cfx.models.samplers.ddim import ddim_timesteps

SCHEDULE = {"num_train_timesteps": 1000, "schedule": "scaled_linear_beta", "beta_start": 0.0005,
            "beta_end": 0.0195, "prediction_type": "v_prediction"}


def test_timesteps_step_back_by_t_over_steps_from_the_start():
    assert ddim_timesteps(1000, 20).tolist() == list(range(999, -1, -50))
    assert ddim_timesteps(1000, 20, 0.5).tolist() == list(range(500, -1, -50))
    assert ddim_timesteps(1000, 20, 1e-4).tolist() == [0]
    assert ddim_timesteps(1000, 7).tolist() == list(range(999, -1, -142))  # 8: 7 ∤ 1000
    # MONAI's own spacing does not land where its step() goes: the reason for ours
    scheduler = DDIMScheduler(1000)
    scheduler.set_timesteps(20)
    assert scheduler.timesteps[0] - scheduler.timesteps[1] != 1000 // 20
    sampler = DDIMSampler(**SCHEDULE)
    sampler.set_timesteps(20, 0.5)
    assert sampler.timesteps.tolist() == list(range(500, -1, -50))


@pytest.mark.parametrize("eta", [0.0, 0.6])
def test_each_step_is_monais_step_from_the_timestep_before(eta):
    """The same inputs and generator seed through MONAI's scheduler, set for the same number of
    steps, give the same tensor; each step goes to the next of the sampler's timesteps."""
    gen = torch.Generator().manual_seed(0)
    output, sample = (torch.randn(1, 1, 8, 8, 8, generator=gen) for _ in range(2))
    sampler = DDIMSampler(eta=eta, **SCHEDULE)
    sampler.set_timesteps(8, 0.7)
    reference = DDIMScheduler(**SCHEDULE)
    reference.set_timesteps(8)
    for t in sampler.timesteps.tolist():
        ours = sampler.step(output, t, sample, torch.Generator().manual_seed(t))
        theirs = reference.step(output, t, sample, eta, torch.Generator().manual_seed(t))[0]
        assert torch.equal(ours, theirs)
    assert all(a - b == 1000 // 8 for a, b in zip(sampler.timesteps[:-1].tolist(),
                                                  sampler.timesteps[1:].tolist(), strict=True))


@pytest.mark.parametrize("eta", [-0.1, 1.5])
def test_eta_out_of_range_is_refused(eta):
    with pytest.raises(ValueError, match=rf"eta: got {eta}; give a value in \[0, 1\]"):
        make_sampler("ddim", SCHEDULE, eta=eta)


def test_unknown_samplers_and_options_are_refused():
    with pytest.raises(ValueError, match="sampler: got 'euler'; give one of ddim"):
        make_sampler("euler", SCHEDULE)
    with pytest.raises(ValueError, match="order: sampler ddim takes no such option"):
        make_sampler("ddim", SCHEDULE, order=2)


def test_the_registry_and_the_checkpoint_format_agree_on_the_default():
    assert DEFAULT_SAMPLER == checkpoint_files.DEFAULT_SAMPLER == "ddim"
    assert SAMPLERS[DEFAULT_SAMPLER] is DDIMSampler
