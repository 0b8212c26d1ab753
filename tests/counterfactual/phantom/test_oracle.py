import json

import nibabel as nib
import numpy as np
import pytest
from scipy.spatial import cKDTree

from cfx.counterfactual.cohort import load_cohort
from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.phantom import PhantomOracle, phantom_affine
from cfx.counterfactual.volume import read_labels, read_volume

SPACING = (6.0, 5.0, 7.5)
TOL = 1e-3  # float32 rounding of (base + noise + effect) - (base + noise + effect')


@pytest.fixture(scope="module")
def oracle(cohort_dir):
    return PhantomOracle.from_cohort(cohort_dir)


def _lung_slices(lung):
    occupied = np.flatnonzero(lung.any(axis=(0, 1)))
    return occupied[0], occupied[-1] - occupied[0] + 1


def _lower_slices(lung, fraction_num, fraction_den):
    """Slices whose centre lies below num/den of the lungs' extent (hand rule)."""
    first, n = _lung_slices(lung)
    keep = np.zeros(lung.shape[2], bool)
    for p in range(n):
        keep[first + p] = (2 * p + 1) * fraction_den < 2 * n * fraction_num
    return keep[None, None, :]


def test_ct_and_mask_files_equal_the_oracle(cohort_dir, oracle):
    affine = phantom_affine((24, 24, 20), SPACING)
    assert np.allclose(affine, [[6, 0, 0, -69], [0, 5, 0, -57.5], [0, 0, 7.5, -71.25],
                                [0, 0, 0, 1]])
    assert nib.aff2axcodes(affine) == ("R", "A", "S")
    for sid in oracle.subject_ids:
        ct = read_volume(cohort_dir / "ct" / f"{sid}.nii.gz")
        mask = read_labels(cohort_dir / "masks" / f"{sid}.nii.gz")
        render = oracle.render(sid, {}, oracle.noise_seed(sid))
        assert render.dtype == np.float32 and render.shape == (24, 24, 20)
        assert np.array_equal(ct.data, np.rint(render))
        assert np.array_equal(mask.data, oracle.labels(sid))
        assert np.allclose(ct.affine, affine) and np.allclose(mask.affine, oracle.affine(sid))


def test_folder_loads_and_the_table_shows_the_latent_values(cohort_dir, oracle):
    cohort = load_cohort(cohort_dir)
    assert [s.id for s in cohort.subjects] == ["P000", "P001", "P002"]
    assert cohort.columns == ("age", "sex", "smoking", "mortality", "diagnosis")
    truth = json.loads((cohort_dir / "truth.json").read_text())
    for subject, entry in zip(cohort.subjects, truth["subjects"], strict=True):
        latent = oracle.truth(subject.id)
        assert latent == entry["attributes"] and subject.ct is not None
        assert subject.record == {k: v for k, v in latent.items() if k not in entry["missing"]}
    assert truth["settings"] == {"subjects": 3, "shape": [24, 24, 20], "spacing": list(SPACING),
                                 "seed": 3}
    assert truth["cfx_version"] and truth["format"] == "cfx-phantom-truth/1"


@pytest.mark.parametrize("sid", ["P000", "P001"])
def test_smoking_difference_is_the_planted_map(oracle, sid):
    lung = oracle.lung_mask(sid)
    diff = oracle.render(sid, {"smoking": "yes"}, 7) - oracle.render(sid, {"smoking": "no"}, 7)
    assert abs(diff[lung].mean() - 20.0) < TOL and np.abs(diff[lung] - 20.0).max() < TOL
    assert np.all(diff[~lung] == 0.0)
    expected = oracle.expected_difference(sid, "smoking", "yes", "no")
    assert expected.dtype == np.float32 and np.all(expected[lung] == 20) and \
        np.all(expected[~lung] == 0)


