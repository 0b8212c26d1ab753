"""Geometry: affines that are not finite, singular or sheared, and headers that declare more
voxels than their file holds, are refused when a volume is read, before any allocation."""

import gzip
import hashlib
import json

import nibabel as nib
import numpy as np
import pytest

SHEAR = np.array([[1.5, 0.6, 0, 0], [0, 1.5, 0, 0], [0, 0, 1.5, 0], [0, 0, 0, 1.0]])


def _nifti(path, data, affine):
    """Write ``data`` with ``affine`` as the sform only (nibabel refuses to build some of the
    hostile affines as a qform)."""
    img = nib.Nifti1Image(np.asarray(data), None)
    img.header.set_sform(affine, code=1)
    img.header.set_qform(None, code=0)
    nib.save(img, path)


def _bomb(path, shape, dtype=np.int16):
    """A .nii.gz holding only a header that declares ``shape``."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_sform(np.diag([1.0, 1.0, 1.0, 1.0]), code=1)
    path.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4))


@pytest.mark.parametrize(("affine", "fragment"), [
    (SHEAR, "the affine is sheared"),
    (np.diag([1.5, 1.5, 0.0, 1.0]), "the affine is singular"),
    (np.diag([1.5, 1.5, 1e-9, 1.0]), "the affine is singular"),
    (np.array([[1.5, 1.5, 0, 0], [0, 0, 1.5, 0], [0, 0, 1.5, 0], [0, 0, 0, 1.0]]),
     "the affine is singular"),
    (np.diag([1.5, np.nan, 1.5, 1.0]), "the affine is not a finite 4x4 matrix"),
    (np.diag([1.5, 1.5, np.inf, 1.0]), "the affine is not a finite 4x4 matrix"),
])
@pytest.mark.parametrize("which", ["masks", "ct"])
def test_validate_refuses_a_bad_affine(cohort, labels, refused, affine, fragment, which):
    data = labels if which == "masks" else np.full(labels.shape, -850, np.int16)
    _nifti(cohort / which / "A.nii.gz", data, affine)
    refused(["validate", cohort, "-q"], f"{which}/A.nii.gz: {fragment}")


def test_a_sheared_mask_stops_a_sweep_before_writing(phantom, labels, refused, work):
    _nifti(phantom / "masks" / "P001.nii.gz", labels, SHEAR)
    refused(["sweep", "-a", "smoking", "--values", "no,yes", "--cohort", phantom, "--model",
             "phantom-oracle", "--out", work / "out", "-q"], "P001.nii.gz: the affine is sheared")


def test_render_refuses_a_sheared_run_volume(run, refused):
    path = run / "sub-P000" / "sub-P000_attr-smoking_val-no_seed-0_ct.nii.gz"
    img = nib.load(path)
    _nifti(path, np.asarray(img.dataobj), img.affine @ np.array(
        [[1, 0.3, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]))
    manifest = json.loads((run / "manifest.json").read_text())  # as the sweep recorded it
    for entry in manifest["files"]:
        if entry["path"] == str(path.relative_to(run)):
            entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (run / "manifest.json").write_text(json.dumps(manifest))
    refused(["render", run, "-q"], "sub-P000_attr-smoking_val-no_seed-0_ct.nii.gz: the affine "
                                   "is sheared")


@pytest.mark.parametrize(("shape", "fragment"), [
    ((1000, 1000, 1000), "header declares shape (1000, 1000, 1000) (2000000000 bytes of voxels)"),
    ((2048, 2048, 2048), "more than the 1.07e+09 cfx reads"),
    ((16, 16, 0), "which holds no voxels"),
])
def test_a_header_declaring_more_than_its_file_holds_is_refused(cohort, refused, shape,
                                                                 fragment):
    _bomb(cohort / "masks" / "A.nii.gz", shape)
    message = refused(["validate", cohort, "-q"], "masks/A.nii.gz: ", fragment)
    assert (cohort / "masks" / "A.nii.gz").stat().st_size < 100
    assert "re-export" in message or "resample" in message


def test_a_truncated_uncompressed_nifti_is_refused(cohort, labels, refused):
    (cohort / "masks" / "A.nii.gz").unlink()
    nib.save(nib.Nifti1Image(labels, np.diag([1.5, 1.5, 1.5, 1.0])), cohort / "masks" / "A.nii")
    data = (cohort / "masks" / "A.nii").read_bytes()
    (cohort / "masks" / "A.nii").write_bytes(data[: len(data) // 2])
    refused(["validate", cohort, "-q"], "masks/A.nii: header declares shape (16, 16, 16)",
            "the header is wrong or the file is truncated")


def test_an_mha_declaring_a_huge_grid_is_refused(work, refused):
    root = work / "csv"
    root.mkdir()
    (root / "A.mha").write_bytes(b"ObjectType = Image\nNDims = 3\nDimSize = 1000 1000 1000\n"
                                 b"ElementSpacing = 1 1 1\nElementType = MET_SHORT\n"
                                 b"ElementDataFile = LOCAL\n" + b"\0" * 16)
    (root / "cohort.csv").write_text("subject,mask\nA,A.mha\n")
    refused(["validate", root / "cohort.csv", "-q"], "A.mha: header declares shape "
                                                     "(1000, 1000, 1000)")
