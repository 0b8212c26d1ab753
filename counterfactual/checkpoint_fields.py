"""The fields of a checkpoint's ``config.json`` that serving it reads, checked in one place.

:func:`cfx.models.checkpoint_files.read_config` checks the format and architecture; the sweep and
``cfx models show`` also read the text encoder, the labels, the training patch and the generator
settings. A missing or malformed one is one line naming the field, not a ``KeyError`` deep in
the generator.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

from cfx.counterfactual.errors import UserInputError

__all__ = ["check_served_config"]


def _at(config: dict, path: str):
    value = config
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            raise KeyError(path)
        value = value[key]
    return value


def _positive_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool) and value > 0


def _check(config: dict) -> tuple[str, str] | None:
    """The first bad field and what it must be, or None."""
    checks = [
        ("generator", "an object of the network's settings", lambda v: isinstance(v, dict)),
        ("text_encoder.name", "a text", lambda v: isinstance(v, str) and v != ""),
        ("text_encoder.identifier", "a text", lambda v: isinstance(v, str)),
        ("text_encoder.width", "a positive integer", _positive_int),
        ("text_encoder.max_length", "an integer >= 2",
         lambda v: _positive_int(v) and v >= 2),
        ("training.arguments.patch", "three positive integers",
         lambda v: isinstance(v, list) and len(v) == 3 and all(map(_positive_int, v))),
        ("labels.labels", "an object of label number -> name",
         lambda v: isinstance(v, dict) and v != {} and all(
             k.isdigit() and isinstance(n, str) for k, n in v.items())),
        ("labels.regions", "an object of region name -> label numbers",
         lambda v: isinstance(v, dict) and all(
             isinstance(ls, list) and all(_positive_int(x) for x in ls) for ls in v.values())),
    ]
    if "hu_window" in config:
        checks.append(("hu_window", "two finite numbers, low < high", lambda v: (
            isinstance(v, list) and len(v) == 2 and all(
                isinstance(x, Real) and not isinstance(x, bool) and math.isfinite(x) for x in v)
            and v[0] < v[1])))
    for path, expected, ok in checks:
        try:
            value = _at(config, path)
        except KeyError:
            return path, f"is missing; it must be {expected}"
        if not ok(value):
            return path, f"is {value!r:.60}; it must be {expected}"
    return None


def check_served_config(config: dict, where: str) -> dict:
    """Return ``config`` (a decoded ``config.json``) if every field a sweep reads is there and
    well-formed; else raise.

    Parameters
    ----------
    config : dict
        The decoded ``config.json`` (format and architecture already checked).
    where : str
        The file, first in the message.

    Raises
    ------
    UserInputError
        One line: the field, what it is and what it must be.
    """
    bad = _check(config)
    if bad is not None:
        field, problem = bad
        raise UserInputError(f"{where}: {field} {problem}; this config.json was not written by "
                             "cfx train, or was edited")
    return config
