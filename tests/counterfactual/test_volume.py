import gzip
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.labels import DEFAULT_VOCABULARY, LabelVocabulary
from cfx.counterfactual.volume import (
    ORTHOGONALITY_TOLERANCE,
    Volume,
    check_affine,
    check_same_grid,
    read_labels,
    read_volume,
    write_volume,
)


def _save(path, data, affine):
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def test_integral_hu_round_trip_is_exact_and_int16(tmp_path, rng, affine):
    hu = rng.integers(-1024, 3000, (16, 12, 10)).astype(np.float32)
    out = write_volume(tmp_path / "ct.nii.gz", hu, affine)
    assert nib.load(out).get_data_dtype() == np.int16
    back = read_volume(out)
    assert back.data.dtype == np.float32
    np.testing.assert_array_equal(back.data, hu)
    np.testing.assert_array_equal(back.affine, affine)
    again = read_volume(write_volume(tmp_path / "again.nii", back.data, back.affine))
    np.testing.assert_array_equal(again.affine, affine)


def test_fractional_hu_is_stored_as_float32(tmp_path, rng, affine):
    hu = rng.normal(-850, 20, (8, 8, 8)).astype(np.float32)
    out = write_volume(tmp_path / "ct.nii.gz", hu, affine)
    assert nib.load(out).get_data_dtype() == np.float32
    np.testing.assert_array_equal(read_volume(out).data, hu)


def test_out_of_int16_range_integers_stay_exact(tmp_path, affine):
    hu = np.full((4, 4, 4), 40000.0, np.float32)
    back = read_volume(write_volume(tmp_path / "x.nii", hu, affine))
    np.testing.assert_array_equal(back.data, hu)


def test_spacing_comes_from_the_affine(affine):
    v = Volume(np.zeros((2, 2, 2), np.float32), affine)
    np.testing.assert_allclose(v.spacing, (0.75, 0.8, 2.5), rtol=1e-6)


def test_scaled_nifti_reads_in_hu(tmp_path, affine):
    img = nib.Nifti1Image(np.arange(64, dtype=np.int16).reshape(4, 4, 4), affine)
    img.header.set_slope_inter(2.0, -1024.0)
    nib.save(img, tmp_path / "scaled.nii.gz")
    data = read_volume(tmp_path / "scaled.nii.gz").data
    assert data[0, 0, 0] == -1024 and data[3, 3, 3] == 63 * 2 - 1024


def test_trailing_singleton_axis_is_squeezed(tmp_path, affine):
    path = _save(tmp_path / "four.nii.gz", np.zeros((4, 5, 6, 1), np.float32), affine)
    assert read_volume(path).shape == (4, 5, 6)


def test_mha_reads_with_ras_affine(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)  # (z, y, x)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.5, 0.6, 2.0))
    img.SetOrigin((10.0, 20.0, 30.0))
    sitk.WriteImage(img, str(tmp_path / "ct.mha"))
    v = read_volume(tmp_path / "ct.mha")
    assert v.shape == (4, 3, 2)
    np.testing.assert_array_equal(v.data, arr.transpose(2, 1, 0))
    # LPS origin (10, 20, 30) is RAS (-10, -20, 30); LPS axes flip x and y.
    np.testing.assert_allclose(v.affine, [[-0.5, 0, 0, -10], [0, -0.6, 0, -20], [0, 0, 2, 30],
                                          [0, 0, 0, 1]])


def _write_dicom_series(folder, hu_zyx, spacing, origin, identity):
    folder.mkdir()
    img = sitk.GetImageFromArray(hu_zyx.astype(np.int16))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(img.GetDepth()):
        slc = img[:, :, k]
        for tag, value in identity.items():
            slc.SetMetaData(tag, value)
        slc.SetMetaData("0008|0060", "CT")
        slc.SetMetaData("0020|000d", "1.2.826.0.1.3680043.2.1125.1")
        slc.SetMetaData("0020|000e", "1.2.826.0.1.3680043.2.1125.1.2")
        slc.SetMetaData("0028|1052", "-1024")  # stored = HU + 1024 on disk
        slc.SetMetaData("0028|1053", "1")
        corner = img.TransformIndexToPhysicalPoint((0, 0, k))
        slc.SetMetaData("0020|0032", "\\".join(map(str, corner)))
        slc.SetMetaData("0020|0037", "1\\0\\0\\0\\1\\0")
        slc.SetMetaData("0020|0013", str(k + 1))
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(slc)


