"""Consistency: a sweep refuses what cfx prompts and cfx validate refuse (record values outside
the attribute vocabulary, masks without lungs), and the phantom refuses effects that would take
HU out of the int16 range its CTs are stored in."""

import json

import numpy as np
import pytest

from cfx.counterfactual.volume import read_labels, write_volume


def _sweep(cohort, work, *extra):
    return ["sweep", "-a", "smoking", "--values", "no,yes", "--cohort", cohort, "--model",
            "phantom-oracle", "--out", work / "out", "-q", *extra]


def _set_record(phantom, column, value):
    lines = (phantom / "clinical.csv").read_text().splitlines()
    header = lines[0].split(",")
    row = lines[1].split(",")
    row[header.index(column)] = value
    lines[1] = ",".join(row)
    (phantom / "clinical.csv").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(("column", "value", "fragment"), [
    ("diagnosis", "banana", "diagnosis: 'banana' is not an allowed value"),
    ("sex", "alien", "sex: 'alien' is not an allowed value"),
    ("mortality", "zombie", "mortality: 'zombie' is not an allowed value"),
    ("age", "old", "age: 'old' is not a number"),
    ("age", "500", "age: 500 is out of range"),
    ("smoking", "maybe", "smoking: 'maybe' is not an allowed value"),
])
def test_sweep_refuses_record_values_outside_the_vocabulary(phantom, work, refused, column,
                                                            value, fragment):
    _set_record(phantom, column, value)
    refused(_sweep(phantom, work), "clinical.csv, subject P000", fragment)
    refused(["prompts", "--cohort", phantom], fragment)  # the same refusal as cfx prompts


@pytest.mark.parametrize("keep", [(), (3,)])
def test_sweep_refuses_a_mask_without_lung_voxels(phantom, work, refused, keep):
    mask = read_labels(phantom / "masks" / "P001.nii.gz")
    write_volume(phantom / "masks" / "P001.nii.gz",
                 np.where(np.isin(mask.data, keep), mask.data, 0), mask.affine)
    refused(_sweep(phantom, work), "P001.nii.gz: region 'lung' is absent")
    refused(["validate", phantom, "-q"], "P001.nii.gz: region 'lung' is absent")


@pytest.mark.parametrize(("effects", "fragment"), [
    ({"smoking": {"reference": "no", "values": {"yes": {"shift_hu": 1e6, "pattern": "lung"}}}},
     "smoking.values.yes.shift_hu lets the effects add up to 1e+06 HU"),
    ({"age": {"centre": 50, "slope_hu_per_unit": -1000, "pattern": "lung"}},
     "age.slope_hu_per_unit (at 120 years) lets the effects add up to 7e+04 HU"),
    ({"smoking": {"reference": "no", "values": {"yes": {"shift_hu": 20000, "pattern": "lung"}}},
      "mortality": {"reference": "alive",
                    "values": {"dead": {"shift_hu": -20000, "pattern": "lung"}}}},
     "lets the effects add up to 4e+04 HU"),
    ({"age": {"centre": 1e300, "slope_hu_per_unit": 1e300, "pattern": "lung"}},
     "lets the effects add up to inf HU"),
])
def test_phantom_refuses_effects_that_would_overflow_int16_hu(work, refused, effects, fragment):
    (work / "effects.json").write_text(json.dumps(effects))
    refused(["phantom", "--out", work / "cohort", "--subjects", "1", "--shape", "16,16,16",
             "--effects", work / "effects.json", "-q"], "effects.json: ", fragment,
            "more than the 30000 HU")


def test_an_oracle_sweep_refuses_a_truth_file_edited_to_overflow(phantom, work, refused):
    truth = json.loads((phantom / "truth.json").read_text())
    truth["effects"]["smoking"]["values"]["yes"]["shift_hu"] = 40000
    (phantom / "truth.json").write_text(json.dumps(truth))
    refused(_sweep(phantom, work), "truth.json: effects: smoking.values.yes.shift_hu lets the "
                                   "effects add up to 4.0")
