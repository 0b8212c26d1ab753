"""Region metrics against hand computations; lung zones on flipped, permuted and oblique grids."""

import numpy as np
import pandas as pd
import pytest

from cfx.analysis.regions import (
    METRICS,
    TABLE_COLUMNS,
    RegionItem,
    craniocaudal_axis,
    region_metrics,
    region_table,
    zone_masks,
)

REGIONS = {"lung": (1, 2), "left-lung": (1,), "right-lung": (2,), "airway": (3,)}


def _affine(columns, origin=(0.0, 0.0, 0.0)):
    out = np.eye(4)
    out[:3, :3] = np.asarray(columns, dtype=float).T  # rows given = array axes
    out[:3, 3] = origin
    return out


def test_region_metrics_match_hand_computation(rng):
    ct = rng.uniform(-1024, 100, size=(6, 5, 4)).astype(np.float32)
    ct[0, 0, :3] = [-950.0, -900.0, -750.0]  # boundaries: not LAA, in band, in band
    mask = np.zeros(ct.shape, bool)
    mask[:4, 1:, :] = True
    mask[0, 0, :3] = True
    values = ct[mask].astype(np.float64)
    got = region_metrics(ct, mask, spacing=(0.5, 0.8, 2.5))

    laa = sum(1 for v in values if v < -950)
    band = sum(1 for v in values if -900 <= v <= -750)
    assert list(got) == list(METRICS)
    assert got["mean"] == pytest.approx(values.sum() / values.size, rel=1e-12)
    assert got["median"] == pytest.approx(np.median(values), rel=1e-12)
    assert got["sd"] == pytest.approx(np.std(values), rel=1e-12)
    ordered = np.sort(values)
    position = 0.15 * (values.size - 1)
    low = int(position)
    pd15 = ordered[low] + (position - low) * (ordered[low + 1] - ordered[low])
    assert got["pd15"] == pytest.approx(pd15, rel=1e-12)
    assert got["laa950"] == pytest.approx(100 * laa / values.size)
    assert got["band900_750"] == pytest.approx(100 * band / values.size)
    assert got["n_voxels"] == values.size == 67
    assert got["volume"] == pytest.approx(67 * 0.5 * 0.8 * 2.5 / 1000)


def test_pd15_by_hand_on_tiny_array():
    ct = np.array([-1000.0, -980.0, -960.0, -900.0, -850.0, -800.0, -700.0]).reshape(7, 1, 1)
    got = region_metrics(ct, np.ones(ct.shape, bool), (1.0, 1.0, 1.0))
    # 15th percentile, linear: position 0.15 * 6 = 0.9 between -1000 and -980.
    assert got["pd15"] == pytest.approx(-1000 + 0.9 * 20)
    assert got["median"] == -900.0
    assert got["laa950"] == pytest.approx(100 * 3 / 7)
    assert got["band900_750"] == pytest.approx(100 * 3 / 7)


def _slab_mask(axis, first, last, shape=(12, 12, 12)):
    mask = np.zeros(shape, bool)
    index = [slice(3, 9)] * 3
    index[axis] = slice(first, last + 1)
    mask[tuple(index)] = True
    return mask


def _occupied(mask, axis):
    other = tuple(a for a in range(3) if a != axis)
    return np.flatnonzero(mask.any(axis=other)).tolist()


def test_zones_axis_aligned_superior_at_high_index():
    affine = _affine(np.diag([0.7, 0.7, 2.5]))
    zones = zone_masks(_slab_mask(2, 2, 10), affine)  # 9 slices
    assert _occupied(zones["upper"], 2) == [8, 9, 10]
    assert _occupied(zones["middle"], 2) == [5, 6, 7]
    assert _occupied(zones["lower"], 2) == [2, 3, 4]


def test_zones_with_flipped_z_put_upper_at_low_index():
    affine = _affine(np.diag([0.7, 0.7, -2.5]), origin=(0, 0, 300))
    zones = zone_masks(_slab_mask(2, 1, 10), affine)  # 10 slices: 3 / 4 / 3
    assert _occupied(zones["upper"], 2) == [1, 2, 3]
    assert _occupied(zones["middle"], 2) == [4, 5, 6, 7]
    assert _occupied(zones["lower"], 2) == [8, 9, 10]


