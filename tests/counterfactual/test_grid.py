"""Fitting subjects to a model's training grid (cfx.counterfactual.grid) and the sweep around it."""

import json

import nibabel as nib
import numpy as np
import pytest
from nibabel import orientations as ornt

from cfx.counterfactual.cohort import cohort_from_masks
from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.grid import (
    ModelGrid,
    ResampledGenerator,
    fit_run_generator,
    fit_subject,
    grid_warnings,
    model_grid,
    plan_grid,
    resample,
)
from cfx.counterfactual.labels import DEFAULT_VOCABULARY
from cfx.counterfactual.phantom.anatomy import build_anatomy
from cfx.counterfactual.sweep.catalog import find_checkpoint
from cfx.counterfactual.sweep.engine import SweepConfig, run_sweep
from cfx.counterfactual.sweep.request import Request
from cfx.counterfactual.volume import read_labels, read_volume, write_volume

GRID = ModelGrid((10.0, 10.0, 10.0), "RAS", (16, 16, 16), (320.0, 320.0, 320.0),
                 (-1024.0, 1024.0))
SHIFT = {"yes": 20.0, "no": 0.0}
# Lung mean of the difference map back on a 2x finer grid, against the constant shift on the
# model grid: linear interpolation blends the one-model-voxel lung edge with its surroundings.
# Measured 17.85 of 20 HU (0.89) on this 64^3 phantom at 5 mm (0.86 at 48^3, 0.79 at 32^3: the
# smaller the lungs in model voxels, the larger the share of edge).
EDGE_LOSS = 0.15


class GridFake:
    """A learned-model stand-in that records its training grid: lung -850 HU + the smoking
    shift, 40 HU elsewhere, on whatever grid it is given (which it records)."""

    name = "grid-fake"
    content_hash = "sha256:grid-fake"
    text_encoder = None
    config = {"grid": GRID.to_json()}

    def __init__(self):
        self.seen = []

    def check(self, cohort, attribute):
        pass

    def generate(self, subject, mask, attribute, requests, seed):
        self.seen.append((mask.shape, "".join(nib.aff2axcodes(mask.affine)), mask.spacing))
        lung = np.isin(mask.data, (1, 2))
        return [np.where(lung, -850.0 + SHIFT[r.value], 40.0).astype(np.float32)
                for r in requests]


def _reoriented(data, affine, codes):
    """``data`` and ``affine`` stored with array axes along ``codes`` (same voxels in space)."""
    transform = ornt.ornt_transform(ornt.io_orientation(affine), ornt.axcodes2ornt(codes))
    return (ornt.apply_orientation(data, transform),
            affine @ ornt.inv_ornt_aff(transform, data.shape))


@pytest.fixture
def fine_subject(tmp_path):
    """A phantom's labels at 5 mm (2x finer than GRID), stored PIL (axes permuted, flipped)."""
    labels = build_anatomy((64, 64, 64), 3).labels.astype(np.int16)
    affine = np.diag([5.0, 5.0, 5.0, 1.0])
    affine[:3, 3] = -157.5
    data, stored = _reoriented(labels, affine, "PIL")
    path = tmp_path / "S1.nii.gz"
    write_volume(path, data, stored)
    return path


def _lung_mean(diff, mask):
    return float(diff[np.isin(mask, (1, 2))].mean())


