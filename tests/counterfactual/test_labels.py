import json

import numpy as np
import pytest

from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.labels import DEFAULT_VOCABULARY, LabelVocabulary, load_vocabulary


def test_default_regions(labels):
    lung = DEFAULT_VOCABULARY.region_mask(labels, "lung")
    np.testing.assert_array_equal(lung, (labels == 1) | (labels == 2))
    assert DEFAULT_VOCABULARY.region_labels("left-lung") == (1,)
    assert DEFAULT_VOCABULARY.region_labels("airway") == (3,)


def test_unknown_region_lists_known_ones():
    with pytest.raises(UserInputError, match=r"region 'heart' is not defined; known regions: "
                                             r"lung, left-lung, right-lung, airway"):
        DEFAULT_VOCABULARY.region_labels("heart")


def test_user_file_overrides_vocabulary(tmp_path):
    path = tmp_path / "labels.json"
    path.write_text(json.dumps({"labels": {"1": "left-lung", "2": "right-lung", "5": "nodule"},
                                "regions": {"lung": [1, 2], "lesions": [5]}}))
    vocab = load_vocabulary(path)
    assert vocab.region_labels("lesions") == (5,)
    assert vocab.region_labels("nodule") == (5,)
    assert json.loads(json.dumps(vocab.to_json())) == json.loads(path.read_text())


def test_bad_vocabulary_files(tmp_path):
    with pytest.raises(UserInputError, match=r"missing\.json: label vocabulary file not found"):
        load_vocabulary(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"labels": {"one": "lung"}}')
    with pytest.raises(UserInputError, match=r"bad\.json: not a label vocabulary"):
        load_vocabulary(bad)
    bad.write_text('{"labels": {"1": "lung"}, "regions": {"both": [1, 9]}}')
    with pytest.raises(UserInputError, match=r"region 'both' uses labels \[9\]"):
        load_vocabulary(bad)


def test_background_cannot_be_named():
    with pytest.raises(UserInputError, match="label 0 is background"):
        LabelVocabulary({0: "air"})
