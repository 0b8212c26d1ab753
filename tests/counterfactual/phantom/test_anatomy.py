import numpy as np
import pytest

from cfx.counterfactual.phantom.anatomy import (
    AIRWAY,
    LEFT_LUNG,
    MIN_SIZE,
    RIGHT_LUNG,
    build_anatomy,
)
from cfx.counterfactual.phantom.oracle import phantom_affine


@pytest.mark.parametrize("seed", range(6))
def test_every_label_present_at_the_smallest_size(seed):
    anatomy = build_anatomy((MIN_SIZE,) * 3, seed)
    counts = np.bincount(anatomy.labels.ravel(), minlength=4)
    assert counts[LEFT_LUNG] > 0 and counts[RIGHT_LUNG] > 0 and counts[AIRWAY] > 0
    assert set(np.unique(anatomy.labels)) == {0, 1, 2, 3}
    assert anatomy.labels.dtype == np.int16
    assert anatomy.base.dtype == np.float32 and anatomy.texture.dtype == np.float32


def test_left_lung_is_on_the_patients_left_in_ras():
    shape, spacing = (32, 28, 24), (5.0, 6.0, 7.0)
    anatomy = build_anatomy(shape, 1)
    affine = phantom_affine(shape, spacing)
    centroid = {label: affine[:3, :3] @ np.argwhere(anatomy.labels == label).mean(axis=0)
                + affine[:3, 3] for label in (LEFT_LUNG, RIGHT_LUNG, AIRWAY)}
    # RAS: +x is the patient's right, so the left lung has the smaller x.
    assert centroid[LEFT_LUNG][0] < 0 < centroid[RIGHT_LUNG][0]
    # the trachea runs higher than the lungs' centre (superior = +z)
    assert centroid[AIRWAY][2] > centroid[LEFT_LUNG][2]


def test_tissues_have_chest_ct_values():
    anatomy = build_anatomy((48, 48, 40), 2)
    base, labels = anatomy.base, anatomy.labels
    lung = np.isin(labels, (1, 2))
    assert base[0, 0, :].tolist() == [-1000.0] * 40  # air outside the body
    assert -880 < np.median(base[lung]) < -820
    assert base[lung].max() > -500  # vessels brighter than parenchyma
    assert np.all(base[labels == AIRWAY] == -1000.0)
    body = base > -1000
    assert (base[body] >= 300).sum() > 50  # bone
    assert ((base[body] > -120) & (base[body] < -80)).sum() > 100  # fat
    assert ((base[body] > 20) & (base[body] < 60)).sum() > 1000  # muscle, heart, liver
    assert np.all(anatomy.texture[labels == AIRWAY] == 0)


def test_same_seed_same_anatomy_other_seed_other_anatomy():
    a, b = build_anatomy((24, 24, 24), 5), build_anatomy((24, 24, 24), 5)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.base, b.base)
    c = build_anatomy((24, 24, 24), 6)
    assert not np.array_equal(a.labels, c.labels)
    lung_a, lung_c = (np.isin(x.labels, (1, 2)).sum() for x in (a, c))
    assert lung_a != lung_c
