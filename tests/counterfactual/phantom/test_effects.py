import json

import numpy as np
import pytest

from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.phantom.effects import (
    DEFAULT_EFFECTS,
    NO_EFFECTS,
    load_effects,
    parse_effects,
)
from cfx.counterfactual.phantom.patterns import LungPatterns

SMOKING_40 = {"smoking": {"reference": "no",
                          "values": {"yes": {"shift_hu": 40, "pattern": "lung"}}}}


@pytest.fixture
def patterns(labels):
    return LungPatterns(labels, (1.0, 1.0, 1.0))


def test_default_effects_are_the_specified_ones():
    raw = DEFAULT_EFFECTS.to_json()
    assert raw["smoking"] == {"reference": "no",
                              "values": {"yes": {"shift_hu": 20.0, "pattern": "lung"}}}
    assert raw["age"] == {"centre": 50.0, "slope_hu_per_unit": -0.5, "pattern": "lung"}
    assert raw["mortality"]["values"]["dead"] == {"shift_hu": 30.0, "pattern": "lower-third"}
    diagnosis = raw["diagnosis"]["values"]
    assert diagnosis["IPF"]["shift_hu"] == 150 and diagnosis["UILD"]["shift_hu"] == 75
    assert diagnosis["UILD"]["pattern"] == diagnosis["IPF"]["pattern"] == "subpleural-lower-half"
    assert diagnosis["CTD-ILD"] == {"shift_hu": 60.0, "pattern": "lower-two-thirds"}
    assert parse_effects(json.loads(json.dumps(raw)), "x").to_json() == raw


def test_effect_map_adds_per_attribute_on_lung_only(labels, patterns):
    lung = np.isin(labels, (1, 2))
    effects = parse_effects({**SMOKING_40, "age": {"centre": 50, "slope_hu_per_unit": -0.5,
                                                   "pattern": "lung"}}, "x")
    out = effects.effect_map({"smoking": "yes", "age": 70.0, "sex": "male"}, patterns)
    assert out.dtype == np.float32
    assert np.all(out[lung] == 30.0) and np.all(out[~lung] == 0)
    assert np.all(effects.effect_map({"smoking": "no", "age": 50.0}, patterns) == 0)
    assert np.all(NO_EFFECTS.effect_map({"smoking": "yes", "age": 90}, patterns) == 0)


def test_canonical_values():
    assert DEFAULT_EFFECTS.canonical("age", "68", "w") == 68.0
    assert DEFAULT_EFFECTS.canonical("age", 68, "w") == 68.0
    assert DEFAULT_EFFECTS.canonical("smoking", " YES ", "w") == "yes"
    assert DEFAULT_EFFECTS.canonical("diagnosis", "ipf", "w") == "IPF"
    assert DEFAULT_EFFECTS.canonical("diagnosis", "none", "w") == "none"
    with pytest.raises(UserInputError, match=r"^w: smoking cannot be 'maybe'; allowed: yes, no$"):
        DEFAULT_EFFECTS.canonical("smoking", "maybe", "w")
    with pytest.raises(UserInputError,
                       match=r"w: age must be a finite number \(years\), got 'old'"):
        DEFAULT_EFFECTS.canonical("age", "old", "w")
    with pytest.raises(UserInputError, match="w: age must be a finite number"):
        DEFAULT_EFFECTS.canonical("age", float("nan"), "w")
    with pytest.raises(UserInputError, match="w: unknown attribute 'bmi'; the phantom has age"):
        DEFAULT_EFFECTS.canonical("bmi", 30, "w")
    with pytest.raises(UserInputError, match="w: diagnosis cannot be 'none'"):
        NO_EFFECTS.canonical("diagnosis", "none", "w")


def test_load_keywords_and_file(tmp_path):
    assert load_effects("default") is DEFAULT_EFFECTS
    assert load_effects("none").to_json() == {}
    path = tmp_path / "e.json"
    path.write_text(json.dumps(SMOKING_40))
    assert load_effects(path).to_json() == {
        "smoking": {"reference": "no", "values": {"yes": {"shift_hu": 40.0, "pattern": "lung"}}}}


def _write(tmp_path, text):
    path = tmp_path / "effects.json"
    path.write_text(text)
    return path


def _smoking(**shift):
    return json.dumps({"smoking": {"reference": "no", "values": {"yes": shift}}})


@pytest.mark.parametrize("text, message", [
    ('{"smoking": ', r"effects.json: not valid JSON \(Expecting value at line 1, column 13\)"),
    ("[1, 2]", r"effects.json: expected a JSON object with one entry per attribute"),
    ('{"bmi": {}}', r"effects.json: unknown attribute 'bmi'; the phantom has age, sex, smoking"),
    (_smoking(shift_hu=20, pattern="apex"),
     r'effects.json: smoking.values.yes.pattern: unknown pattern "apex"; known: lung, '),
    (_smoking(shift_hu="big", pattern="lung"),
     r'effects.json: smoking.values.yes.shift_hu: expected a number \(HU\), got "big"'),
    (_smoking(shift_hu=True, pattern="lung"),
     r"effects.json: smoking.values.yes.shift_hu: expected a number \(HU\), got true"),
    (_smoking(shift_hu=20),
     r"effects.json: smoking.values.yes: missing field 'pattern'; expected shift_hu, pattern"),
    (_smoking(shift_hu=20, pattern="lung", colour="red"),
     r"effects.json: smoking.values.yes: unknown field 'colour'; allowed: shift_hu, pattern"),
    ('{"smoking": {"values": {}}}',
     r"effects.json: smoking: missing field 'reference'; expected reference, values"),
    ('{"smoking": "yes"}', r'effects.json: smoking: expected an object with reference, values, '
                           r'got "yes"'),
    ('{"smoking": {"reference": "never", "values": {}}}',
     r'effects.json: smoking.reference: "never" is not a value of smoking; use one of yes, no '
     r"or 'none'"),
    ('{"smoking": {"reference": "no", "values": {"maybe": {"shift_hu": 1, "pattern": "lung"}}}}',
     r"effects.json: smoking.values.maybe: 'maybe' is not a value of smoking; allowed: yes, no"),
    ('{"smoking": {"reference": "no", "values": {"no": {"shift_hu": 1, "pattern": "lung"}}}}',
     r"effects.json: smoking.values.no: 'no' is the reference, which has no effect"),
    ('{"smoking": {"reference": "no", "values": [1]}}',
     r"effects.json: smoking.values: expected an object mapping values of smoking"),
    ('{"age": {"centre": 50, "slope_hu_per_unit": "NaN", "pattern": "lung"}}',
     r'effects.json: age.slope_hu_per_unit: expected a number \(HU per years\), got "NaN"'),
    ('{"age": {"centre": 50, "pattern": "lung"}}',
     r"effects.json: age: missing field 'slope_hu_per_unit'; expected centre, "
     r"slope_hu_per_unit, pattern"),
])
def test_invalid_effects_file_is_one_line_naming_file_and_field(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(UserInputError, match=message) as info:
        load_effects(path)
    assert "\n" not in str(info.value) and str(info.value).startswith(str(path))


def test_missing_effects_file(tmp_path):
    with pytest.raises(UserInputError, match=r"nope.json: effects file not found; give a JSON "
                                             r"file, 'default' or 'none'"):
        load_effects(tmp_path / "nope.json")
