"""Clinical attributes: the values each one may take, their synonyms, and one-attribute edits.

An attribute is a column of ``clinical.csv``. It is either *categorical* (a few canonical values,
each with synonyms) or *numeric* (a unit and an allowed range). Canonical values are what prompts
show, so every spelling a table may use (``M``, ``Male``, ``male``) reaches the text encoder as
one word.

Matching is case-insensitive, ignores surrounding spaces and treats runs of spaces, ``_`` and
``-`` alike: ``non smoker``, ``Non-Smoker`` and ``non_smoker`` are one synonym.

Default vocabulary (the phantom's columns and the AIIB23-style columns DGM-VLC used)

============  ===========  ===================================================================
column        type         canonical values (synonyms) or range
============  ===========  ===================================================================
age           numeric      0-120 years
sex           categorical  male (m, man), female (f, woman)
smoking       categorical  yes (current, former, ever, smoker, ex-smoker, true, 1, y),
                           no (never, non-smoker, never-smoker, false, 0, n)
pack_years    numeric      0-300 pack-years
mortality     categorical  alive (survived, living, 0, false), dead (deceased, died, 1, true)
diagnosis     categorical  CTD-ILD, IPF (idiopathic pulmonary fibrosis),
                           UILD (unclassifiable ILD, unclassified ILD)
ctd_type      categorical  rheumatoid arthritis (RA), systemic sclerosis (SSc, scleroderma),
                           myositis (PM, DM, polymyositis, dermatomyositis, antisynthetase),
                           Sjogren syndrome (SjS, Sjogren, Sjögren), lupus (SLE),
                           mixed CTD (MCTD), undifferentiated CTD (UCTD)
============  ===========  ===================================================================

``smoking`` is a smoking *history* (ever smoked): ``current`` and ``former`` both mean ``yes``.
A cohort that needs current/former/never apart adds its own attribute from a JSON file
(:func:`load_attributes`). ``mortality`` is the one-year status; ``1`` means the event (death).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cfx.counterfactual.errors import UserInputError

__all__ = [
    "CategoricalAttribute",
    "NumericAttribute",
    "Attribute",
    "AttributeVocabulary",
    "DEFAULT_ATTRIBUTES",
    "load_attributes",
    "attributes_from_json",
    "edit",
    "parse_values",
    "canonicalize_record",
]

_SEPARATORS = re.compile(r"[\s_-]+")


def _key(text: str) -> str:
    """The form under which a categorical value or synonym is looked up."""
    return _SEPARATORS.sub("-", text.strip().lower()).strip("-")


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


@dataclass(frozen=True)
class CategoricalAttribute:
    """An attribute with a few allowed values.

    Parameters
    ----------
    name : str
        The ``clinical.csv`` column.
    values : tuple of str
        Canonical values, as prompts show them.
    synonyms : mapping of str to str
        Other spelling -> canonical value.
    """

    name: str
    values: tuple[str, ...]
    synonyms: Mapping[str, str] = field(default_factory=dict)
    _lookup: Mapping[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if not self.values:
            raise UserInputError(f"attribute {self.name!r}: a categorical attribute needs values")
        lookup: dict[str, str] = {}
        for value in self.values:
            if _key(value) in lookup:
                raise UserInputError(f"attribute {self.name!r}: value {value!r} is listed twice")
            lookup[_key(value)] = value
        for synonym, value in self.synonyms.items():
            if value not in self.values:
                raise UserInputError(
                    f"attribute {self.name!r}: synonym {synonym!r} maps to {value!r}, which is "
                    f"not one of its values ({', '.join(self.values)})")
            if lookup.setdefault(_key(synonym), value) != value:
                raise UserInputError(
                    f"attribute {self.name!r}: synonym {synonym!r} would mean both "
                    f"{lookup[_key(synonym)]!r} and {value!r}")
        object.__setattr__(self, "_lookup", lookup)

    @property
    def allowed(self) -> str:
        """The allowed values, for messages."""
        return ", ".join(self.values)

    def canonical(self, value) -> str:
        """The canonical form of ``value``.

        Raises
        ------
        UserInputError
            ``value`` is neither a value nor a synonym; the message lists the allowed ones.
        """
        text = str(value).lower() if isinstance(value, bool) else str(value)
        found = self._lookup.get(_key(text))
        if found is None:
            also = f" (or a synonym: {', '.join(self.synonyms)})" if self.synonyms else ""
            raise UserInputError(f"{self.name}: {value!r} is not an allowed value; allowed: "
                                 f"{self.allowed}{also}")
        return found


@dataclass(frozen=True)
class NumericAttribute:
    """A number with a unit and an inclusive allowed range.

    Parameters
    ----------
    name : str
        The ``clinical.csv`` column.
    unit : str
        Unit of the values, e.g. ``"years"``.
    minimum, maximum : float
        Inclusive bounds, in ``unit``.
    """

    name: str
    unit: str
    minimum: float
    maximum: float

    def __post_init__(self):
        if not self.minimum <= self.maximum:
            raise UserInputError(f"attribute {self.name!r}: minimum {self.minimum} is above "
                                 f"maximum {self.maximum}")

    @property
    def allowed(self) -> str:
        """The allowed range with its unit, for messages."""
        return f"a number from {self.minimum:g} to {self.maximum:g} {self.unit}"

    def canonical(self, value) -> int | float:
        """``value`` as a number: an ``int`` when integral, else a ``float``.

        Raises
        ------
        UserInputError
            ``value`` is not a finite number or is outside the range; the message gives the range.
        """
        try:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
            if not math.isfinite(number):
                raise ValueError
        except (TypeError, ValueError):
            raise UserInputError(f"{self.name}: {value!r} is not a number; allowed: "
                                 f"{self.allowed}") from None
        if not self.minimum <= number <= self.maximum:
            raise UserInputError(f"{self.name}: {value!r} is out of range; allowed: "
                                 f"{self.allowed}")
        return int(number) if number.is_integer() else number


Attribute = CategoricalAttribute | NumericAttribute


@dataclass(frozen=True)
class AttributeVocabulary:
    """The attributes a cohort's records may hold, by column name."""

    attributes: Mapping[str, Attribute]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.attributes)

    def attribute(self, name: str) -> Attribute:
        """The attribute of column ``name``; an unknown name raises ``UserInputError``."""
        try:
            return self.attributes[name]
        except KeyError:
            raise UserInputError(f"attribute {name!r} is not known; known attributes: "
                                 f"{', '.join(self.names)} (add others with a vocabulary "
                                 "JSON file)") from None

    def merged(self, other: AttributeVocabulary) -> AttributeVocabulary:
        """This vocabulary with ``other``'s attributes added (replacing those of the same name)."""
        return AttributeVocabulary({**self.attributes, **other.attributes})

    def to_json(self) -> dict:
        """JSON-ready form, the same a vocabulary file holds (:func:`load_attributes`):
        ``{"attributes": {name: {"type": "categorical", "values": [...], "synonyms": {...}}
        or {"type": "numeric", "unit": ..., "min": ..., "max": ...}}}``."""
        return {"attributes": {name: _attribute_to_json(kind)
                               for name, kind in self.attributes.items()}}


