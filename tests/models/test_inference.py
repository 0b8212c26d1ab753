"""Sliding-window whole-volume generation: one window equals a direct forward, no seams."""

import pytest
import torch

from cfx.models.inference import draw_noise, generate_volumes
from tests.models.conftest import RECORDS, conditions, fit_text, tiny_generator


def _labels(shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 4, (1, *shape), generator=gen)
    return torch.nn.functional.one_hot(x, 4).permute(0, 4, 1, 2, 3).float()


@pytest.fixture
def setup(encoder):
    generator = fit_text(tiny_generator("affine"), encoder)
    condition = conditions(generator, encoder, RECORDS[:2])
    return generator, condition


def test_noise_is_a_function_of_the_seed(setup):
    generator, _ = setup
    a, va = draw_noise(generator, (8, 8, 16), 7)
    b, vb = draw_noise(generator, (8, 8, 16), 7)
    c, _ = draw_noise(generator, (8, 8, 16), 8)
    assert a.shape == (1, 1, 8, 8, 16) and va.shape == (1, 2)
    assert torch.equal(a, b) and torch.equal(va, vb) and not torch.equal(a, c)
    assert torch.equal(draw_noise(generator, (4, 4, 4), 2**64 + 7)[0],
                       draw_noise(generator, (4, 4, 4), 2**64 + 7)[0])


def test_one_window_equals_a_direct_forward(setup):
    generator, condition = setup
    labels = _labels((16, 16, 16))
    noise, vector = draw_noise(generator, (16, 16, 16), 0)
    out = generate_volumes(generator, labels, noise, vector, condition, (16, 16, 16))
    with torch.no_grad():
        direct = generator.to_hu(generator(labels.expand(2, -1, -1, -1, -1),
                                           noise.expand(2, -1, -1, -1, -1), condition,
                                           vector.expand(2, -1)))[:, 0]
    assert out.shape == (2, 16, 16, 16)
    torch.testing.assert_close(out, direct, atol=1e-3, rtol=0)  # HU


def test_a_volume_smaller_than_the_window_is_padded_and_cropped(setup):
    generator, condition = setup
    labels = _labels((12, 16, 16))
    noise, vector = draw_noise(generator, (12, 16, 16), 0)
    out = generate_volumes(generator, labels, noise, vector, condition.select([0]), (16, 16, 16))
    assert out.shape == (1, 12, 16, 16)


def test_no_seam_where_windows_meet(setup):
    """Across the planes where one window ends and the next begins, the stitched volume jumps no
    more than across any other plane, and it stays close to a whole-volume forward."""
    generator, condition = setup
    shape = (48, 16, 16)
    labels = _labels(shape)
    noise, vector = draw_noise(generator, shape, 0)
    one = condition.select([0])
    out = generate_volumes(generator, labels, noise, vector, one, (16, 16, 16), overlap=0.5)[0]
    with torch.no_grad():
        whole = generator.to_hu(generator(labels, noise, one, vector))[0, 0]
    jumps = (out[1:] - out[:-1]).abs().mean(dim=(1, 2))  # jump between x-planes i and i+1
    window_edges = [7, 15, 23, 31, 39]  # windows start every 8 planes and end 16 later
    others = [i for i in range(47) if i not in window_edges]
    assert jumps[window_edges].max() < 1.5 * jumps[others].mean()
    assert (out - whole).abs().mean() < 0.1 * (whole - whole.mean()).abs().mean()


def test_rows_share_the_noise(setup, encoder):
    """The same record twice in one call gives identical volumes (a null pair)."""
    generator, _ = setup
    condition = conditions(generator, encoder, [RECORDS[0], RECORDS[0]])
    labels = _labels((32, 16, 16))
    noise, vector = draw_noise(generator, (32, 16, 16), 3)
    a, b = generate_volumes(generator, labels, noise, vector, condition, (16, 16, 16))
    assert torch.equal(a, b)


@pytest.mark.parametrize("roi, overlap, match", [
    ((16, 16), 0.5, r"roi: need 3 positive multiples of 4, got \(16, 16\)"),
    ((16, 16, 10), 0.5, r"roi: need 3 positive multiples of 4, got \(16, 16, 10\)"),
    ((16, 16, 16), 1.0, r"overlap: must be in \[0, 1\), got 1.0"),
])
def test_errors(setup, roi, overlap, match):
    generator, condition = setup
    labels = _labels((16, 16, 16))
    noise, vector = draw_noise(generator, (16, 16, 16), 0)
    with pytest.raises(ValueError, match=match):
        generate_volumes(generator, labels, noise, vector, condition, roi, overlap)
    with pytest.raises(ValueError, match="must share a grid"):
        generate_volumes(generator, labels, noise[..., :8], vector, condition, (16, 16, 16))
