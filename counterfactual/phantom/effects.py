"""Planted attribute effects: their JSON form, validation, and the HU maps they add to the lungs.

An effects file is a JSON object with one entry per attribute (any of ``age``, ``sex``,
``smoking``, ``mortality``, ``diagnosis``; an absent attribute has no effect)::

    {
      "smoking": {"reference": "no",
                  "values": {"yes": {"shift_hu": 20, "pattern": "lung"}}},
      "age": {"centre": 50, "slope_hu_per_unit": -0.5, "pattern": "lung"}
    }

A categorical entry names its ``reference`` (the value with no effect: one of the attribute's
values, or ``"none"``, a baseline no subject has, such as lungs without disease) and, per other
value, a ``shift_hu`` added to the voxels of a named ``pattern`` (see
:mod:`cfx.counterfactual.phantom.patterns`); a value not listed has no effect. A numeric entry adds
``slope_hu_per_unit * (value - centre)`` over its pattern. Effects add up and touch lung voxels
only. ``{}`` plants nothing.

The effects together may shift a voxel by at most :data:`MAX_EFFECT_HU` (over every value a render
accepts, ages 0 to 120), so that every phantom CT value fits the int16 HU it is stored in.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.phantom.clinical import ATTRIBUTES, CATEGORIES, NUMERIC, NUMERIC_RANGE
from cfx.counterfactual.phantom.patterns import PATTERNS, LungPatterns

__all__ = ["Shift", "CategoricalEffect", "NumericEffect", "Effects", "DEFAULT_EFFECTS",
           "NO_EFFECTS", "parse_effects", "load_effects", "BASELINE", "MAX_EFFECT_HU"]

BASELINE = "none"
# Largest total shift: the anatomy spans about -1500..1100 HU with texture and noise, so a CT
# shifted by up to this much stays within int16 (-32768..32767).
MAX_EFFECT_HU = 30000.0
_CATEGORICAL_FIELDS = ("reference", "values")
_SHIFT_FIELDS = ("shift_hu", "pattern")
_NUMERIC_FIELDS = ("centre", "slope_hu_per_unit", "pattern")


@dataclass(frozen=True)
class Shift:
    """``shift_hu`` (HU) added over the lung pattern ``pattern``."""

    shift_hu: float
    pattern: str


@dataclass(frozen=True)
class CategoricalEffect:
    """Per value a :class:`Shift`; ``reference`` and unlisted values add nothing."""

    reference: str
    values: Mapping[str, Shift]


@dataclass(frozen=True)
class NumericEffect:
    """``slope_hu_per_unit * (value - centre)`` HU over ``pattern``."""

    centre: float
    slope_hu_per_unit: float
    pattern: str


@dataclass(frozen=True)
class Effects:
    """The planted effects of a phantom cohort, by attribute."""

    entries: Mapping[str, CategoricalEffect | NumericEffect]

    def to_json(self) -> dict:
        """The JSON form (what ``truth.json["effects"]`` holds and ``--effects FILE`` reads)."""
        out = {}
        for name in ATTRIBUTES:
            entry = self.entries.get(name)
            if isinstance(entry, NumericEffect):
                out[name] = {"centre": entry.centre,
                             "slope_hu_per_unit": entry.slope_hu_per_unit,
                             "pattern": entry.pattern}
            elif isinstance(entry, CategoricalEffect):
                out[name] = {"reference": entry.reference,
                             "values": {v: {"shift_hu": s.shift_hu, "pattern": s.pattern}
                                        for v, s in entry.values.items()}}
        return out

    def allowed_values(self, attribute: str) -> tuple[str, ...]:
        """Values a categorical ``attribute`` may take in a render (``none`` when a baseline)."""
        entry = self.entries.get(attribute)
        extra = (BASELINE,) if isinstance(entry, CategoricalEffect) and \
            entry.reference == BASELINE else ()
        return (*CATEGORIES[attribute], *extra)

    def canonical(self, attribute: str, value, where: str):
        """``value`` of ``attribute`` in canonical form: float for numeric attributes (numbers or
        numeric strings such as ``"68"``), the listed spelling for categorical ones
        (case-insensitive). ``where`` names the origin in error messages."""
        if attribute in NUMERIC:
            number = _number(value.strip() if isinstance(value, str) else value)
            if number is None:
                raise UserInputError(f"{where}: {attribute} must be a finite number "
                                     f"({NUMERIC[attribute]}), got {value!r}")
            low, high = NUMERIC_RANGE[attribute]
            if not low <= number <= high:
                raise UserInputError(f"{where}: {attribute} must be from {low:g} to {high:g} "
                                     f"{NUMERIC[attribute]}, got {value!r}")
            return number
        if attribute not in CATEGORIES:
            raise UserInputError(f"{where}: unknown attribute {attribute!r}; the phantom has "
                                 f"{', '.join(ATTRIBUTES)}")
        allowed = self.allowed_values(attribute)
        if isinstance(value, str):
            for candidate in allowed:
                if candidate.lower() == value.strip().lower():
                    return candidate
        raise UserInputError(f"{where}: {attribute} cannot be {value!r}; allowed: "
                             f"{', '.join(allowed)}")

    def attribute_map(self, attribute: str, value, patterns: LungPatterns) -> np.ndarray:
        """HU added by one attribute at a canonical ``value``.

        Returns
        -------
        ndarray of float32, shape (n_x, n_y, n_z)
            Zero outside the lungs and wherever the attribute has no effect.
        """
        out = np.zeros(patterns.lung.shape, np.float32)
        self._add(out, attribute, value, patterns)
        return out

    def effect_map(self, attributes: Mapping, patterns: LungPatterns) -> np.ndarray:
        """Sum of every attribute's map for canonical ``attributes``, float32 (n_x, n_y, n_z)."""
        out = np.zeros(patterns.lung.shape, np.float32)
        for name in ATTRIBUTES:
            if name in attributes:
                self._add(out, name, attributes[name], patterns)
        return out

    def _add(self, out: np.ndarray, attribute: str, value, patterns: LungPatterns) -> None:
        entry = self.entries.get(attribute)
        if isinstance(entry, NumericEffect):
            shift, pattern = entry.slope_hu_per_unit * (float(value) - entry.centre), entry.pattern
        elif isinstance(entry, CategoricalEffect) and value in entry.values:
            shift, pattern = entry.values[value].shift_hu, entry.values[value].pattern
        else:
            return
        if shift != 0:
            out[patterns.mask(pattern)] += np.float32(shift)


