"""EmbeddingWhitener against a numpy PCA of the same rows."""

import numpy as np
import pytest
import torch

from cfx.models.text_conditioning import EmbeddingWhitener


@pytest.fixture
def rows(rng):
    # anisotropic, correlated, off-centre cloud: 200 rows of width 10
    mixing = rng.normal(size=(10, 10)) * np.linspace(3, 0.1, 10)[:, None]
    return torch.tensor(rng.normal(size=(200, 10)) @ mixing + 5.0, dtype=torch.float32)


def test_whitened_training_rows_have_identity_covariance(rows):
    whitener = EmbeddingWhitener(10, 4).fit(rows)
    out = whitener(rows).double().numpy()
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(np.cov(out, rowvar=False), np.eye(4), atol=1e-4)


def test_matches_numpy_principal_axes(rows):
    whitener = EmbeddingWhitener(10, 4).fit(rows)
    x = rows.double().numpy()
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(x, rowvar=False))
    order = np.argsort(eigenvalues)[::-1][:4]
    components = whitener.components.double().numpy()
    for k, index in enumerate(order):  # same axes up to sign
        assert abs(components[k] @ eigenvectors[:, index]) == pytest.approx(1, abs=1e-4)
    np.testing.assert_allclose(whitener.scale.double().numpy() ** 2, eigenvalues[order],
                               rtol=1e-4)
    np.testing.assert_allclose(whitener.explained.double().numpy(),
                               eigenvalues[order] / eigenvalues.sum(), rtol=1e-4)


def test_keeps_a_difference_along_a_low_variance_direction():
    """Two prompts differing along a direction that is 2 % of the variance stay apart."""
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(500, 6, generator=gen) * torch.tensor([10.0, 5, 3, 1.5, 0.01, 0.01])
    base[:, 3] = torch.where(torch.rand(500, generator=gen) < 0.5, -1.5, 1.5)  # a yes/no field
    whitener = EmbeddingWhitener(6, 4).fit(base)
    yes, no = base[:1].clone(), base[:1].clone()
    yes[0, 3], no[0, 3] = 1.5, -1.5
    raw_cosine = torch.nn.functional.cosine_similarity(yes + 100, no + 100).item()
    assert raw_cosine > 0.99
    assert (whitener(yes) - whitener(no)).norm().item() == pytest.approx(2.0, rel=0.05)


def test_unfitted_keeps_the_first_coordinates():
    x = torch.arange(12.0).reshape(2, 6)
    torch.testing.assert_close(EmbeddingWhitener(6, 3)(x), x[:, :3])


@pytest.mark.parametrize("width, dims, match", [(0, 1, "width: must be at least 1, got 0"),
                                                 (4, 5, "dims: must be from 1 to width=4, got 5"),
                                                 (4, 0, "dims: must be from 1 to width=4, got 0")])
def test_constructor_errors(width, dims, match):
    with pytest.raises(ValueError, match=match):
        EmbeddingWhitener(width, dims)


def test_fit_errors(rows):
    whitener = EmbeddingWhitener(10, 4)
    with pytest.raises(ValueError, match=r"expected shape \(N, 10\), got \(200, 9\)"):
        whitener.fit(rows[:, :9])
    with pytest.raises(ValueError, match="need more than dims=4 rows, got 4"):
        whitener.fit(rows[:4])
    flat = rows[:, :1].repeat(1, 10) * torch.arange(1.0, 11.0)  # rank one
    with pytest.raises(ValueError, match="only 1 directions vary; lower dims"):
        whitener.fit(flat)
