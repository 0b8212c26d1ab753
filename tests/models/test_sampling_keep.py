"""Keep-mask editing (``sample_volumes(..., keep=...)``): held voxels are the CT's, exactly,
in every row; the rest is sampled."""

import pytest
import torch

from cfx.models.sampling import draw_diffusion_noise, sample_volumes
from tests.models.conftest import RECORDS
from tests.models.test_sampling import SHAPE, _context, _ct, _fitted, _labels


@pytest.fixture(scope="module")
def model(encoder):
    return _fitted(encoder)


def _run(model, encoder, keep, strength=0.6):
    labels, context = _labels(), _context(model, encoder, RECORDS[0], RECORDS[2])
    return sample_volumes(model, labels, context, draw_diffusion_noise(SHAPE, 0), steps=6,
                          ct=_ct(), strength=strength, keep=keep)


def test_held_voxels_are_the_ct_in_every_row_and_the_rest_is_edited(model, encoder):
    keep = torch.zeros(1, 1, *SHAPE, dtype=torch.bool)
    keep[..., :8] = True  # the lower half of the volume is held
    out = _run(model, encoder, keep)
    ct = model.to_hu(model.from_hu(_ct()))[0, 0]  # the CT as the window holds it
    held = keep[0, 0]
    assert torch.equal(out[0][held], ct[held]) and torch.equal(out[1][held], ct[held])
    free = _run(model, encoder, None)
    assert (out[0] - out[1])[~held].abs().mean() > 0.1  # the records still differ inside
    assert (out[0][~held] - free[0][~held]).abs().mean() > 0  # the held context was read


def test_holding_nothing_is_plain_editing_and_holding_everything_returns_the_ct(model,
                                                                               encoder):
    nothing = torch.zeros(1, 1, *SHAPE, dtype=torch.bool)
    assert torch.equal(_run(model, encoder, nothing), _run(model, encoder, None))
    everything = ~nothing
    out = _run(model, encoder, everything, strength=1.0)
    ct = model.to_hu(model.from_hu(_ct()))[0, 0]
    assert torch.equal(out[0], ct) and torch.equal(out[1], ct)


@pytest.mark.parametrize("keep, ct, match", [
    (torch.ones(1, 1, *SHAPE, dtype=torch.bool), False, "with a ct to hold, got .* and no ct"),
    (torch.ones(1, 1, 8, 8, 8, dtype=torch.bool), True, r"keep: expected a bool mask of shape "
                                                        r"\(1, 1, 16, 16, 16\)"),
    (torch.ones(1, 1, *SHAPE), True, "torch.float32"),
])
def test_keep_errors(model, encoder, keep, ct, match):
    labels, context = _labels(), _context(model, encoder, RECORDS[0])
    with pytest.raises(ValueError, match=match):
        sample_volumes(model, labels, context, draw_diffusion_noise(SHAPE, 0), steps=4,
                       ct=_ct() if ct else None, keep=keep)
