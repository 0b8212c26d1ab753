"""Vocabularies owned by checkpoint and run: cfx train records attributes, labels and template;
cfx sweep defaults to the checkpoint's, refuses a user's that disagrees and records them in the
manifest; a checkpoint made before keeps the built-in defaults."""

import json
import re
import shutil

import pytest
from typer.testing import CliRunner

from cfx.counterfactual.attributes import (
    DEFAULT_ATTRIBUTES,
    AttributeVocabulary,
    NumericAttribute,
    attributes_from_json,
)
from cfx.counterfactual.cli import app
from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.labels import DEFAULT_VOCABULARY, LabelVocabulary
from cfx.counterfactual.prompts import DEFAULT_TEMPLATE, PromptTemplate
from cfx.counterfactual.sweep.catalog import bundled_models
from cfx.counterfactual.vocabularies import (
    Vocabularies,
    model_vocabularies,
    resolve_vocabularies,
)
from tests.models.conftest import save_tiny_bert

runner = CliRunner()
MINE = PromptTemplate("Lung CT scan:{% if smoking is defined %} Smoker: {{ smoking }}."
                      "{% endif %}{% if age is defined %} Age {{ age }}.{% endif %}", "mine.j2")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A 2-step GAN trained on 16^3 phantom subjects with a tiny text encoder."""
    root = tmp_path_factory.mktemp("vocab")
    bert = save_tiny_bert(root / "bert")
    out = root / "ckpt"
    result = runner.invoke(app, [
        "train", "--cohort", "phantom:4", "--out", str(out), "--steps", "2", "--patch", "16",
        "--phantom-shape", "16", "--channels", "4,8", "--batch-size", "2", "--text-encoder",
        str(bert), "--device", "cpu", "--save-every", "2", "-q"])
    assert result.exit_code == 0, result.output
    return out


def _copy(checkpoint, tmp_path, **changes):
    folder = tmp_path / "copy"
    shutil.copytree(checkpoint, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_the_attribute_vocabulary_round_trips_through_json():
    assert attributes_from_json(DEFAULT_ATTRIBUTES.to_json(), "x") == DEFAULT_ATTRIBUTES
    assert DEFAULT_ATTRIBUTES.to_json()["attributes"]["age"] == {
        "type": "numeric", "unit": "years", "min": 0, "max": 120}
    smoking = DEFAULT_ATTRIBUTES.to_json()["attributes"]["smoking"]
    assert smoking["values"] == ["yes", "no"] and smoking["synonyms"]["ex-smoker"] == "yes"


def test_training_records_attributes_labels_and_template(checkpoint):
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["attributes"] == DEFAULT_ATTRIBUTES.to_json()
    assert config["labels"] == DEFAULT_VOCABULARY.to_json()
    assert config["prompt_template"] == {"name": "default", "sha256": DEFAULT_TEMPLATE.sha256,
                                         "text": DEFAULT_TEMPLATE.text}


def test_a_checkpoint_without_the_block_keeps_the_defaults(checkpoint, tmp_path):
    for name in bundled_models():
        assert model_vocabularies(name) == Vocabularies(), name  # they read the defaults
    # a checkpoint written before checkpoints recorded their vocabularies: its template by
    # name and hash only
    old = _copy(checkpoint, tmp_path)
    config = json.loads((old / "config.json").read_text())
    del config["attributes"], config["labels"], config["prompt_template"]["text"]
    (old / "config.json").write_text(json.dumps(config))
    assert model_vocabularies(str(old)) == Vocabularies()
    # what the user gives is checked against what the old checkpoint does record
    with pytest.raises(UserInputError, match=r"--template: mine.j2 is not the prompt template "
                                             rf"of model {config['name']} \(default, sha256 "):
        model_vocabularies(str(old), template=MINE)
    fvc = NumericAttribute("fvc", "% predicted", 0, 200)
    added = model_vocabularies(str(old), AttributeVocabulary({"fvc": fvc}))
    assert added.attributes.attribute("fvc") == fvc


def test_the_phantom_oracle_takes_the_users_vocabularies_unchecked():
    labels = LabelVocabulary({1: "lung"})
    chosen = model_vocabularies("phantom-oracle", labels=labels, template=MINE)
    assert chosen.labels is labels and chosen.template is MINE


def test_the_checkpoints_own_vocabularies_are_the_sweeps_default(checkpoint, tmp_path):
    smoking = {"type": "categorical", "values": ["current", "never"],
               "synonyms": {"ex-smoker": "current"}}
    folder = _copy(checkpoint, tmp_path, attributes={"attributes": {"smoking": smoking}},
                   prompt_template=MINE.to_json())
    chosen = model_vocabularies(str(folder))
    assert chosen.template == MINE
    assert chosen.attributes.attribute("smoking").canonical("Ex-Smoker") == "current"
    assert chosen.attributes.names == ("smoking",)  # the checkpoint's, not the built-in ones
    assert chosen.labels == DEFAULT_VOCABULARY


@pytest.mark.parametrize(("option", "text", "message"), [
    ("--labels", {"labels": {"1": "lung"}},
     "--labels: its labels differ from those of model ckpt (1 left-lung, 2 right-lung, "
     "3 airway); give a file with these labels, or leave --labels out to use them"),
    ("--attributes", {"attributes": {"age": {"type": "numeric", "unit": "months", "min": 0,
                                             "max": 1500}}},
     "--attributes: attribute 'age' is defined otherwise than in model ckpt (a number from 0 "
     "to 120 years); leave it out of the file to use that definition"),
    ("--template", None, "is not the prompt template of model ckpt (default, sha256 35a90f23f64c)"
                         "; leave --template out to use that one"),
])
def test_a_sweep_refuses_a_vocabulary_other_than_the_checkpoints(checkpoint, tmp_path, option,
                                                                  text, message):
    given = tmp_path / "given"
    given.write_text(MINE.text if text is None else json.dumps(text))
    out = tmp_path / "run"
    result = runner.invoke(app, ["sweep", "-a", "smoking", "--values", "yes,no", "--model",
                                 str(checkpoint), "--out", str(out), option, str(given), "-q"])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()  # refused before anything is written


def test_the_sweep_records_the_checkpoints_vocabularies(checkpoint, tmp_path):
    folder = _copy(checkpoint, tmp_path, prompt_template=MINE.to_json())
    out = tmp_path / "run"
    phantom = tmp_path / "cohort"
    assert runner.invoke(app, ["phantom", "--out", str(phantom), "--subjects", "1", "--shape",
                               "16,16,16", "-q"]).exit_code == 0
    result = runner.invoke(app, ["sweep", "-a", "smoking", "--values", "yes,no", "--model",
                                 str(folder), "--cohort", str(phantom), "--out", str(out),
                                 "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["prompt_template"] == MINE.to_json()
    assert manifest["labels"] == DEFAULT_VOCABULARY.to_json()
    assert manifest["attributes"] == DEFAULT_ATTRIBUTES.to_json()
    # the items' prompts are written with the checkpoint's template, not the built-in one
    for item in manifest["items"]:
        assert re.fullmatch(rf"Lung CT scan: Smoker: {item['value']}\. Age \d+\.",
                            item["prompt"]), item["prompt"]


def test_a_malformed_recorded_block_is_one_line():
    with pytest.raises(UserInputError, match=r"cfg.json: labels is not a label vocabulary"):
        resolve_vocabularies({"labels": {"regions": {}}}, "model m", "cfg.json")
    edited = {**MINE.to_json(), "text": MINE.text + " "}
    with pytest.raises(UserInputError, match=r"prompt_template.text does not have the recorded "
                                             r"sha256; it was edited"):
        resolve_vocabularies({"prompt_template": edited}, "model m", "cfg.json")
    with pytest.raises(UserInputError, match=r"records prompt template gone.j2 by its sha256 "
                                             r"only and that file is gone or changed"):
        resolve_vocabularies({"prompt_template": {"name": "gone.j2", "sha256": "ab" * 32}},
                             "model m", "cfg.json")