def _categorical(name: str, groups: Mapping[str, tuple[str, ...]]) -> CategoricalAttribute:
    """A categorical attribute from ``{canonical value: its synonyms}``."""
    synonyms = {synonym: value for value, group in groups.items() for synonym in group}
    return CategoricalAttribute(name, tuple(groups), synonyms)


DEFAULT_ATTRIBUTES = AttributeVocabulary({
    "age": NumericAttribute("age", "years", 0, 120),
    "sex": _categorical("sex", {"male": ("m", "man"), "female": ("f", "woman")}),
    "smoking": _categorical("smoking", {
        "yes": ("current", "former", "ever", "smoker", "ex-smoker", "true", "1", "y"),
        "no": ("never", "non-smoker", "never-smoker", "false", "0", "n")}),
    "pack_years": NumericAttribute("pack_years", "pack-years", 0, 300),
    "mortality": _categorical("mortality", {"alive": ("survived", "living", "0", "false"),
                                            "dead": ("deceased", "died", "1", "true")}),
    "diagnosis": _categorical("diagnosis", {
        "CTD-ILD": (),
        "IPF": ("idiopathic pulmonary fibrosis",),
        "UILD": ("unclassifiable ILD", "unclassified ILD")}),
    "ctd_type": _categorical("ctd_type", {
        "rheumatoid arthritis": ("RA",),
        "systemic sclerosis": ("SSc", "scleroderma"),
        "myositis": ("PM", "DM", "polymyositis", "dermatomyositis", "antisynthetase"),
        "Sjogren syndrome": ("SjS", "Sjogren", "Sjögren"),
        "lupus": ("SLE",),
        "mixed CTD": ("MCTD",),
        "undifferentiated CTD": ("UCTD",)}),
})


def _attribute_to_json(kind: Attribute) -> dict:
    if isinstance(kind, NumericAttribute):
        return {"type": "numeric", "unit": kind.unit, "min": kind.minimum, "max": kind.maximum}
    return {"type": "categorical", "values": list(kind.values), "synonyms": dict(kind.synonyms)}