def test_zones_with_permuted_axes_use_the_axis_that_maps_to_z():
    # array axis 0 -> RAS z (pointing inferior), axis 1 -> RAS x, axis 2 -> RAS y.
    affine = _affine([[0, 0, -2.0], [0.8, 0, 0], [0, 0.8, 0]])
    direction = craniocaudal_axis(affine)
    assert (direction.axis, direction.superior_sign) == (0, -1)
    zones = zone_masks(_slab_mask(0, 0, 10), affine)  # 11 slices: 4 / 3 / 4
    assert _occupied(zones["upper"], 0) == [0, 1, 2, 3]
    assert _occupied(zones["middle"], 0) == [4, 5, 6]
    assert _occupied(zones["lower"], 0) == [7, 8, 9, 10]


def test_zones_partition_an_irregular_region_on_the_oblique_fixture(affine, labels):
    direction = craniocaudal_axis(affine)
    assert (direction.axis, direction.superior_sign) == (2, -1)
    assert direction.cosine == pytest.approx(1.0)
    lung = np.isin(labels, (1, 2))
    zones = zone_masks(lung, affine)
    stacked = np.stack(list(zones.values())).astype(int)
    assert (stacked.sum(axis=0) == lung).all()
    # lung spans z = 2..7 (6 slices), superior at z = 2: two slices per zone.
    assert _occupied(zones["upper"], 2) == [2, 3]
    assert _occupied(zones["lower"], 2) == [6, 7]


def test_small_tilt_keeps_the_axis():
    tilt = np.deg2rad(20)
    affine = _affine([[1, 0, 0], [0, np.cos(tilt), np.sin(tilt)], [0, -np.sin(tilt), np.cos(tilt)]])
    direction = craniocaudal_axis(affine)
    assert direction.axis == 2 and direction.superior_sign == 1
    assert direction.cosine == pytest.approx(np.cos(tilt))


def test_craniocaudal_axis_errors():
    # RAS z along the grid's diagonal: every axis at 54.7 degrees from it.
    rows = [[1, -1, 0], [1, 1, -2], [1, 1, 1]] / np.sqrt([[2], [6], [3]])
    oblique = _affine(rows.T)
    with pytest.raises(ValueError, match="no array axis is within 45 degrees"):
        craniocaudal_axis(oblique)
    with pytest.raises(ValueError, match=r"affine: expected a finite 4x4 matrix, got shape "
                                         r"\(3, 3\)"):
        craniocaudal_axis(np.eye(3))
    with pytest.raises(ValueError, match="affine: its 3x3 part is singular"):
        craniocaudal_axis(np.diag([1.0, 1.0, 0.0, 1.0]))


def test_zone_masks_errors():
    with pytest.raises(ValueError, match="mask: expected a 3-D boolean array, got dtype int64"):
        zone_masks(np.ones((4, 4, 4), np.int64), np.eye(4))
    with pytest.raises(ValueError, match="mask: the region is empty"):
        zone_masks(np.zeros((4, 4, 4), bool), np.eye(4))


def test_region_metrics_errors():
    ct = np.zeros((4, 4, 4), np.float32)
    mask = np.ones((4, 4, 4), bool)
    with pytest.raises(ValueError, match=r"ct: expected a 3-D numeric array in HU, got dtype "
                                         r"float32 with shape \(4, 4\)"):
        region_metrics(ct[0], mask, (1, 1, 1))
    with pytest.raises(ValueError, match=r"mask: expected a boolean array of the ct's shape"):
        region_metrics(ct, mask.astype(np.uint8), (1, 1, 1))
    with pytest.raises(ValueError, match=r"spacing: expected three positive voxel sizes in mm, "
                                         r"got \[1.0, 0.0, 1.0\]"):
        region_metrics(ct, mask, (1, 0, 1))
    with pytest.raises(ValueError, match="mask: the region is empty"):
        region_metrics(ct, ~mask, (1, 1, 1))
    ct[1, 1, 1] = np.nan
    with pytest.raises(ValueError, match="ct: the region holds non-finite HU"):
        region_metrics(ct, mask, (1, 1, 1))