IDENTITY = {"0010|0010": "Doe^Jane", "0010|0020": "PID-778899", "0010|0030": "19580214",
            "0008|0080": "Saint Example Hospital"}


def test_dicom_series_reads_in_hu_with_geometry_and_leaks_no_identity(tmp_path, rng):
    hu = rng.integers(-1000, 400, (5, 6, 7)).astype(np.int16)  # (z, y, x)
    _write_dicom_series(tmp_path / "dicom", hu, (0.7, 0.8, 2.5), (10.0, -20.0, 30.0), IDENTITY)
    raw = (tmp_path / "dicom" / "slice000.dcm").read_bytes()
    assert b"Doe^Jane" in raw  # the fixture really carries identity
    v = read_volume(tmp_path / "dicom")
    np.testing.assert_array_equal(v.data, hu.transpose(2, 1, 0).astype(np.float32))
    np.testing.assert_allclose(v.spacing, (0.7, 0.8, 2.5), rtol=1e-6)
    np.testing.assert_allclose(v.affine[:3, 3], (-10.0, 20.0, 30.0))
    out = write_volume(tmp_path / "out.nii.gz", v.data, v.affine)
    written = gzip.decompress(out.read_bytes())
    for value in IDENTITY.values():
        assert value.encode() not in written
    assert "Doe" not in repr(v) and "PID" not in repr(v)


def test_folder_without_dicom_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="no DICOM series"):
        read_volume(tmp_path / "empty")


def test_missing_file(tmp_path):
    with pytest.raises(UserInputError, match=r"nope\.nii\.gz: file not found"):
        read_volume(tmp_path / "nope.nii.gz")


def test_unsupported_extension(tmp_path):
    (tmp_path / "ct.png").write_bytes(b"x")
    with pytest.raises(UserInputError, match=r"ct\.png: unsupported format '\.png'"):
        read_volume(tmp_path / "ct.png")


def test_truncated_file(tmp_path, rng, affine):
    path = write_volume(tmp_path / "ct.nii.gz", rng.normal(size=(20, 20, 20)), affine)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UserInputError, match=r"ct\.nii\.gz: cannot read the volume .*truncated"):
        read_volume(path)


def test_garbage_file(tmp_path):
    (tmp_path / "ct.nii").write_bytes(b"not a nifti at all" * 30)
    with pytest.raises(UserInputError, match=r"ct\.nii: cannot read the volume"):
        read_volume(tmp_path / "ct.nii")


def test_not_3d(tmp_path, affine):
    path = _save(tmp_path / "two.nii.gz", np.zeros((4, 5, 6, 2), np.float32), affine)
    with pytest.raises(UserInputError, match=r"two\.nii\.gz: expected a 3D volume, got shape "
                                             r"\(4, 5, 6, 2\)"):
        read_volume(path)


def test_nan_and_inf(tmp_path, affine):
    data = np.zeros((4, 4, 4), np.float32)
    data[1, 1, 1], data[2, 2, 2] = np.nan, np.inf
    path = _save(tmp_path / "bad.nii.gz", data, affine)
    with pytest.raises(UserInputError, match=r"bad\.nii\.gz: 2 voxels are NaN or infinite"):
        read_volume(path)


def test_labels_read_as_int16(tmp_path, labels, affine):
    path = _save(tmp_path / "mask.nii.gz", labels.astype(np.uint8), affine)
    v = read_labels(path)
    assert v.data.dtype == np.int16
    np.testing.assert_array_equal(v.data, labels)


def test_float_mask_with_integral_values_is_accepted(tmp_path, labels, affine):
    path = _save(tmp_path / "mask.nii.gz", labels.astype(np.float32), affine)
    np.testing.assert_array_equal(read_labels(path).data, labels)


def test_mask_with_non_integer_values(tmp_path, labels, affine):
    data = labels.astype(np.float32)
    data[0, 0, 0] = 1.5
    path = _save(tmp_path / "mask.nii.gz", data, affine)
    with pytest.raises(UserInputError, match=r"mask\.nii\.gz: mask has non-integer values "
                                             r"\(e\.g\. 1\.5\)"):
        read_labels(path)


