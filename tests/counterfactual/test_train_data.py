"""Training batches: on-the-fly phantom subjects and lung-centred patches of a cohort."""

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from cfx.counterfactual.cohort import load_cohort
from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.labels import DEFAULT_VOCABULARY, LabelVocabulary
from cfx.counterfactual.phantom import PhantomSettings, write_phantom
from cfx.counterfactual.phantom.anatomy import build_anatomy
from cfx.counterfactual.phantom.clinical import CATEGORIES
from cfx.counterfactual.phantom.effects import DEFAULT_EFFECTS
from cfx.counterfactual.phantom.patterns import LungPatterns
from cfx.counterfactual.phantom.render import render
from cfx.counterfactual.training_data import (
    AGE_RANGE,
    CohortSource,
    PhantomSource,
    drop_fields,
    label_channels,
    uniform_attributes,
)


def test_label_channels_follow_the_vocabulary_order():
    vocabulary = LabelVocabulary({7: "airway", 2: "lung"}, {"lung": (2,)})
    labels = np.array([[[0, 2, 7, 2]]])
    np.testing.assert_array_equal(label_channels(labels, vocabulary), [[[0, 1, 2, 1]]])
    np.testing.assert_array_equal(label_channels(np.array([0, 1, 2, 3]), DEFAULT_VOCABULARY),
                                  [0, 1, 2, 3])


def test_uniform_attributes_are_independent_and_cover_every_value():
    rng = np.random.default_rng(0)
    records = [uniform_attributes(rng) for _ in range(4000)]
    ages = np.array([r["age"] for r in records])
    assert ages.min() == AGE_RANGE[0] and ages.max() == AGE_RANGE[1]
    for name, values in CATEGORIES.items():
        counts = np.array([sum(r[name] == v for r in records) for v in values])
        assert abs(counts / 4000 - 1 / len(values)).max() < 0.03
    smoker = np.array([r["smoking"] == "yes" for r in records])
    # no dependence on age (the clinical sampler makes smokers older)
    assert abs(ages[smoker].mean() - ages[~smoker].mean()) < 1.5


def test_drop_fields_rate():
    rng = np.random.default_rng(0)
    record = {f"f{i}": i for i in range(10)}
    kept = [len(drop_fields(record, rng, 0.2)) for _ in range(2000)]
    assert np.mean(kept) == pytest.approx(8.0, abs=0.15)
    assert drop_fields(record, rng, 0.0) == record


def test_phantom_patches_contain_lung_and_match_a_render():
    source = PhantomSource((24, 24, 24), (320 / 24,) * 3, (16, 16, 16), subjects=1, seed=1,
                           drop_rate=0.0)
    batch = source(np.random.default_rng(0), 3)
    assert batch.labels.shape == batch.ct.shape == (3, 16, 16, 16)
    assert batch.ct.dtype == np.float32
    assert all(np.isin(patch, (1, 2)).any() for patch in batch.labels)
    # the one subject: every patch is a crop of its render with its one noise seed
    anatomy_seed, record, noise_seed = source._fixed[0]
    assert batch.phrases == [source.template.phrases(record)] * 3
    assert list(batch.phrases[0]) == ["age", "sex", "smoking", "mortality", "diagnosis"]
    anatomy = build_anatomy((24, 24, 24), anatomy_seed)
    effect = DEFAULT_EFFECTS.effect_map(record, LungPatterns(anatomy.labels, (320 / 24,) * 3))
    ct = render(anatomy, effect, noise_seed)
    for labels, patch in zip(batch.labels, batch.ct, strict=True):
        boxes = [tuple(slice(s, s + 16) for s in start) for start in np.ndindex(9, 9, 9)]
        match = [box for box in boxes if np.array_equal(patch, ct[box])]
        assert len(match) == 1
        np.testing.assert_array_equal(labels, anatomy.labels[match[0]])