def _number(value) -> float | None:
    """A finite float from a JSON/CLI value, or None (booleans are not numbers)."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _object(raw, where: str, fields: tuple[str, ...]) -> dict:
    """Check that ``raw`` is a JSON object with exactly ``fields``."""
    if not isinstance(raw, dict):
        raise UserInputError(f"{where}: expected an object with {', '.join(fields)}, got "
                             f"{json.dumps(raw)}")
    for name in fields:
        if name not in raw:
            raise UserInputError(f"{where}: missing field {name!r}; expected "
                                 f"{', '.join(fields)}")
    unknown = [k for k in raw if k not in fields]
    if unknown:
        raise UserInputError(f"{where}: unknown field {unknown[0]!r}; allowed: "
                             f"{', '.join(fields)}")
    return raw


def _field_number(raw: dict, name: str, where: str, unit: str) -> float:
    number = _number(raw[name])
    if number is None:
        raise UserInputError(f"{where}.{name}: expected a number ({unit}), got "
                             f"{json.dumps(raw[name])}")
    return number


def _field_pattern(raw: dict, where: str) -> str:
    pattern = raw["pattern"]
    if pattern not in PATTERNS:
        raise UserInputError(f"{where}.pattern: unknown pattern {json.dumps(pattern)}; known: "
                             f"{', '.join(PATTERNS)}")
    return pattern


def _parse_categorical(name: str, raw, where: str) -> CategoricalEffect:
    raw = _object(raw, where, _CATEGORICAL_FIELDS)
    domain = CATEGORIES[name]
    reference = raw["reference"]
    if reference not in (*domain, BASELINE):
        raise UserInputError(f"{where}.reference: {json.dumps(reference)} is not a value of "
                             f"{name}; use one of {', '.join(domain)} or {BASELINE!r}")
    if not isinstance(raw["values"], dict):
        raise UserInputError(f"{where}.values: expected an object mapping values of {name} to "
                             f"{{shift_hu, pattern}}, got {json.dumps(raw['values'])}")
    values = {}
    for value, shift in raw["values"].items():
        at = f"{where}.values.{value}"
        if value not in domain:
            raise UserInputError(f"{at}: {value!r} is not a value of {name}; allowed: "
                                 f"{', '.join(domain)}")
        if value == reference:
            raise UserInputError(f"{at}: {value!r} is the reference, which has no effect; "
                                 "remove it or change the reference")
        shift = _object(shift, at, _SHIFT_FIELDS)
        values[value] = Shift(_field_number(shift, "shift_hu", at, "HU"),
                              _field_pattern(shift, at))
    return CategoricalEffect(reference, values)


def _parse_numeric(name: str, raw, where: str) -> NumericEffect:
    raw = _object(raw, where, _NUMERIC_FIELDS)
    unit = NUMERIC[name]
    return NumericEffect(_field_number(raw, "centre", where, unit),
                         _field_number(raw, "slope_hu_per_unit", where, f"HU per {unit}"),
                         _field_pattern(raw, where))


def parse_effects(raw, source: str) -> Effects:
    """Validate the JSON form of effects (already decoded) and build :class:`Effects`.

    Parameters
    ----------
    raw : object
        Decoded JSON.
    source : str
        Where it came from, first in every error message (a file name).

    Raises
    ------
    UserInputError
        One line naming ``source`` and the offending field, e.g.
        ``effects.json: smoking.values.yes.shift_hu: expected a number (HU), got "big"``.
    """
    if not isinstance(raw, dict):
        raise UserInputError(f"{source}: expected a JSON object with one entry per attribute "
                             f"({', '.join(ATTRIBUTES)}), got {type(raw).__name__}")
    entries: dict[str, CategoricalEffect | NumericEffect] = {}
    for name, entry in raw.items():
        where = f"{source}: {name}"
        if name in NUMERIC:
            entries[name] = _parse_numeric(name, entry, where)
        elif name in CATEGORIES:
            entries[name] = _parse_categorical(name, entry, where)
        else:
            raise UserInputError(f"{source}: unknown attribute {name!r}; the phantom has "
                                 f"{', '.join(ATTRIBUTES)}")
    _check_range(entries, source)
    return Effects(entries)


def _largest_shift(entry: CategoricalEffect | NumericEffect, name: str) -> tuple[float, str]:
    """The largest |HU| one entry can add, and the field that gives it."""
    if isinstance(entry, NumericEffect):
        low, high = NUMERIC_RANGE[name]
        far = max((low, high), key=lambda v: abs(v - entry.centre))
        return (abs(entry.slope_hu_per_unit) * abs(far - entry.centre),
                f"{name}.slope_hu_per_unit (at {far:g} {NUMERIC[name]})")
    shifts = [(abs(s.shift_hu), f"{name}.values.{v}.shift_hu") for v, s in entry.values.items()]
    return max(shifts, default=(0.0, name))


def _check_range(entries: Mapping, source: str) -> None:
    """Refuse effects that together could push a CT value out of int16 HU."""
    shifts = [_largest_shift(entry, name) for name, entry in entries.items()]
    total = sum(hu for hu, _ in shifts)
    if not total <= MAX_EFFECT_HU:
        field = max(shifts)[1]
        raise UserInputError(f"{source}: {field} lets the effects add up to {total:.4g} HU, more "
                             f"than the {MAX_EFFECT_HU:g} HU a CT stored as int16 HU can take; "
                             "use smaller effects")


DEFAULT_EFFECTS = parse_effects({
    "age": {"centre": 50, "slope_hu_per_unit": -0.5, "pattern": "lung"},
    "smoking": {"reference": "no", "values": {"yes": {"shift_hu": 20, "pattern": "lung"}}},
    "mortality": {"reference": "alive",
                  "values": {"dead": {"shift_hu": 30, "pattern": "lower-third"}}},
    "diagnosis": {"reference": BASELINE, "values": {
        "IPF": {"shift_hu": 150, "pattern": "subpleural-lower-half"},
        "CTD-ILD": {"shift_hu": 60, "pattern": "lower-two-thirds"},
        "UILD": {"shift_hu": 75, "pattern": "subpleural-lower-half"},
    }},
}, "default effects")
NO_EFFECTS = Effects({})


def load_effects(spec: str | os.PathLike) -> Effects:
    """Effects from ``--effects``: ``"default"``, ``"none"`` or a JSON file.

    Raises
    ------
    UserInputError
        For a missing or unreadable file, bad JSON or an invalid entry (see
        :func:`parse_effects`).
    """
    if str(spec) == "default":
        return DEFAULT_EFFECTS
    if str(spec) == "none":
        return NO_EFFECTS
    path = Path(spec)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserInputError(f"{path}: effects file not found; give a JSON file, 'default' or "
                             "'none'") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"{path}: cannot read the effects file ({exc})") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserInputError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column "
                             f"{exc.colno})") from None
    return parse_effects(raw, str(path))
