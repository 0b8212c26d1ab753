"""Prompt templates: one clinical record in, the text a generator is conditioned on out.

A template is Jinja2 text rendered in an immutable sandbox (no attribute internals, no changing
the record) with strict undefined variables. Each column of
the record is a variable (and ``record`` holds them all, for column names that are not Python
identifiers). A missing value is *absent*, so a template guards every phrase with
``{% if age is defined %}``; the default template leaves missing values out entirely::

    Lung CT scan: Patient age: 68. Gender: Male. Smoker: yes. Diagnosis: IPF.

Whitespace in the output is collapsed to single spaces, so a template may span several lines.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from cfx.analysis.report import MemoryLimits
from cfx.counterfactual.errors import UserInputError

__all__ = ["PromptTemplate", "DEFAULT_TEMPLATE", "DEFAULT_TEMPLATE_TEXT", "load_template"]

DEFAULT_TEMPLATE_TEXT = """\
Lung CT scan:
{% if age is defined %} Patient age: {{ age }}.{% endif %}
{% if sex is defined %} Gender: {{ sex | capitalize }}.{% endif %}
{% if smoking is defined %} Smoker: {{ smoking }}.{% endif %}
{% if pack_years is defined %} Pack-years: {{ pack_years }}.{% endif %}
{% if mortality is defined %} One-year status: {{ mortality }}.{% endif %}
{% if diagnosis is defined %} Diagnosis: {{ diagnosis }}.{% endif %}
{% if ctd_type is defined %} CTD type: {{ ctd_type }}.{% endif %}
"""


class _PromptEnvironment(MemoryLimits, ImmutableSandboxedEnvironment):
    """The immutable sandbox, refusing ``*`` and ``**`` that would exhaust memory."""


_ENVIRONMENT = _PromptEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


@dataclass(frozen=True)
class PromptTemplate:
    """A named prompt template.

    Parameters
    ----------
    text : str
        Jinja2 source.
    name : str
        ``"default"`` or the file it was read from; error messages and manifests name it.

    Raises
    ------
    UserInputError
        The text is not a valid template (the message gives ``name`` and the line).
    """

    text: str
    name: str = "<string>"
    _compiled: jinja2.Template = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        try:
            compiled = _ENVIRONMENT.from_string(self.text)
        except jinja2.TemplateSyntaxError as exc:
            raise UserInputError(f"{self.name}: template syntax error on line {exc.lineno}: "
                                 f"{_one_line(exc.message)}") from None
        object.__setattr__(self, "_compiled", compiled)

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the template text, for manifests."""
        return hashlib.sha256(self.text.encode()).hexdigest()

    def to_json(self) -> dict:
        """What a checkpoint and a run record of it: ``{"name", "sha256", "text"}``."""
        return {"name": self.name, "sha256": self.sha256, "text": self.text}

    def render(self, record: Mapping, where: str = "record") -> str:
        """The prompt for one record.

        Parameters
        ----------
        record : mapping of str to value
            Column -> value. ``None`` and NaN count as missing (the variable is undefined).
        where : str
            What the record is (e.g. ``"subject A1"``), for error messages.

        Returns
        -------
        str
            One line: whitespace runs collapsed to single spaces, stripped.

        Raises
        ------
        UserInputError
            The template uses a variable the record lacks, does something the sandbox forbids,
            fails otherwise, or renders to empty text.
        """
        prompt = self._render(record, where)
        if not prompt:
            raise UserInputError(f"{self.name}: the template gives an empty prompt for {where}")
        return prompt

    def phrases(self, record: Mapping, where: str = "record") -> dict[str, str]:
        """Each field of ``record`` as the template writes it alone (what a generator reads:
        a field's embedding then does not depend on which other fields a record has).

        Parameters
        ----------
        record : mapping of str to value
            Missing values (``None``, NaN) give no phrase.
        where : str
            What the record is, for error messages.

        Returns
        -------
        dict of str to str
            Field -> the template rendered for that field only (e.g. ``"Lung CT scan: Smoker:
            yes."``), in the record's order; fields the template leaves out are omitted.

        Raises
        ------
        UserInputError
            As :meth:`render`.
        """
        blank = self._render({}, where)
        out = {}
        for name, value in record.items():
            if _present(value):
                text = self._render({name: value}, where)
                if text and text != blank:
                    out[str(name)] = text
        return out

    def _render(self, record: Mapping, where: str) -> str:
        values = {str(k): v for k, v in record.items() if _present(v)}
        variables = {k: v for k, v in values.items() if k.isidentifier() and k != "record"}
        try:
            text = self._compiled.render(variables, record=values)
        except jinja2.UndefinedError as exc:
            raise UserInputError(f"{self.name}: {exc.message} for {where}; guard optional "
                                 "columns with {% if name is defined %}") from None
        except jinja2.exceptions.SecurityError as exc:
            raise UserInputError(f"{self.name}: the template sandbox refused: "
                                 f"{_one_line(exc)}") from None
        except Exception as exc:  # any other failure inside user template code
            raise UserInputError(f"{self.name}: template failed for {where}: "
                                 f"{type(exc).__name__}: {_one_line(exc)}") from None
        return _one_line(text)


DEFAULT_TEMPLATE = PromptTemplate(DEFAULT_TEMPLATE_TEXT, "default")


def load_template(path: str | os.PathLike) -> PromptTemplate:
    """Read a Jinja2 prompt template file (UTF-8).

    Raises
    ------
    UserInputError
        The file is missing, unreadable, or not a valid template.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserInputError(f"{path}: prompt template file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"{path}: cannot read the prompt template ({exc})") from None
    return PromptTemplate(text, str(path))