def test_phantom_whole_subjects_are_the_render_and_drawn_as_training_draws_them():
    source = PhantomSource((24, 24, 24), (320 / 24,) * 3, (16, 16, 16), subjects=1, seed=1,
                           drop_rate=0.0)
    batch = source.whole(np.random.default_rng(0), 2)
    anatomy_seed, record, noise_seed = source._fixed[0]
    anatomy = build_anatomy((24, 24, 24), anatomy_seed)
    effect = DEFAULT_EFFECTS.effect_map(record, LungPatterns(anatomy.labels, (320 / 24,) * 3))
    for labels, ct in zip(batch.labels, batch.ct, strict=True):
        np.testing.assert_array_equal(ct, render(anatomy, effect, noise_seed))
        np.testing.assert_array_equal(labels, anatomy.labels)
    assert batch.phrases == [source.template.phrases(record)] * 2 and batch.ct.dtype == np.float32
    streamed = PhantomSource((16, 16, 16), (20.0,) * 3, (8, 8, 8), drop_rate=0.5)
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    whole = streamed.whole(a, 3)
    for row in range(3):  # each row a new subject, its record whole though a patch drops fields
        anatomy_seed, record, noise_seed = streamed._draw(b)
        assert whole.phrases[row] == streamed.template.phrases(record)
        assert len(whole.phrases[row]) == 5
        anatomy = build_anatomy((16, 16, 16), anatomy_seed)
        np.testing.assert_array_equal(whole.labels[row], anatomy.labels)


def test_fixed_phantom_subjects_are_read_by_index_and_a_stream_has_no_cohort_size():
    source = PhantomSource((16, 16, 16), (20.0,) * 3, (8, 8, 8), subjects=3, seed=2)
    batch = source.whole_of([2, 0])
    for row, index in enumerate((2, 0)):
        anatomy_seed, record, noise_seed = source._fixed[index]
        anatomy = build_anatomy((16, 16, 16), anatomy_seed)
        effect = DEFAULT_EFFECTS.effect_map(record, LungPatterns(anatomy.labels, (20.0,) * 3))
        np.testing.assert_array_equal(batch.ct[row], render(anatomy, effect, noise_seed))
        assert batch.phrases[row] == source.template.phrases(record)
    assert source.cohort_size == 3
    assert PhantomSource((16, 16, 16), (20.0,) * 3, (8, 8, 8)).cohort_size is None


def test_phantom_stream_is_reproducible_and_new_each_draw():
    source = PhantomSource((16, 16, 16), (20.0,) * 3, (16, 16, 16))
    a = source(np.random.default_rng(3), 4)
    b = source(np.random.default_rng(3), 4)
    np.testing.assert_array_equal(a.ct, b.ct)
    assert a.phrases == b.phrases
    assert not np.array_equal(a.ct[0], a.ct[2])  # two subjects per batch of four


def test_fixed_subjects_do_not_depend_on_the_draw():
    one = PhantomSource((16, 16, 16), (20.0,) * 3, (16, 16, 16), subjects=4, seed=5)
    two = PhantomSource((16, 16, 16), (20.0,) * 3, (16, 16, 16), subjects=4, seed=5)
    assert one._fixed == two._fixed and len(one._fixed) == 4
    assert one.summary()["subjects"] == 4


@pytest.fixture(scope="module")
def cohort_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("c") / "cohort"
    write_phantom(out, PhantomSettings(subjects=2, shape=(20, 20, 20), spacing=(16.0,) * 3),
                  quiet=True)
    return out


def test_cohort_patches_are_crops_around_lung(cohort_folder):
    cohort = load_cohort(cohort_folder)
    source = CohortSource(cohort, (24, 16, 16), drop_rate=0.0)
    batch = source(np.random.default_rng(0), 6)
    assert batch.labels.shape == (6, 24, 16, 16)
    assert all(np.isin(patch, (1, 2)).any() for patch in batch.labels)
    # x is padded (20 < 24) with background and air
    assert (batch.labels[:, :2] == 0).all() and (batch.ct[:, :2] == -1000).all()
    records = [source.template.phrases(s.record) for s in cohort.subjects]
    assert all(phrases in records for phrases in batch.phrases)
    assert source.summary() == {"kind": "cohort", "source": str(cohort.source), "subjects": 2,
                                "prompt_field_drop_rate": 0.0}