def _attribute_from_json(name: str, spec: dict, path: str) -> Attribute:
    where = f"{path}: attribute {name!r}"
    kind = spec.get("type")
    try:
        if kind == "categorical":
            synonyms = spec.get("synonyms", {})
            return CategoricalAttribute(name, tuple(str(v) for v in spec["values"]),
                                        {str(k): str(v) for k, v in synonyms.items()})
        if kind == "numeric":
            return NumericAttribute(name, str(spec["unit"]), float(spec["min"]),
                                    float(spec["max"]))
    except UserInputError as exc:
        raise UserInputError(f"{path}: {exc}") from None
    except KeyError as exc:
        raise UserInputError(f"{where}: missing key {exc}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise UserInputError(f"{where}: bad entry ({exc})") from None
    raise UserInputError(f"{where}: type {kind!r} is not 'categorical' or 'numeric'")


def load_attributes(path: str | os.PathLike,
                    base: AttributeVocabulary = DEFAULT_ATTRIBUTES) -> AttributeVocabulary:
    """Extend ``base`` with the attributes of a JSON file.

    The file looks like::

        {"attributes": {
            "smoking_status": {"type": "categorical", "values": ["current", "former", "never"],
                               "synonyms": {"ex-smoker": "former"}},
            "fvc": {"type": "numeric", "unit": "% predicted", "min": 0, "max": 200}}}

    An attribute of the same name as one of ``base`` replaces it.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserInputError(f"{path}: attribute vocabulary file not found") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserInputError(f"{path}: not valid JSON ({exc}); expected {_EXAMPLE}") from None
    return base.merged(attributes_from_json(raw, str(path)))


_EXAMPLE = ('{"attributes": {"fvc": {"type": "numeric", "unit": "% predicted", '
            '"min": 0, "max": 200}}}')


def attributes_from_json(raw, where: str) -> AttributeVocabulary:
    """The attributes of a decoded vocabulary (the form :meth:`AttributeVocabulary.to_json`
    writes and a vocabulary file holds), without the built-in ones.

    Parameters
    ----------
    raw : object
        Decoded JSON: ``{"attributes": {name: spec, ...}}``.
    where : str
        Where it came from (a file, a checkpoint's ``config.json``), first in messages.

    Raises
    ------
    UserInputError
        Not that form, or an attribute that is not well-formed (one line naming it).
    """
    specs = raw.get("attributes") if isinstance(raw, dict) else None
    if not isinstance(specs, dict) or not all(isinstance(s, dict) for s in specs.values()):
        raise UserInputError(f"{where}: not an attribute vocabulary; expected {_EXAMPLE}")
    return AttributeVocabulary({name: _attribute_from_json(name, spec, where)
                                for name, spec in specs.items()})


def edit(record: Mapping, attribute: str, value,
         vocabulary: AttributeVocabulary = DEFAULT_ATTRIBUTES) -> dict:
    """A copy of ``record`` with only ``attribute`` set to the canonical form of ``value``.

    The attribute may be missing from ``record`` (it is then added). Other fields are copied
    unchanged.

    Raises
    ------
    UserInputError
        ``attribute`` is not in ``vocabulary``, or ``value`` is not allowed for it.
    """
    edited = dict(record)
    edited[attribute] = vocabulary.attribute(attribute).canonical(value)
    return edited


def parse_values(attribute: str, text: str,
                 vocabulary: AttributeVocabulary = DEFAULT_ATTRIBUTES,
                 where: str = "--values") -> tuple:
    """Canonical values from a comma-separated string such as ``"yes,no"`` or ``"24,68,86"``.

    ``where`` names the option or field the text came from, in error messages.

    Raises
    ------
    UserInputError
        Unknown attribute, an empty item, a value that is not allowed, or the same value twice
        (after canonicalisation, so ``"yes,current"`` is refused).
    """
    kind = vocabulary.attribute(attribute)
    items = [item.strip() for item in text.split(",")]
    if "" in items:
        raise UserInputError(f"{where}: {text!r} has an empty item; give comma-separated values "
                             f"of {attribute} ({kind.allowed})")
    try:
        values = tuple(kind.canonical(item) for item in items)
    except UserInputError as exc:
        raise UserInputError(f"{where}: {exc}") from None
    repeated = list(dict.fromkeys(str(v) for v in values if values.count(v) > 1))
    if repeated:
        raise UserInputError(f"{where}: {text!r} gives {attribute} = {', '.join(repeated)} "
                             "more than once; give each value once")
    return values


def canonicalize_record(record: Mapping, vocabulary: AttributeVocabulary = DEFAULT_ATTRIBUTES,
                        where: str = "record") -> dict:
    """A copy of ``record`` with every known attribute canonical and missing values dropped.

    Columns the vocabulary does not know are copied unchanged. ``None`` and NaN count as missing
    and are left out. ``where`` (e.g. ``"clinical.csv, subject A1"``) prefixes error messages.
    """
    out = {}
    for name, value in record.items():
        if _is_missing(value):
            continue
        kind = vocabulary.attributes.get(name)
        try:
            out[name] = value if kind is None else kind.canonical(value)
        except UserInputError as exc:
            raise UserInputError(f"{where}: {exc}") from None
    return out