def test_lps_volume_round_trips_exactly():
    rng = np.random.default_rng(0)
    data = rng.normal(-500, 300, (8, 6, 5)).astype(np.float32)
    lps = np.diag([-10.0, -10.0, 10.0, 1.0])
    lps[:3, 3] = (100.0, 50.0, -20.0)
    fit = fit_subject(data.shape, lps, GRID)
    assert "".join(nib.aff2axcodes(fit.model_affine)) == "RAS" and fit.factor == (1, 1, 1)
    on_model = resample(data, lps, fit.model_shape, fit.model_affine, "linear")
    # the same voxels with x and y reversed (nibabel's own reorientation as the reference)
    expected, expected_affine = _reoriented(data, lps, "RAS")
    np.testing.assert_allclose(on_model, expected, atol=1e-3)
    np.testing.assert_allclose(fit.model_affine, expected_affine, atol=1e-9)
    back = resample(on_model, fit.model_affine, data.shape, lps, "linear")
    np.testing.assert_allclose(back, data, atol=1e-3)
    labels = (data > -500).astype(np.int16)
    assert np.array_equal(resample(resample(labels, lps, fit.model_shape, fit.model_affine,
                                            "nearest"), fit.model_affine, data.shape, lps,
                                   "nearest"), labels)


def test_fit_keeps_centre_and_extent_of_a_finer_permuted_grid():
    axes = np.array([[0, 0, -5.0], [5.0, 0, 0], [0, -5.0, 0]])  # voxel axes along I, R, P
    affine = np.eye(4)
    affine[:3, :3] = axes.T
    affine[:3, 3] = (12.0, -30.0, 7.0)
    shape = (10, 12, 14)
    fit = fit_subject(shape, affine, GRID)
    centre = affine @ np.r_[(np.asarray(shape) - 1) / 2, 1]
    model_centre = fit.model_affine @ np.r_[(np.asarray(fit.model_shape) - 1) / 2, 1]
    np.testing.assert_allclose(model_centre, centre, atol=1e-9)
    assert "".join(nib.aff2axcodes(fit.model_affine)) == "RAS"
    np.testing.assert_allclose(np.linalg.norm(fit.model_affine[:3, :3], axis=0), 10.0)
    codes = nib.aff2axcodes(affine)
    extent = {c: n * 5.0 for c, n in zip(codes, shape, strict=True)}
    want = (extent.get("R", extent.get("L")), extent.get("A", extent.get("P")),
            extent.get("S", extent.get("I")))
    assert fit.extent == want and fit.model_shape == tuple(round(e / 10) for e in want)
    assert fit.factor == (2.0, 2.0, 2.0) and not fit.identity


def test_sweep_on_finer_other_orientation_writes_on_subject_grid(fine_subject, tmp_path):
    fake = GridFake()
    cohort = cohort_from_masks([fine_subject])
    config = SweepConfig("smoking", ("no", "yes"), (0,), tmp_path / "run", quiet=True)
    run_sweep(config, cohort, fake)
    # the model saw its own grid: 10 mm, RAS
    assert {(codes, spacing) for _, codes, spacing in fake.seen} == {("RAS", (10.0,) * 3)}
    mask = read_labels(fine_subject)
    run = tmp_path / "run"
    manifest = json.loads((run / "manifest.json").read_text())
    ct = read_volume(run / manifest["items"][1]["path"])
    diff = read_volume(next(run.glob("sub-S1/*_diff.nii.gz")))
    for volume in (ct, diff):  # voxel for voxel on the subject's own grid and affine
        assert volume.shape == mask.shape
        np.testing.assert_allclose(volume.affine, mask.affine, atol=1e-4)
    shift = _lung_mean(diff.data, mask.data)
    assert abs(shift - SHIFT["yes"]) <= EDGE_LOSS * SHIFT["yes"], shift
    # lung voxels over 15 mm (the interpolation's 10 mm reach + half a model voxel where the
    # nearest-neighbour mask can move an edge) from any non-lung voxel carry the shift exactly
    from scipy.ndimage import binary_erosion

    core = binary_erosion(np.isin(mask.data, (1, 2)), iterations=4)
    assert core.sum() > 5000
    np.testing.assert_allclose(diff.data[core], SHIFT["yes"], atol=1e-3)
    # the manifest records both grids, the resampling and the mode
    block = manifest["grid"]
    entry = block["subjects"]["S1"]
    assert entry["subject"]["orientation"] == "PIL" and entry["subject"]["spacing_mm"] == [5.0] * 3
    assert entry["model"]["orientation"] == "RAS" and entry["model"]["spacing_mm"] == [10.0] * 3
    assert entry["resampled"] and entry["factor"] == [2.0] * 3
    assert block["mode"] == "subject" and block["resampling"]["mask"] == "nearest neighbour"
    assert manifest["settings"]["grid"]["mode"] == "subject"


