import numpy as np
import pytest

from cfx.analysis.audit import FEATURE_METRICS, feature_names, lung_features
from cfx.analysis.regions import region_metrics, zone_masks


def test_features_are_the_region_metrics_of_the_lung_and_its_thirds(labels, affine, rng):
    ct = rng.normal(-800, 60, labels.shape).astype(np.float32)
    lung = np.isin(labels, (1, 2))
    features = lung_features(ct, lung, affine)
    names = feature_names()
    assert features.shape == (24,) and len(names) == 24
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    zones = zone_masks(lung, affine)
    for region, mask in (("lung", lung), *((f"lung-{z}", zones[z]) for z in zones)):
        expected = region_metrics(ct, mask, spacing)
        for metric in FEATURE_METRICS:
            assert features[names.index(f"{region}:{metric}")] == pytest.approx(expected[metric])


def test_a_lung_without_three_slices_is_refused(labels, affine):
    thin = np.zeros(labels.shape, bool)
    thin[3:6, 3:6, 4:6] = True  # two slices along the cranio-caudal axis
    with pytest.raises(ValueError, match=r"zones \['middle'\] are empty"):
        lung_features(np.zeros(labels.shape), thin, affine)
