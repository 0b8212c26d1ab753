"""Options the commands share, defined once, and the callbacks that check a choice or a bound.

Every command that takes ``--labels``, ``--attributes``, ``--device``, ``--quiet`` or
``--no-verify`` declares it with the factory here, so the flag, its short form and its wording
are the same everywhere (a command may word its help for what it does). A bad choice is a usage
error (exit 2, one line) that suggests the nearest allowed spelling, as MONAI's
``look_up_option`` does::

    cfx sweep ... --device cuda0
    cfx: error: Invalid value for '--device': got 'cuda0'; choose one of auto, cpu, cuda
    (did you mean 'cuda'?) (see 'cfx sweep --help')
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from pathlib import Path

import typer

__all__ = [
    "DEVICES",
    "look_up_option",
    "choice",
    "at_least",
    "labels_option",
    "attributes_option",
    "device_option",
    "quiet_option",
    "no_verify_option",
    "label_vocabulary",
    "attribute_vocabulary",
    "given_attributes",
]

DEVICES = ("auto", "cpu", "cuda")
"""Values of ``--device``: auto is a GPU when one is visible, else the CPU."""

_CUTOFF = 0.7
"""Similarity (:class:`difflib.SequenceMatcher` ratio) a suggestion needs: ``cuda0`` -> ``cuda``
(0.89) is suggested, ``gpu`` -> ``cpu`` (0.67) is not."""


def look_up_option(value: str, allowed: Sequence[str]) -> str:
    """``value`` when it is one of ``allowed``, else ValueError naming the choices.

    Parameters
    ----------
    value : str
        What the user typed.
    allowed : sequence of str
        The choices, in the order the message lists them.

    Returns
    -------
    str
        ``value`` itself.

    Raises
    ------
    ValueError
        ``got 'cuda0'; choose one of auto, cpu, cuda (did you mean 'cuda'?)``; the suggestion is
        the nearest spelling (:func:`difflib.get_close_matches`, cutoff 0.7), left out when none
        is near.
    """
    if value in allowed:
        return value
    message = f"got {value!r}; choose one of {', '.join(allowed)}"
    near = difflib.get_close_matches(value, list(allowed), n=1, cutoff=_CUTOFF)
    if not near:  # a case slip (CPU, Cuda) is near whatever its ratio
        near = [a for a in allowed if a.lower() == str(value).lower()]
    if near:
        message += f" (did you mean {near[0]!r}?)"
    raise ValueError(message)


def choice(allowed: Sequence[str]) -> Callable[[str | None], str | None]:
    """A callback accepting only the strings in ``allowed`` (None passes, for optional ones)."""
    def check(value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return look_up_option(value, allowed)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    return check


def at_least(minimum: int) -> Callable[[int | None], int | None]:
    """A callback accepting only integers >= ``minimum`` (None passes, for optional ones)."""
    def check(value: int | None) -> int | None:
        if value is not None and value < minimum:
            raise typer.BadParameter(f"got {value}; give an integer >= {minimum}")
        return value
    return check


def labels_option() -> Path | None:
    """``--labels FILE``: the label vocabulary of the masks (default: 1 left lung, 2 right lung,
    3 airway)."""
    return typer.Option(None, "--labels", help="Label vocabulary JSON file.")


def attributes_option(help: str = "Attribute vocabulary JSON file.") -> Path | None:
    """``--attributes FILE``: an attribute vocabulary added to the built-in one."""
    return typer.Option(None, "--attributes", help=help)


def device_option(help: str = "Where models run (auto: a GPU if one is visible).") -> str:
    """``--device auto|cpu|cuda``, checked against :data:`DEVICES` with a suggestion."""
    return typer.Option("auto", "--device", metavar="|".join(DEVICES), callback=choice(DEVICES),
                        help=help)


def quiet_option(help: str = "No progress bar.") -> bool:
    """``--quiet``/``-q``: no progress bar (and, where the help says so, no tables)."""
    return typer.Option(False, "--quiet", "-q", metavar="", help=help)


def no_verify_option(help: str = "Read the run's volumes without checking them against the "
                                 "sha256 its manifest recorded (said in the output).") -> bool:
    """``--no-verify``: read a run's volumes without their sha256 checks."""
    return typer.Option(False, "--no-verify", metavar="", help=help)


def label_vocabulary(path: Path | None):
    """The :class:`~cfx.counterfactual.labels.LabelVocabulary` of ``--labels``, or None when it is
    not given: a run or checkpoint then supplies its own (:mod:`cfx.counterfactual.vocabularies`),
    anything else the built-in one."""
    from cfx.counterfactual.labels import load_vocabulary

    return None if path is None else load_vocabulary(path)


def attribute_vocabulary(path: Path | None):
    """The :class:`~cfx.counterfactual.attributes.AttributeVocabulary` of ``--attributes`` (the
    built-in one when it is not given) added to the built-in one: for commands that read no
    run or checkpoint."""
    from cfx.counterfactual.attributes import DEFAULT_ATTRIBUTES, load_attributes

    return DEFAULT_ATTRIBUTES if path is None else load_attributes(path)


def given_attributes(path: Path | None):
    """The attributes of the ``--attributes`` file alone, or None when it is not given: for
    commands whose run or checkpoint records its own (:mod:`cfx.counterfactual.vocabularies`)."""
    from cfx.counterfactual.attributes import AttributeVocabulary, load_attributes

    return None if path is None else load_attributes(path, AttributeVocabulary({}))
