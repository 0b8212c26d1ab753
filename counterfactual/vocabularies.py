"""The vocabularies a model was trained with and a run was made with, recorded and checked.

Three things decide what a record means to a generator: the attribute definitions (the values a
categorical column may take and their synonyms, a numeric column's unit and range), the label
vocabulary of the masks, and the prompt template. ``cfx train`` records them in the checkpoint's
``config.json`` and ``cfx sweep`` in the run's ``manifest.json``, under the same three keys::

    "attributes":      {"attributes": {"smoking": {"type": "categorical", ...}, ...}}
    "labels":          {"labels": {"1": "left-lung", ...}, "regions": {"lung": [1, 2], ...}}
    "prompt_template": {"name": "default", "sha256": "35a9...", "text": "Lung CT scan: ..."}

:func:`resolve_vocabularies` reads them back: what a record holds is the default, and a
vocabulary the user gives (``--attributes``, ``--labels``, ``--template``) must agree with it:

- attributes: an attribute of the user's file that the record defines must be defined the same
  way; attributes the record lacks are added;
- labels: the label numbers and names must be the record's; the user's regions are then used
  (e.g. a finer split of the lungs for ``cfx stats``);
- template: its text must be the record's (same sha256).

A record without a key (a checkpoint or run made before cfx recorded it) keeps today's
behaviour for that key: the built-in vocabulary, or the user's unchecked. An older checkpoint
records its template only by name and sha256; the built-in template is used when the sha256 is
the built-in one's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cfx.counterfactual.attributes import (
    DEFAULT_ATTRIBUTES,
    AttributeVocabulary,
    attributes_from_json,
)
from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.labels import DEFAULT_VOCABULARY, LabelVocabulary
from cfx.counterfactual.prompts import DEFAULT_TEMPLATE, PromptTemplate, load_template
from cfx.counterfactual.sweep.catalog import find_checkpoint
from cfx.models.checkpoint_files import CheckpointError, read_config

__all__ = ["Vocabularies", "DEFAULT_VOCABULARIES", "resolve_vocabularies", "resolve_template",
           "model_vocabularies"]


@dataclass(frozen=True)
class Vocabularies:
    """The attributes, labels and prompt template of one checkpoint or run.

    Attributes
    ----------
    attributes : AttributeVocabulary
        Every attribute a record may hold, by column name.
    labels : LabelVocabulary
        The masks' labels and named regions.
    template : PromptTemplate
        The template that writes a record as a prompt.
    """

    attributes: AttributeVocabulary = DEFAULT_ATTRIBUTES
    labels: LabelVocabulary = DEFAULT_VOCABULARY
    template: PromptTemplate = DEFAULT_TEMPLATE

    def to_json(self) -> dict:
        """The three keys a ``config.json`` or ``manifest.json`` records (see the module)."""
        return {"attributes": self.attributes.to_json(), "labels": self.labels.to_json(),
                "prompt_template": self.template.to_json()}


DEFAULT_VOCABULARIES = Vocabularies()


def _labels_from_json(raw, where: str) -> LabelVocabulary:
    try:
        labels = {int(k): str(v) for k, v in raw["labels"].items()}
        regions = {str(k): tuple(int(x) for x in v) for k, v in raw.get("regions", {}).items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UserInputError(f"{where}: labels is not a label vocabulary ({exc}); it was not "
                             "written by cfx, or was edited") from None
    try:
        return LabelVocabulary(labels, regions)
    except UserInputError as exc:
        raise UserInputError(f"{where}: labels: {exc}") from None


def _attributes(record: Mapping, given: AttributeVocabulary | None, owner: str,
                where: str) -> AttributeVocabulary:
    if "attributes" not in record:
        return DEFAULT_ATTRIBUTES if given is None else DEFAULT_ATTRIBUTES.merged(given)
    recorded = attributes_from_json(record["attributes"], f"{where}: attributes")
    if given is None:
        return recorded
    for name, kind in given.attributes.items():
        if name in recorded.attributes and recorded.attributes[name] != kind:
            raise UserInputError(
                f"--attributes: attribute {name!r} is defined otherwise than in {owner} "
                f"({recorded.attributes[name].allowed}); leave it out of the file to use "
                "that definition")
    return recorded.merged(given)


def _labels(record: Mapping, given: LabelVocabulary | None, owner: str,
            where: str) -> LabelVocabulary:
    if "labels" not in record:
        return DEFAULT_VOCABULARY if given is None else given
    recorded = _labels_from_json(record["labels"], where)
    if given is None:
        return recorded
    if dict(given.labels) != dict(recorded.labels):
        have = ", ".join(f"{k} {v}" for k, v in sorted(recorded.labels.items()))
        raise UserInputError(f"--labels: its labels differ from those of {owner} ({have}); give "
                             "a file with these labels, or leave --labels out to use them")
    return given


def resolve_template(record: Mapping | None, owner: str, where: str,
                     given: PromptTemplate | None = None) -> PromptTemplate:
    """The prompt template of a checkpoint or run (parameters as :func:`resolve_vocabularies`).

    A record that names its template without its text (made by an older cfx) gives the
    built-in template when the sha256 is the built-in one's, else the file it names when that
    file still has the recorded text.

    Raises
    ------
    UserInputError
        ``given`` is not the recorded text, or the recorded text cannot be found.
    """
    block = (record or {}).get("prompt_template")
    if block is None:
        return DEFAULT_TEMPLATE if given is None else given
    if not isinstance(block, Mapping) or not isinstance(block.get("sha256"), str):
        raise UserInputError(f"{where}: prompt_template.sha256 is missing; it was not written "
                             "by cfx, or was edited")
    name, sha = str(block.get("name", "?")), block["sha256"]
    if given is not None:
        if given.sha256 != sha:
            raise UserInputError(f"--template: {given.name} is not the prompt template of "
                                 f"{owner} ({name}, sha256 {sha[:12]}); leave --template out "
                                 "to use that one")
        return given
    if isinstance(block.get("text"), str):
        template = PromptTemplate(block["text"], name)
        if template.sha256 != sha:
            raise UserInputError(f"{where}: prompt_template.text does not have the recorded "
                                 "sha256; it was edited")
        return template
    if sha == DEFAULT_TEMPLATE.sha256:
        return DEFAULT_TEMPLATE
    if Path(name).is_file() and load_template(name).sha256 == sha:
        return load_template(name)
    raise UserInputError(f"{where}: records prompt template {name} by its sha256 only and that "
                         "file is gone or changed; give the template with --template")


def resolve_vocabularies(record: Mapping | None, owner: str, where: str,
                         attributes: AttributeVocabulary | None = None,
                         labels: LabelVocabulary | None = None,
                         template: PromptTemplate | None = None) -> Vocabularies:
    """The vocabularies of a checkpoint or run, with those the user gave checked against them.

    Parameters
    ----------
    record : mapping or None
        The decoded ``config.json`` or ``manifest.json``; None when the model records nothing
        (the phantom oracle): the user's vocabularies are then used unchecked, the built-in
        ones otherwise.
    owner : str
        What the record belongs to, for messages (e.g. ``"model phantom-gan-64"``).
    where : str
        The file the record was read from, for messages about the record itself.
    attributes : AttributeVocabulary, optional
        The attributes of the user's ``--attributes`` file alone (not merged with the built-in
        ones).
    labels : LabelVocabulary, optional
        The user's ``--labels``.
    template : PromptTemplate, optional
        The user's ``--template``.

    Returns
    -------
    Vocabularies

    Raises
    ------
    UserInputError
        A vocabulary the user gave disagrees with the record (one line naming the option, the
        record's owner and what to do), or the record's block is malformed.
    """
    record = {} if record is None else record
    return Vocabularies(_attributes(record, attributes, owner, where),
                        _labels(record, labels, owner, where),
                        resolve_template(record, owner, where, template))


def model_vocabularies(model: str, attributes: AttributeVocabulary | None = None,
                       labels: LabelVocabulary | None = None,
                       template: PromptTemplate | None = None) -> Vocabularies:
    """The vocabularies ``cfx sweep --model MODEL`` uses: the checkpoint's (its ``config.json``
    read without torch), with the user's checked against them; for the phantom oracle or a name
    that is no checkpoint, the user's or the built-in ones (an unknown name is refused later,
    where the generator is resolved).

    Raises
    ------
    UserInputError
        A damaged checkpoint, or a user vocabulary that disagrees with the checkpoint's.
    """
    folder = None if model == "phantom-oracle" else find_checkpoint(model)
    if folder is None:
        return resolve_vocabularies(None, f"model {model}", model, attributes, labels, template)
    try:
        config = read_config(folder)
    except CheckpointError as exc:
        raise UserInputError(f"--model: {exc}") from None
    return resolve_vocabularies(config, f"model {config.get('name', Path(folder).name)}",
                                str(Path(folder) / "config.json"), attributes, labels, template)
