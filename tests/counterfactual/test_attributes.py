import json

import pytest

from cfx.counterfactual.attributes import (
    DEFAULT_ATTRIBUTES,
    CategoricalAttribute,
    NumericAttribute,
    canonicalize_record,
    edit,
    load_attributes,
    parse_values,
)
from cfx.counterfactual.errors import UserInputError

RECORD = {"age": 68, "sex": "male", "smoking": "no", "mortality": "alive", "diagnosis": "IPF",
          "site": "B"}


@pytest.mark.parametrize(("attribute", "value", "expected"), [
    ("smoking", "yes", "yes"), ("smoking", "Current", "yes"), ("smoking", "former", "yes"),
    ("smoking", "Ex-Smoker", "yes"), ("smoking", 1, "yes"), ("smoking", True, "yes"),
    ("smoking", "never", "no"), ("smoking", "non smoker", "no"), ("smoking", "NON_SMOKER", "no"),
    ("smoking", 0, "no"), ("smoking", False, "no"),
    ("sex", "M", "male"), ("sex", " f ", "female"), ("sex", "Female", "female"),
    ("mortality", 1, "dead"), ("mortality", "deceased", "dead"), ("mortality", "0", "alive"),
    ("diagnosis", "ipf", "IPF"), ("diagnosis", "ctd ild", "CTD-ILD"),
    ("diagnosis", "Unclassifiable ILD", "UILD"), ("ctd_type", "RA", "rheumatoid arthritis"),
    ("ctd_type", "sjögren", "Sjogren syndrome"),
    ("age", "68", 68), ("age", 68.0, 68), ("age", "70.5", 70.5), ("age", 0, 0), ("age", 120, 120),
    ("pack_years", "42.5", 42.5),
])
def test_synonyms_canonicalise(attribute, value, expected):
    edited = edit(RECORD, attribute, value)
    assert edited[attribute] == expected and type(edited[attribute]) is type(expected)


def test_edit_changes_exactly_one_field_and_copies():
    edited = edit(RECORD, "smoking", "current")
    assert edited is not RECORD and RECORD["smoking"] == "no"
    assert {k for k in RECORD if RECORD[k] != edited[k]} == {"smoking"}
    assert edited.keys() == RECORD.keys()
    added = edit({"age": 50}, "smoking", "yes")
    assert added == {"age": 50, "smoking": "yes"}


def test_unknown_attribute_lists_the_known_ones():
    with pytest.raises(UserInputError, match=r"attribute 'smoker' is not known; known "
                                             r"attributes: age, sex, smoking, pack_years, "
                                             r"mortality, diagnosis, ctd_type"):
        edit(RECORD, "smoker", "yes")


def test_invalid_values_list_the_valid_ones():
    with pytest.raises(UserInputError, match=r"^smoking: 'maybe' is not an allowed value; "
                                             r"allowed: yes, no \(or a synonym: current, "):
        edit(RECORD, "smoking", "maybe")
    with pytest.raises(UserInputError, match=r"^diagnosis: 'COPD' is not an allowed value; "
                                             r"allowed: CTD-ILD, IPF, UILD"):
        edit(RECORD, "diagnosis", "COPD")
    with pytest.raises(UserInputError, match=r"^age: 121 is out of range; allowed: a number "
                                             r"from 0 to 120 years$"):
        edit(RECORD, "age", 121)
    with pytest.raises(UserInputError, match=r"^pack_years: -1 is out of range; allowed: a "
                                             r"number from 0 to 300 pack-years$"):
        edit(RECORD, "pack_years", -1)
    for bad in ("old", "nan", True, None):
        with pytest.raises(UserInputError, match=r"^age: .* is not a number; allowed: a number "
                                                 r"from 0 to 120 years$"):
            edit(RECORD, "age", bad)


def test_parse_values():
    assert parse_values("smoking", "yes,no") == ("yes", "no")
    assert parse_values("smoking", " Current , never ") == ("yes", "no")
    assert parse_values("age", "24,68,86") == (24, 68, 86)
    assert parse_values("sex", "F") == ("female",)