def _items(labels, affine, rng):
    for subject in ("s1", "s2"):
        for value in ("no", "yes"):
            ct = rng.normal(-800, 60, labels.shape).astype(np.float32)
            yield RegionItem(subject, value, 0, ct, labels, affine)


def test_region_table_is_tidy_and_matches_region_metrics(labels, affine, rng):
    items = list(_items(labels, affine, np.random.default_rng(1)))
    table = region_table(iter(items), REGIONS, zones=("lung",))
    assert tuple(table.columns) == TABLE_COLUMNS
    names = [*REGIONS, "lung-upper", "lung-middle", "lung-lower"]
    assert len(table) == len(items) * len(names) * len(METRICS)
    assert not table.duplicated(["subject", "value", "seed", "region", "metric"]).any()
    assert set(table["region"]) == set(names)
    assert table["estimate"].dtype == np.float64

    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    item = items[3]
    lung = np.isin(labels, (1, 2))
    upper = zone_masks(lung, affine)["upper"]
    for region, mask in (("right-lung", labels == 2), ("lung-upper", upper)):
        expected = region_metrics(item.ct, mask, spacing)
        rows = table[(table.subject == "s2") & (table.value == "yes") & (table.region == region)]
        got = dict(zip(rows.metric, rows.estimate, strict=True))
        assert got == pytest.approx(expected, rel=1e-12)
        assert dict(zip(rows.metric, rows.unit, strict=True)) == METRICS
    # zones partition the lung: voxel counts add up.
    counts = table[(table.metric == "n_voxels") & (table.subject == "s1") & (table.value == "no")]
    counts = counts.set_index("region")["estimate"]
    assert counts[["lung-upper", "lung-middle", "lung-lower"]].sum() == counts["lung"]
    assert counts["lung"] == counts["left-lung"] + counts["right-lung"]


def test_region_table_keeps_integer_seeds_and_any_keys(labels, affine):
    ct = np.full(labels.shape, -900.0, np.float32)
    table = region_table([RegionItem(7, True, 3, ct, labels, affine)], {"airway": [3]})
    assert table.loc[0, ["subject", "value", "seed"]].tolist() == [7, True, 3]
    assert isinstance(table, pd.DataFrame) and len(table) == len(METRICS)


def test_region_table_errors(labels, affine):
    ct = np.full(labels.shape, -850.0, np.float32)
    item = RegionItem("s1", "yes", 0, ct, labels, affine)
    with pytest.raises(ValueError, match="regions: expected at least one region"):
        region_table([item], {})
    with pytest.raises(ValueError, match=r"regions: 'bad' has labels \[0, 1\]; expected one or "
                                         r"more non-zero labels"):
        region_table([item], {"bad": (0, 1)})
    with pytest.raises(ValueError, match=r"zones: \['heart'\] are not among the regions"):
        region_table([item], REGIONS, zones=("heart",))
    with pytest.raises(ValueError, match=r"item \(subject 's1', value 'yes', seed 0\): appears "
                                         r"twice"):
        region_table([item, item], REGIONS)
    with pytest.raises(ValueError, match=r"region 'heart' is empty \(no voxel has labels \[7\]\)"):
        region_table([item], {"heart": (7,)})
    with pytest.raises(ValueError, match=r"ct shape \(16, 12, 10\) and labels shape \(16, 12, 9\) "
                                         r"must be the same 3-D grid"):
        region_table([RegionItem("s1", "yes", 0, ct, labels[..., :9], affine)], REGIONS)
    with pytest.raises(ValueError, match=r"seed 0\): affine: expected a finite 4x4 matrix"):
        region_table([RegionItem("s1", "yes", 0, ct, labels, np.eye(3))], REGIONS)
    bad = ct.copy()
    bad[labels == 3] = np.inf
    with pytest.raises(ValueError, match="region 'airway': the region holds non-finite HU"):
        region_table([RegionItem("s1", "yes", 0, bad, labels, affine)], REGIONS)
    gappy = np.zeros_like(labels)
    gappy[4:8, 4:8, [0, 8]] = 1  # 9-slice extent with nothing in its middle third
    with pytest.raises(ValueError, match="zone 'lung-middle' is empty"):
        region_table([RegionItem("s1", "yes", 0, ct, gappy, np.eye(4))], {"lung": (1,)},
                     zones=("lung",))