def test_mask_with_unknown_labels(tmp_path, labels, affine):
    data = labels.copy()
    data[0, 0, 0] = 7
    path = _save(tmp_path / "mask.nii.gz", data, affine)
    with pytest.raises(UserInputError, match=r"mask\.nii\.gz: mask has labels \[7\] outside the "
                                             r"vocabulary \(0=background, 1=left-lung"):
        read_labels(path)
    custom = LabelVocabulary({1: "left-lung", 2: "right-lung", 3: "airway", 7: "lesion"})
    assert read_labels(path, custom).data[0, 0, 0] == 7


def test_region_absent_from_mask_names_the_file(labels):
    no_airway = np.where(labels == 3, 0, labels)
    with pytest.raises(UserInputError, match=r"m\.nii: region 'airway' is absent"):
        DEFAULT_VOCABULARY.region_mask(no_airway, "airway", source="m.nii")


def test_grid_mismatch_names_both_files_and_values(affine):
    a = Volume(np.zeros((4, 4, 4)), affine, "ct.nii.gz")
    b = Volume(np.zeros((4, 4, 5)), affine, "mask.nii.gz")
    with pytest.raises(UserInputError, match=r"ct\.nii\.gz has shape \(4, 4, 4\) but mask\.nii\.gz "
                                             r"has shape \(4, 4, 5\)"):
        check_same_grid(a, b)
    shifted = affine.copy()
    shifted[0, 3] += 0.5
    c = Volume(np.zeros((4, 4, 4)), shifted, "mask.nii.gz")
    with pytest.raises(UserInputError, match=r"ct\.nii\.gz and mask\.nii\.gz have different "
                                             r"affines \(max difference 0\.5 mm"):
        check_same_grid(a, c)
    tiny = affine.copy()
    tiny[0, 3] += 1e-5
    check_same_grid(a, Volume(np.zeros((4, 4, 4)), tiny, "mask.nii.gz"))


def test_oblique_and_flipped_affine_is_kept(tmp_path, affine):
    assert np.linalg.det(affine[:3, :3]) < 0
    out = write_volume(tmp_path / "x.nii.gz", np.zeros((3, 3, 3), np.float32), affine)
    np.testing.assert_array_equal(read_volume(out).affine, affine)


def test_failed_write_leaves_nothing_under_the_final_name(tmp_path, affine, monkeypatch):
    def half_write(img, filename):
        with open(filename, "wb") as fh:
            fh.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(nib, "save", half_write)
    with pytest.raises(KeyboardInterrupt):
        write_volume(tmp_path / "ct.nii.gz", np.zeros((3, 3, 3)), affine)
    assert list(tmp_path.iterdir()) == []


def test_killed_write_leaves_no_file_under_the_final_name(tmp_path):
    final = tmp_path / "big.nii.gz"
    script = (
        "import os, signal, numpy as np, nibabel as nib\n"
        "from cfx.counterfactual.volume import write_volume\n"
        "real = nib.save\n"
        "def save_then_die(img, filename):\n"
        "    real(img, filename)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "nib.save = save_then_die\n"
        f"write_volume({str(final)!r}, np.ones((30, 30, 30), np.float32) * 0.5, np.eye(4))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -9
    assert not final.exists()
    assert all(p.name.startswith(".big.nii.gz.") for p in tmp_path.iterdir())
    assert os.listdir(tmp_path)  # the process really died after writing its temp file


def test_voxel_volume_is_abs_det_of_the_affine(affine):
    flipped = Volume(np.zeros((2, 2, 2)), affine)  # rotated, one axis flipped: det < 0
    assert np.linalg.det(affine[:3, :3]) < 0
    assert flipped.voxel_ml == pytest.approx(0.75 * 0.8 * 2.5 / 1000, rel=1e-6)


def test_check_affine_tolerates_float32_rounding_and_refuses_a_slight_shear(affine):
    assert np.array_equal(check_affine(affine, "a.nii"), affine)
    for cosine, ok in ((0.5 * ORTHOGONALITY_TOLERANCE, True), (2 * ORTHOGONALITY_TOLERANCE, False)):
        sheared = np.eye(4)
        sheared[:2, 1] = [cosine, np.sqrt(1 - cosine**2)]  # axis 1 tilted toward axis 0
        if ok:
            check_affine(sheared, "a.nii")
        else:
            with pytest.raises(UserInputError, match=r"^a.nii: the affine is sheared \(two voxel "
                                                     r"axes 89\.89° apart"):
                check_affine(sheared, "a.nii")