def test_parse_values_errors():
    with pytest.raises(UserInputError, match=r"^--values: 'yes,,no' has an empty item; give "
                                             r"comma-separated values of smoking \(yes, no\)$"):
        parse_values("smoking", "yes,,no")
    with pytest.raises(UserInputError, match=r"^--values: age: 'x' is not a number"):
        parse_values("age", "24,x")
    with pytest.raises(UserInputError, match=r"^--values: 'yes,current' gives smoking = yes "
                                             r"more than once"):
        parse_values("smoking", "yes,current")
    with pytest.raises(UserInputError, match=r"attribute 'colour' is not known"):
        parse_values("colour", "red")


def test_canonicalize_record_drops_missing_and_keeps_unknown_columns():
    record = {"age": "70.0", "sex": "F", "smoking": None, "mortality": float("nan"),
              "diagnosis": "ipf", "site": "B"}
    assert canonicalize_record(record) == {"age": 70, "sex": "female", "diagnosis": "IPF",
                                           "site": "B"}
    with pytest.raises(UserInputError, match=r"^clinical\.csv, subject A: sex: 'X' is not an "
                                             r"allowed value; allowed: male, female"):
        canonicalize_record({"sex": "X"}, where="clinical.csv, subject A")


def test_vocabulary_definitions_are_checked():
    with pytest.raises(UserInputError, match=r"synonym 'y' maps to 'maybe', which is not one "
                                             r"of its values \(yes, no\)"):
        CategoricalAttribute("x", ("yes", "no"), {"y": "maybe"})
    with pytest.raises(UserInputError, match=r"synonym 'No' would mean both 'no' and 'yes'"):
        CategoricalAttribute("x", ("yes", "no"), {"No": "yes"})
    with pytest.raises(UserInputError, match=r"attribute 'x': value 'Yes' is listed twice"):
        CategoricalAttribute("x", ("yes", "Yes"))
    with pytest.raises(UserInputError, match=r"minimum 5\.0 is above maximum 1\.0"):
        NumericAttribute("x", "mm", 5.0, 1.0)


def test_load_attributes_extends_the_default(tmp_path):
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps({"attributes": {
        "smoking_status": {"type": "categorical", "values": ["current", "former", "never"],
                           "synonyms": {"ex-smoker": "former"}},
        "fvc": {"type": "numeric", "unit": "% predicted", "min": 0, "max": 200},
        "age": {"type": "numeric", "unit": "years", "min": 18, "max": 100}}}))
    vocabulary = load_attributes(path)
    assert vocabulary.names[:7] == DEFAULT_ATTRIBUTES.names
    assert edit({}, "smoking_status", "Ex Smoker", vocabulary) == {"smoking_status": "former"}
    assert edit({}, "fvc", "85", vocabulary) == {"fvc": 85}
    with pytest.raises(UserInputError, match=r"age: 10 is out of range; allowed: a number from "
                                             r"18 to 100 years"):
        edit({}, "age", 10, vocabulary)
    assert edit({}, "sex", "m", vocabulary) == {"sex": "male"}


@pytest.mark.parametrize(("content", "message"), [
    ("{", r"vocab\.json: not valid JSON"),
    ('{"labels": {}}', r"vocab\.json: not an attribute vocabulary; expected \{\"attributes\""),
    ('{"attributes": {"x": {"type": "text"}}}',
     r"vocab\.json: attribute 'x': type 'text' is not 'categorical' or 'numeric'"),
    ('{"attributes": {"x": {"type": "numeric", "unit": "mm", "min": 0}}}',
     r"vocab\.json: attribute 'x': missing key 'max'"),
    ('{"attributes": {"x": {"type": "numeric", "unit": "mm", "min": "a", "max": 1}}}',
     r"vocab\.json: attribute 'x': bad entry"),
    ('{"attributes": {"x": {"type": "categorical", "values": []}}}',
     r"vocab\.json: attribute 'x': a categorical attribute needs values"),
])
def test_bad_vocabulary_files(tmp_path, content, message):
    path = tmp_path / "vocab.json"
    path.write_text(content)
    with pytest.raises(UserInputError, match=message):
        load_attributes(path)


def test_missing_vocabulary_file(tmp_path):
    with pytest.raises(UserInputError, match=r"none\.json: attribute vocabulary file not found"):
        load_attributes(tmp_path / "none.json")