def test_grid_model_writes_on_the_model_grid_with_its_masks(fine_subject, tmp_path):
    cohort = cohort_from_masks([fine_subject])
    config = SweepConfig("smoking", ("no", "yes"), (0,), tmp_path / "run", quiet=True,
                         grid="model")
    run_sweep(config, cohort, GridFake())
    run = tmp_path / "run"
    manifest = json.loads((run / "manifest.json").read_text())
    subject = read_labels(fine_subject)
    fit = fit_subject(subject.shape, subject.affine, GRID)
    mask = read_labels(manifest["masks"]["S1"])  # the run's mask is the model-grid one
    diff = read_volume(next(run.glob("sub-S1/*_diff.nii.gz")))
    assert diff.shape == mask.shape == fit.model_shape
    np.testing.assert_allclose(diff.affine, fit.model_affine, atol=1e-4)
    np.testing.assert_allclose(mask.affine, fit.model_affine, atol=1e-4)
    assert _lung_mean(diff.data, mask.data) == pytest.approx(SHIFT["yes"], abs=1e-3)
    assert manifest["grid"]["subjects"]["S1"]["model_grid_mask"].startswith("grid/")


def test_subject_on_the_model_grid_is_passed_through(tmp_path):
    labels = build_anatomy((32, 32, 32), 4).labels.astype(np.int16)
    affine = np.diag([10.0, 10.0, 10.0, 1.0])
    write_volume(tmp_path / "S2.nii.gz", labels, affine)
    plan = plan_grid(GridFake(), cohort_from_masks([tmp_path / "S2.nii.gz"]), "subject",
                     DEFAULT_VOCABULARY, tmp_path / "run")
    assert plan.fits["S2"].identity and grid_warnings(plan) == []


def test_extreme_factor_and_field_of_view_warned_with_numbers(tmp_path):
    labels = np.zeros((40, 40, 20), np.int16)
    labels[10:30, 10:30, 5:15] = 1
    write_volume(tmp_path / "big.nii.gz", labels, np.diag([12.0, 12.0, 1.0, 1.0]))
    plan = plan_grid(GridFake(), cohort_from_masks([tmp_path / "big.nii.gz"]), "subject",
                     DEFAULT_VOCABULARY, tmp_path / "run")
    extreme, larger = grid_warnings(plan)
    assert "1 of 1 subjects" in extreme and "factor 0.833x0.833x10" in extreme
    assert "field of view 320x320x320 mm" in larger and "480x480x20 mm" in larger


def test_checkpoint_without_grid_refused_with_how_to_add_it():
    with pytest.raises(UserInputError, match=r"ckpt/config.json: no grid block.*add \"grid\""):
        model_grid({"training_cohort": {"kind": "cohort"}}, "ckpt/config.json")
    with pytest.raises(UserInputError, match="three axis codes"):
        model_grid({"grid": {**GRID.to_json(), "orientation": "RRS"}}, "ckpt/config.json")


@pytest.mark.parametrize(("name", "spacing"), [("phantom-gan-64", 5.0),
                                               ("phantom-diffusion-32", 10.0)])
def test_bundled_checkpoints_record_their_phantom_grid(name, spacing):
    config = json.loads((find_checkpoint(name) / "config.json").read_text())
    grid = model_grid(config, name)
    assert grid.spacing == (spacing,) * 3 and grid.orientation == "RAS"
    assert grid.field_of_view == (320.0,) * 3
    assert grid.patch == tuple(config["training"]["arguments"]["patch"])
    # the same grid an old config (no block) gets from its phantom training cohort
    assert model_grid({k: v for k, v in config.items() if k != "grid"}, name) == grid


