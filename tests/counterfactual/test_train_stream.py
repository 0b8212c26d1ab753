"""Streamed training patches: the same batches as the in-memory source, from a disk cache."""

import shutil

import numpy as np
import pytest
from scipy import ndimage

from cfx.counterfactual.cohort import load_cohort
from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.grid import ModelGrid
from cfx.counterfactual.phantom import PhantomSettings, write_phantom
from cfx.counterfactual.training_data import CohortSource
from cfx.counterfactual.training_stream import StreamingCohortSource
from cfx.counterfactual.volume import read_volume, write_volume


def _grid(spacing):
    return ModelGrid((float(spacing),) * 3, "RAS", (16, 16, 16), (320.0,) * 3, (-1024, 1024))


@pytest.fixture(scope="module")
def cohort_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("c") / "cohort"
    write_phantom(out, PhantomSettings(subjects=3, shape=(20, 20, 20), spacing=(16.0,) * 3),
                  quiet=True)
    return out


@pytest.mark.parametrize(("body", "workers"), [(False, 0), (True, 2)])
def test_streamed_batches_equal_the_in_memory_ones(cohort_folder, tmp_path, body, workers):
    cohort = load_cohort(cohort_folder)
    memory = CohortSource(cohort, (24, 16, 16), body=body)
    stream = StreamingCohortSource(cohort, (24, 16, 16), _grid(16), tmp_path / "cache",
                                   body=body, workers=workers)
    a, b = np.random.default_rng(4), np.random.default_rng(4)
    for _ in range(3):
        expected, got = memory(a, 5), stream(b, 5)
        np.testing.assert_array_equal(got.labels, expected.labels)
        np.testing.assert_array_equal(got.ct, expected.ct)
        assert got.labels.dtype == np.int64 and got.ct.dtype == np.float32
        assert got.phrases == expected.phrases
    # the generator advanced exactly as the in-memory source advanced it
    assert a.bit_generator.state == b.bit_generator.state
    assert (got.labels == 4).any() == body  # the body channel
    assert stream.summary() == memory.summary()


def test_streamed_whole_subjects_equal_the_in_memory_ones(cohort_folder, tmp_path):
    cohort = load_cohort(cohort_folder)
    memory = CohortSource(cohort, (16, 16, 16), body=True)
    stream = StreamingCohortSource(cohort, (16, 16, 16), _grid(16), tmp_path / "cache",
                                   body=True, workers=0)
    a, b = np.random.default_rng(4), np.random.default_rng(4)
    expected, got = memory.whole(a, 4), stream.whole(b, 4)
    np.testing.assert_array_equal(got.labels, expected.labels)
    np.testing.assert_array_equal(got.ct, expected.ct)
    assert got.labels.shape == (4, 20, 20, 20) and got.phrases == expected.phrases
    assert a.bit_generator.state == b.bit_generator.state
    assert stream.cohort_size == memory.cohort_size == len(cohort.subjects)
    expected, got = memory.whole_of([1, 0, 1]), stream.whole_of([1, 0, 1])
    np.testing.assert_array_equal(got.ct, expected.ct)
    np.testing.assert_array_equal(got.labels, expected.labels)
    assert got.phrases == expected.phrases and got.phrases[0] != got.phrases[1]


def test_rows_are_read_from_the_whole_drawn_batch(cohort_folder, tmp_path):
    stream = StreamingCohortSource(load_cohort(cohort_folder), (16, 16, 16), _grid(16),
                                   tmp_path / "cache", workers=0)
    whole = stream(np.random.default_rng(1), 4)
    rng = np.random.default_rng(1)
    part = stream.read_rows(rng, 4, slice(2, 4))
    np.testing.assert_array_equal(part.ct, whole.ct[2:])
    assert part.phrases == whole.phrases[2:]
    reference = np.random.default_rng(1)
    stream.draw(reference, 4)
    assert rng.bit_generator.state == reference.bit_generator.state


