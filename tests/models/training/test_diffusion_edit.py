"""The diffusion trainer's minimal-edit loss: the change of the clean-image estimate when one
noised patch is read with another row's record."""

import pytest
import torch
from monai.networks.schedulers import DDPMScheduler

from tests.models.training.test_diffusion import _trainer


def _spy(trainer, monkeypatch):
    seen = []
    forward = type(trainer.network).forward

    def spy(self, sample, labels, timesteps, context):
        out = forward(self, sample, labels, timesteps, context)
        seen.append((sample.detach().clone(), timesteps.clone(), context.detach().clone(),
                     out.detach().clone()))
        return out

    monkeypatch.setattr(type(trainer.network), "forward", spy)
    return seen


@pytest.mark.parametrize("prediction", ["v_prediction", "epsilon"])
def test_the_edit_is_the_x0_change_under_the_previous_rows_record(encoder, monkeypatch,
                                                                   prediction):
    """One pass over both readings: the second half is the first half's x_t and timesteps
    under the records rolled by one row; ``edit`` is the mean |x_0 change| in HU, x_0 from the
    DDPM identities, and ``mse`` is scored on the first half alone."""
    trainer = _trainer(encoder, prediction, p_uncond=0.0, batch_size=3, edit_weight=0.5)
    for _ in range(2):  # the record layers start silent; one step wakes them
        trainer.train_step()
    seen = _spy(trainer, monkeypatch)
    losses = trainer.train_step()
    (sample, timesteps, context, out), = seen
    assert sample.shape[0] == 6
    own, other = out.chunk(2)
    assert torch.equal(sample[3:], sample[:3]) and torch.equal(timesteps[3:], timesteps[:3])
    assert torch.equal(context[3:], context[:3][[2, 0, 1]])
    abar = DDPMScheduler(**trainer.network.noise_schedule).alphas_cumprod[timesteps[:3]]
    abar = abar.float().reshape(-1, 1, 1, 1, 1)
    x_t = sample[:3]
    if prediction == "epsilon":
        x0 = [(x_t - (1 - abar).sqrt() * p) / abar.sqrt() for p in (own, other)]
    else:
        x0 = [abar.sqrt() * x_t - (1 - abar).sqrt() * p for p in (own, other)]
    change = (x0[1] - x0[0]).abs().mean().item() * 1024.0  # window -1024..1024 HU
    assert change > 0
    assert losses["edit"] == pytest.approx(change, rel=1e-4)


def test_without_the_weight_one_pass_and_no_edit(encoder, monkeypatch):
    trainer = _trainer(encoder)
    seen = _spy(trainer, monkeypatch)
    losses = trainer.train_step()
    assert len(seen) == 1 and seen[0][0].shape[0] == 2 and "edit" not in losses
