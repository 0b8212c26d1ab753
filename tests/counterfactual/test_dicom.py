"""DICOM series folders: HU and geometry against pydicom's own reading of a real CT slice."""

import shutil

import nibabel as nib
import numpy as np
import pytest

from cfx.counterfactual.cohort import load_cohort
from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.volume import (
    check_same_grid,
    read_geometry,
    read_labels,
    read_volume,
    write_volume,
)

pydicom = pytest.importorskip("pydicom")

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@pytest.fixture
def ct_small():
    """``CT_small.dcm`` shipped in pydicom's wheel: one real thoracic CT slice, 128^2."""
    return pydicom.data.get_testdata_file("CT_small.dcm")


@pytest.fixture
def series(tmp_path, ct_small):
    folder = tmp_path / "series"
    folder.mkdir()
    shutil.copy(ct_small, folder / "slice-000.dcm")
    return folder


def _pydicom_reference(path):
    """HU ``(columns, rows)`` and the RAS affine of a slice, from pydicom and the DICOM rules:
    voxel (i column, j row) sits at IPP + i * dc * row_cosine + j * dr * column_cosine (LPS)."""
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    row_cosine = np.array(ds.ImageOrientationPatient[:3], dtype=float)
    column_cosine = np.array(ds.ImageOrientationPatient[3:], dtype=float)
    dr, dc = (float(s) for s in ds.PixelSpacing)
    affine = np.eye(4)
    affine[:3, 0] = LPS_TO_RAS @ row_cosine * dc
    affine[:3, 1] = LPS_TO_RAS @ column_cosine * dr
    affine[:3, 2] = LPS_TO_RAS @ np.cross(row_cosine, column_cosine)  # unit: one slice
    affine[:3, 3] = LPS_TO_RAS @ np.array(ds.ImagePositionPatient, dtype=float)
    return hu.T, affine, ds


def test_series_folder_gives_pydicom_hu_and_geometry(series, ct_small):
    volume = read_volume(series)
    hu, affine, ds = _pydicom_reference(ct_small)
    assert float(ds.RescaleIntercept) == -1024  # the rescale matters: raw values are not HU
    assert volume.shape == (128, 128, 1) and volume.data.dtype == np.float32
    np.testing.assert_array_equal(volume.data[..., 0], hu)
    np.testing.assert_allclose(volume.affine[:3, :2], affine[:3, :2], atol=1e-6)
    np.testing.assert_allclose(volume.affine[:3, 3], affine[:3, 3], atol=1e-6)
    normal = volume.affine[:3, 2] / np.linalg.norm(volume.affine[:3, 2])
    np.testing.assert_allclose(normal, affine[:3, 2], atol=1e-6)
    assert volume.spacing[:2] == pytest.approx((0.661468, 0.661468))
    assert nib.aff2axcodes(volume.affine) == ("L", "P", "S")  # axial, stored as DICOM rows
    shape, header_affine = read_geometry(series)
    assert shape == volume.shape
    np.testing.assert_array_equal(header_affine, volume.affine)


def test_series_folder_is_a_cohort_ct(series, tmp_path):
    root = tmp_path / "cohort"
    shutil.copytree(series, root / "ct" / "S1")
    ct = read_volume(root / "ct" / "S1")
    mask = np.zeros(ct.shape, np.int16)
    mask[40:60, 40:90, 0], mask[70:90, 40:90, 0] = 2, 1
    write_volume(root / "masks" / "S1.nii.gz", mask, ct.affine)
    (root / "clinical.csv").write_text("subject,smoking\nS1,yes\n")
    subject = load_cohort(root).subject("S1")
    assert subject.ct == root / "ct" / "S1"
    check_same_grid(read_labels(subject.mask), read_volume(subject.ct))


def test_folder_with_two_series_is_refused(series, ct_small):
    other = pydicom.dcmread(ct_small)
    other.SeriesInstanceUID = pydicom.uid.generate_uid()
    other.SOPInstanceUID = pydicom.uid.generate_uid()
    other.save_as(series / "other.dcm")
    with pytest.raises(UserInputError, match=r"series: folder holds 2 DICOM series .*a folder "
                                             "of its own"):
        read_volume(series)


def test_folder_without_dicom_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="empty: folder holds no DICOM series"):
        read_volume(tmp_path / "empty")