def test_cohort_whole_subjects_are_their_mask_and_ct_padded_to_the_largest(cohort_folder,
                                                                          tmp_path):
    folder = tmp_path / "cohort"
    shutil.copytree(cohort_folder, folder)
    small = next((folder / "ct").iterdir())  # one subject on a smaller grid
    for kind in ("ct", "masks"):
        path = folder / kind / small.name
        image = nib.load(path)
        nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj)[:17, :18], image.affine,
                                 image.header), path)
    cohort = load_cohort(folder)
    source = CohortSource(cohort, (16, 16, 16), drop_rate=0.0)
    batch = source.whole(np.random.default_rng(0), 6)
    assert batch.labels.shape == batch.ct.shape == (6, 20, 20, 20)
    assert source.cohort_size == 2
    by_index = source.whole_of([1, 0])
    assert by_index.phrases == [source.template.phrases(s.record)
                                for s in reversed(cohort.subjects)]
    by_phrases = {json.dumps(source.template.phrases(s.record)): s for s in cohort.subjects}
    assert len({json.dumps(p) for p in batch.phrases}) == 2  # both subjects drawn
    for labels, ct, phrases in zip(batch.labels, batch.ct, batch.phrases, strict=True):
        subject = by_phrases[json.dumps(phrases)]
        mask = np.asanyarray(nib.load(subject.mask).dataobj)
        hu = np.asanyarray(nib.load(subject.ct).dataobj).astype(np.float32)
        box = tuple(slice(0, n) for n in mask.shape)
        np.testing.assert_array_equal(labels[box], mask)
        np.testing.assert_array_equal(ct[box], hu)
        outside = np.ones(labels.shape, bool)
        outside[box] = False
        assert (labels[outside] == 0).all() and (ct[outside] == -1000).all()


def test_cohort_without_ct_is_refused(cohort_folder, tmp_path):
    import shutil

    copy = tmp_path / "noct"
    shutil.copytree(cohort_folder, copy)
    shutil.rmtree(copy / "ct")
    with pytest.raises(UserInputError, match="subject P000 has no CT; cfx train needs a CT"):
        CohortSource(load_cohort(copy), (16, 16, 16))


def test_mask_without_lung_is_refused(cohort_folder, tmp_path):
    import shutil

    from cfx.counterfactual.volume import read_volume, write_volume

    copy = tmp_path / "nolung"
    shutil.copytree(cohort_folder, copy)
    mask = read_volume(copy / "masks" / "P000.nii.gz")
    write_volume(copy / "masks" / "P000.nii.gz", np.where(mask.data == 3, 3, 0), mask.affine)
    with pytest.raises(UserInputError, match=r"P000.nii.gz: no lung voxel \(labels \[1, 2\]\)"):
        CohortSource(load_cohort(copy), (16, 16, 16))


def test_a_patch_holds_its_lung_voxel_anywhere():
    from cfx.counterfactual.training_data import _patch_start

    rng = np.random.default_rng(0)
    voxel, patch, shape = np.array([30, 5, 60]), (24, 24, 24), (64, 64, 64)
    starts = np.array([_patch_start(voxel, patch, shape, rng) for _ in range(3000)])
    assert ((starts <= voxel) & (voxel < starts + 24)).all()
    assert (starts >= 0).all() and (starts <= 40).all()
    # every allowed corner occurs: x from 7 to 30, y from 0 to 5, z from 37 to 40
    for axis, (lo, hi) in enumerate([(7, 30), (0, 5), (37, 40)]):
        assert set(starts[:, axis]) == set(range(lo, hi + 1))
    # smaller than the patch: centred with padding
    assert _patch_start(np.array([3]), (16,), (10,), rng) == [-3]
