"""``cfx train`` reads a numeric field (age) out of its phrase's embedding as one value, and
says so in ``config.json`` and the model card."""

import json

import numpy as np
import pytest

from cfx.counterfactual.training import _fit_phrases
from cfx.counterfactual.training_data import PhantomSource
from tests.counterfactual.test_train_body import _train
from tests.models.conftest import save_tiny_bert


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    bert = str(save_tiny_bert(tmp_path_factory.mktemp("bert")))
    out = tmp_path_factory.mktemp("readout") / "ckpt"
    result = _train(out, bert)
    assert result.exit_code == 0, result.output
    return out


def test_age_is_read_out_as_one_axis_and_the_other_fields_are_whitened(model):
    config = json.loads((model / "config.json").read_text())
    fields = config["text_normalisation"]["fields"]
    assert fields["age"]["dims"] == 1 and set(fields["age"]["readout"]) == {"values", "r2",
                                                                             "loo_rmse"}
    assert all("readout" not in f for name, f in fields.items() if name != "age")
    assert dict(zip(config["generator"]["fields"], config["generator"]["field_dims"],
                    strict=True))["age"] == 1
    low, high = fields["age"]["readout"]["values"]
    card = (model / "README.md").read_text()
    assert f"age read out ({fields['age']['phrases']} phrases of {low:g}-{high:g}" in card
    assert "years)" in card


def test_each_numeric_phrase_carries_the_value_its_record_wrote():
    source = PhantomSource((16, 16, 16), (20.0, 20.0, 20.0), (16, 16, 16), subjects=12, seed=3)
    phrases, values = _fit_phrases(source, 0)
    assert set(values) == {"age"}
    for phrase, value in zip(phrases["age"], values["age"], strict=True):
        assert phrase.endswith(f"Patient age: {value:g}.")
    assert len(set(values["age"])) == len(phrases["age"]) > 2
    assert np.all(np.isfinite(values["age"]))