def test_the_cache_is_prepared_once_and_again_when_an_input_changes(cohort_folder, tmp_path):
    copy = tmp_path / "cohort"
    shutil.copytree(cohort_folder, copy)
    cache = tmp_path / "cache"
    StreamingCohortSource(load_cohort(copy), (16, 16, 16), _grid(16), cache, workers=0)
    entries = sorted(p.name for p in cache.iterdir())
    assert len(entries) == 3 and not any(name.startswith(".") for name in entries)
    stamps = {p.name: (p / "ct.npy").stat().st_mtime_ns for p in cache.iterdir()}
    StreamingCohortSource(load_cohort(copy), (16, 16, 16), _grid(16), cache, workers=0)
    assert {p.name: (p / "ct.npy").stat().st_mtime_ns for p in cache.iterdir()} == stamps
    ct = read_volume(copy / "ct" / "P001.nii.gz")
    write_volume(copy / "ct" / "P001.nii.gz", ct.data + 10, ct.affine)
    source = StreamingCohortSource(load_cohort(copy), (16, 16, 16), _grid(16), cache,
                                   workers=0)
    assert len(list(cache.iterdir())) == 4  # P001 prepared again under a new key
    new = next(p for p in cache.iterdir() if p.name not in entries)
    assert new.name.startswith("P001-")
    np.testing.assert_allclose(np.load(new / "ct.npy"), ct.data + 10, atol=0.5)
    assert source._entries[1].folder == new


def test_a_subject_off_the_training_grid_is_resampled_onto_it(cohort_folder, tmp_path):
    """20 voxels of 16 mm onto 8 mm: 40 voxels per axis, the lung volume kept, the CT
    trilinear."""
    cohort = load_cohort(cohort_folder)
    stream = StreamingCohortSource(cohort, (16, 16, 16), _grid(8), tmp_path / "cache",
                                   workers=0)
    entry = stream._entries[0]
    channels = np.load(entry.folder / "channels.npy")
    ct = np.load(entry.folder / "ct.npy")
    assert channels.shape == ct.shape == (40, 40, 40) == entry.shape
    mask = read_volume(cohort.subjects[0].mask).data
    original = read_volume(cohort.subjects[0].ct).data
    lung_mm3 = np.isin(mask, (1, 2)).sum() * 16**3
    assert np.isin(channels, (1, 2)).sum() * 8**3 == pytest.approx(lung_mm3, rel=0.15)
    assert entry.lung == np.isin(channels, (1, 2)).sum()
    # trilinear, as scipy computes it: new voxel i (same centre, half the size) sits at old
    # index 0.5 i - 0.25, edges extended
    axis = 0.5 * np.arange(40) - 0.25
    reference = ndimage.map_coordinates(original.astype(np.float64),
                                        np.meshgrid(axis, axis, axis, indexing="ij"),
                                        order=1, mode="nearest")
    np.testing.assert_allclose(ct, reference, atol=0.01)
    batch = stream(np.random.default_rng(0), 4)
    assert batch.labels.shape == (4, 16, 16, 16)
    assert all(np.isin(patch, (1, 2)).any() for patch in batch.labels)


def test_errors_name_the_subject(cohort_folder, tmp_path):
    copy = tmp_path / "noct"
    shutil.copytree(cohort_folder, copy)
    shutil.rmtree(copy / "ct")
    with pytest.raises(UserInputError, match="subject P000 has no CT; cfx train needs a CT"):
        StreamingCohortSource(load_cohort(copy), (16,) * 3, _grid(16), tmp_path / "c1")
    copy = tmp_path / "nolung"
    shutil.copytree(cohort_folder, copy)
    mask = read_volume(copy / "masks" / "P002.nii.gz")
    write_volume(copy / "masks" / "P002.nii.gz", np.where(mask.data == 3, 3, 0), mask.affine)
    with pytest.raises(UserInputError, match=r"P002.nii.gz: no lung voxel \(labels \[1, 2\]\)"):
        StreamingCohortSource(load_cohort(copy), (16,) * 3, _grid(16), tmp_path / "c2",
                              workers=0)
    # the subjects prepared before the error are complete; no temporary folder is left
    assert all(not p.name.startswith(".") for p in (tmp_path / "c2").iterdir())