class FromCTFake(GridFake):
    """Edits the subject's CT: returns it plus the smoking shift, on the grid it is given."""

    sampling = {"from_ct": True}

    def generate(self, subject, mask, attribute, requests, seed, ct=None):
        assert ct is not None and ct.shape == mask.shape
        np.testing.assert_allclose(ct.affine, mask.affine)
        self.seen.append((mask.shape, "".join(nib.aff2axcodes(mask.affine)), mask.spacing))
        return [ct.data + SHIFT[r.value] for r in requests]


def test_from_ct_a_linear_field_survives_the_round_trip(fine_subject, tmp_path):
    """Linear interpolation reproduces a CT that is linear in space exactly, down to 10 mm and
    back, away from the outermost voxels (extended from the nearest model voxel)."""
    mask = read_labels(fine_subject)
    index = np.stack(np.meshgrid(*map(np.arange, mask.shape), indexing="ij"), -1)
    ras = index @ mask.affine[:3, :3].T + mask.affine[:3, 3]
    ramp = (2.0 * ras[..., 0] + 0.5 * ras[..., 1] - ras[..., 2]).astype(np.float32)
    write_volume(tmp_path / "ct.nii.gz", ramp, mask.affine)
    subject = cohort_from_masks([fine_subject]).subjects[0]
    subject = type(subject)(subject.id, subject.mask, tmp_path / "ct.nii.gz", {})
    fake = FromCTFake()
    requests = [Request(v, {"smoking": v}, v, {"smoking": v}) for v in ("no", "yes")]
    no, yes = ResampledGenerator(fake, GRID).generate(subject, mask, "smoking", requests, 0)
    assert fake.seen == [((32, 32, 32), "RAS", (10.0,) * 3)]
    inner = (slice(1, -1),) * 3
    np.testing.assert_allclose(no[inner], ramp[inner], atol=1e-2)
    np.testing.assert_allclose(yes - no, SHIFT["yes"], atol=1e-3)


def test_audit_regenerates_on_the_grid_the_run_recorded():
    fake = GridFake()
    assert fit_run_generator(fake, {}) is fake
    wrapped = fit_run_generator(fake, {"grid": {"model": GRID.to_json()}})
    assert wrapped.inner is fake and wrapped.grid == GRID
    assert wrapped.content_hash == fake.content_hash


def test_training_grid_of_a_cohort_median_spacing_commonest_orientation_largest_extent(
        tmp_path):
    from cfx.counterfactual.training import _training_geometry

    grids = {"A": ((20, 30, 10), [2.0, 2.0, 3.0], "RAS"), "B": ((25, 20, 12), [2.0, 2.0, 3.0],
                                                               "RAS"),
             "C": ((40, 40, 40), [1.0, 1.0, 1.0], "LPS")}
    for sid, (shape, spacing, codes) in grids.items():
        affine = np.diag([*spacing, 1.0])
        if codes == "LPS":
            affine[:2] *= -1
        labels = np.zeros(shape, np.int16)
        labels[2:8, 2:8, 2:8] = 1
        write_volume(tmp_path / "masks" / f"{sid}.nii.gz", labels, affine)
    (tmp_path / "clinical.csv").write_text("subject,smoking\nA,yes\nB,no\nC,yes\n")

    spacing, codes, extent = _training_geometry({"cohort": str(tmp_path)})
    assert spacing == (2.0, 2.0, 3.0) and codes == "RAS"
    assert extent == (50.0, 60.0, 40.0)  # B's 25 x 2, A's 30 x 2, C's 40 x 1 mm


def test_cli_grid_option_takes_subject_or_model():
    from typer.testing import CliRunner

    from cfx.counterfactual.cli import app

    result = CliRunner().invoke(app, ["sweep", "--attribute", "smoking", "--values", "no,yes",
                                      "--grid", "native"])
    assert result.exit_code == 2 and "--grid" in result.output and "model" in result.output