def test_mortality_only_in_the_lower_third(oracle):
    sid = "P002"
    lung = oracle.lung_mask(sid)
    dead, alive = (oracle.render(sid, {"mortality": v}, 1) for v in ("dead", "alive"))
    diff = dead - alive
    lower = lung & _lower_slices(lung, 1, 3)
    assert 0 < lower.sum() < lung.sum()
    assert np.abs(diff[lower] - 30.0).max() < TOL and np.all(diff[~lower] == 0)


def test_ipf_band_near_the_surface_of_the_lower_half(oracle):
    sid = "P001"
    lung = oracle.lung_mask(sid)
    diff = oracle.expected_difference(sid, "diagnosis", "IPF", "none")
    planted = diff != 0
    assert np.all(diff[planted] == 150.0)
    outside = np.argwhere(oracle.labels(sid) == 0) * SPACING
    depth = cKDTree(outside).query(np.argwhere(lung) * SPACING)[0]
    near = np.zeros(lung.shape, bool)
    near[tuple(np.argwhere(lung).T)] = depth <= 10.0
    assert np.array_equal(planted, near & lung & _lower_slices(lung, 1, 2))
    assert 0 < planted.sum() < 0.5 * lung.sum()
    uild = oracle.expected_difference(sid, "diagnosis", "UILD", "none")
    assert np.array_equal(uild, diff / 2)
    rendered = oracle.render(sid, {"diagnosis": "IPF"}, 4) - oracle.render(
        sid, {"diagnosis": "CTD-ILD"}, 4)
    expected = oracle.expected_difference(sid, "diagnosis", "IPF", "CTD-ILD")
    assert np.abs(rendered - expected).max() < TOL
    ctd = oracle.expected_difference(sid, "diagnosis", "CTD-ILD", "none")
    assert np.array_equal(ctd != 0, lung & _lower_slices(lung, 2, 3)) and ctd.max() == 60


def test_age_slope(oracle):
    sid = "P000"
    lung = oracle.lung_mask(sid)
    diff = oracle.render(sid, {"age": "70"}, 2) - oracle.render(sid, {"age": 50}, 2)
    assert np.abs(diff[lung] + 10.0).max() < TOL and np.all(diff[~lung] == 0)
    assert np.all(oracle.expected_difference(sid, "age", 51, "50")[lung] == -0.5)


def test_seed_sets_the_noise_and_sex_is_a_null_attribute(oracle):
    sid = "P001"
    a = oracle.render(sid, {}, 5)
    assert np.array_equal(a, oracle.render(sid, {}, 5))
    assert not np.array_equal(a, oracle.render(sid, {}, 6))
    male = oracle.render(sid, {"sex": "male"}, 5)
    assert np.array_equal(male, oracle.render(sid, {"sex": "female"}, 5))
    air = a[:2, :2, :]  # corner outside the body: -1000 HU + noise only
    assert abs(air.mean() + 1000) < 10 and 15 <= air.std() <= 30


def test_oracle_errors(oracle, tmp_path):
    with pytest.raises(UserInputError, match=r"truth.json: no subject 'P009' in the phantom"):
        oracle.render("P009", {}, 0)
    with pytest.raises(UserInputError, match="P000: override: unknown attribute 'bmi'"):
        oracle.render("P000", {"bmi": 30}, 0)
    with pytest.raises(UserInputError, match="P000: override: smoking cannot be 'maybe'"):
        oracle.render("P000", {"smoking": "maybe"}, 0)
    with pytest.raises(UserInputError, match=r"P000: expected difference: age must be a finite"):
        oracle.expected_difference("P000", "age", "old", 50)
    with pytest.raises(UserInputError, match=r"truth.json: not found; the oracle needs a cohort "
                                             r"made by cfx phantom"):
        PhantomOracle.from_cohort(tmp_path)
    (tmp_path / "truth.json").write_text('{"format": "other"}')
    with pytest.raises(UserInputError, match=r"truth.json: not a phantom truth file"):
        PhantomOracle.from_cohort(tmp_path)
