import numpy as np
import pytest
import statsmodels.api as sm

from cfx.analysis.audit import cross_validated, fit_linear, fit_logistic


@pytest.fixture
def data(rng):
    features = rng.normal(size=(60, 3)) * [1.0, 10.0, 0.1] + [0.0, -800.0, 5.0]
    signal = (features - features.mean(0)) / features.std(0) @ [1.0, -1.0, 0.5]
    return features, signal


def _design(features):
    return sm.add_constant((features - features.mean(0)) / features.std(0))


def test_logistic_without_penalty_is_statsmodels_logit(data, rng):
    features, signal = data
    labels = np.where(signal + rng.normal(size=signal.size) > 0, "yes", "no")
    model = fit_logistic(features, labels, ("no", "yes"), penalty=1e-8)
    reference = sm.Logit((labels == "yes").astype(float), _design(features)).fit(disp=0)
    np.testing.assert_allclose(model.predict_proba(features)[:, 1],
                               reference.predict(_design(features)), atol=1e-6)
    np.testing.assert_allclose(model.predict_proba(features).sum(1), 1.0)
    assert set(model.predict(features)) <= {"no", "yes"}


def test_multinomial_without_penalty_is_statsmodels_mnlogit(data, rng):
    features, signal = data
    scores = np.c_[np.zeros(signal.size), signal, -signal] + rng.normal(size=(signal.size, 3))
    labels = np.argmax(scores, axis=1)
    model = fit_logistic(features, labels, (0, 1, 2), penalty=1e-8)
    reference = sm.MNLogit(labels, _design(features)).fit(disp=0)
    np.testing.assert_allclose(model.predict_proba(features), reference.predict(_design(features)),
                               atol=1e-6)


def test_ridge_logistic_is_statsmodels_penalised_glm(data, rng):
    features, signal = data
    labels = (signal + rng.normal(size=signal.size) > 0).astype(int)
    n, penalty = len(labels), 3.0
    model = fit_logistic(features, labels, (0, 1), penalty=penalty)
    # statsmodels minimises -loglik / n + alpha / 2 |w|^2: alpha = penalty / n, intercept free.
    reference = sm.GLM(labels, _design(features), family=sm.families.Binomial()).fit_regularized(
        alpha=np.r_[0.0, [penalty / n] * 3], L1_wt=0.0, cnvrg_tol=1e-12, maxiter=2000)
    np.testing.assert_allclose(model.weights.ravel(), reference.params, atol=1e-3)


def test_perfect_separation_with_more_features_than_subjects_stays_finite(rng):
    features = rng.normal(size=(8, 24))
    labels = ["a"] * 4 + ["b"] * 4
    features[4:, 0] += 50.0  # one feature separates the classes completely
    model = fit_logistic(features, labels, ("a", "b"))
    assert np.isfinite(model.weights).all()
    assert list(model.predict(features)) == labels


def test_ridge_linear_is_statsmodels_ridge(data, rng):
    features, signal = data
    targets = 60 + 10 * signal + rng.normal(size=signal.size)
    n, penalty = len(targets), 5.0
    model = fit_linear(features, targets, penalty)
    standard = (features - features.mean(0)) / features.std(0)
    reference = sm.OLS(targets - targets.mean(), standard).fit_regularized(alpha=penalty / n,
                                                                           L1_wt=0.0)
    np.testing.assert_allclose(model.coefficients, reference.params, rtol=1e-10)
    assert model.intercept == pytest.approx(targets.mean())
    unpenalised = sm.OLS(targets, sm.add_constant(features)).fit()
    np.testing.assert_allclose(fit_linear(features, targets, 1e-10).predict(features),
                               unpenalised.fittedvalues, atol=1e-6)


def test_cross_validated_rows_come_from_models_that_did_not_see_them(data, rng):
    features, signal = data
    labels = list(np.where(signal > 0, "hi", "lo"))
    out = cross_validated(features, labels, ("lo", "hi"), penalty=2.0, folds=4)
    held = np.arange(60) % 4 == 1
    kept = [y for y, h in zip(labels, held, strict=True) if not h]
    refit = fit_logistic(features[~held], kept, ("lo", "hi"), penalty=2.0)
    np.testing.assert_allclose(out[held], refit.predict_proba(features[held]))
    targets = 3 * signal
    numeric = cross_validated(features, targets, penalty=2.0, folds=4)
    np.testing.assert_allclose(numeric[held], fit_linear(features[~held], targets[~held],
                                                         2.0).predict(features[held]))


@pytest.mark.parametrize(("call", "message"), [
    (lambda x: fit_logistic(x[:, 0], [0] * 6, (0, 1)), r"features: expected a 2-D array"),
    (lambda x: fit_logistic(np.full((6, 2), np.nan), [0] * 6, (0, 1)), "features: expected finite"),
    (lambda x: fit_logistic(x, [0] * 5, (0, 1)), r"labels: expected one per sample \(6\), got 5"),
    (lambda x: fit_logistic(x, [0] * 6, (0, 0)), "classes: expected two or more distinct"),
    (lambda x: fit_logistic(x, [0] * 5 + [7], (0, 1)), r"labels: \['7'\] are not among"),
    (lambda x: fit_logistic(x, [0] * 6, (0, 1), penalty=0), "penalty: expected a positive"),
    (lambda x: fit_linear(x, [1.0] * 5 + [np.nan]), "targets: expected finite numbers"),
    (lambda x: fit_linear(x, [1.0] * 6, penalty=-1), "penalty: expected a positive"),
    (lambda x: cross_validated(x, [1.0] * 6, folds=7), r"folds: expected 2 to 6 .*got 7"),
])
def test_bad_inputs_are_refused(call, message, rng):
    with pytest.raises(ValueError, match=message):
        call(rng.normal(size=(6, 2)))
