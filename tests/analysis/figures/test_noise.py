import numpy as np
import pytest
from scipy import stats

from cfx.analysis.figures.noise import NOISE_LABEL, delta_noise_figure

DELTAS = np.array([18.0, 21.0, 19.5, 22.0, 20.5])
NOISE = np.array([1.0, -2.0, 0.5, -0.5, 1.5])


def _band(ax):
    (band,) = [p for p in ax.patches if p.get_label() == "noise floor CI"]
    ys = band.get_path().transformed(band.get_patch_transform()).vertices[:, 1]
    return ys.min(), ys.max()


def test_points_are_the_per_subject_deltas_and_the_band_is_the_given_noise_interval():
    fig = delta_noise_figure({"yes - no": DELTAS}, NOISE, {"yes - no": (20.2, 18.4, 22.0),
                                                           NOISE_LABEL: (0.1, -1.5, 1.7)},
                             unit="HU", label="lung mean")
    ax = fig.axes[0]
    points = [c.get_offsets() for c in ax.collections if c.get_offsets().shape[0] == 5]
    np.testing.assert_allclose(points[0][:, 1], DELTAS)
    np.testing.assert_allclose(points[1][:, 1], NOISE)
    assert np.all(np.abs(points[0][:, 0]) < 0.15) and np.all(np.abs(points[1][:, 0] - 1) < 0.15)
    assert _band(ax) == pytest.approx((-1.5, 1.7))
    assert [t.get_text() for t in ax.get_xticklabels()] == ["yes - no", NOISE_LABEL]
    assert ax.get_ylabel() == "Δ lung mean (HU)"


def test_missing_intervals_are_student_t_intervals_of_the_points():
    ax = delta_noise_figure({"yes - no": DELTAS}, NOISE, confidence=0.95).axes[0]
    expected = stats.t.interval(0.95, 4, loc=NOISE.mean(), scale=stats.sem(NOISE))
    assert _band(ax) == pytest.approx(expected)


def test_a_single_seed_sweep_has_no_noise_column():
    ax = delta_noise_figure({"yes - no": DELTAS}, None).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["yes - no"]
    assert not [p for p in ax.patches if p.get_label() == "noise floor CI"]


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    (({}, NOISE), {}, "deltas: expected a non-empty mapping"),
    (({"a": [1.0, np.inf]}, NOISE), {}, r"deltas\['a'\]: expected one finite value per subject"),
    (({"a": DELTAS}, []), {}, "noise: expected one finite value per subject, got 0 values"),
    (({NOISE_LABEL: DELTAS}, NOISE), {}, "is the noise floor's column"),
    (({"a": DELTAS}, NOISE), {"intervals": {"a": (1, 2, 0)}}, r"intervals\['a'\]: expected finite"),
    (({"a": DELTAS}, NOISE), {"intervals": {"b": (1, 0, 2)}}, r"intervals: \['b'\] name no"),
    (({"a": DELTAS}, NOISE), {"confidence": 0}, r"confidence: must be in \(0, 1\), got 0"),
])
def test_noise_figure_errors(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        delta_noise_figure(*args, **kwargs)
