"""Render a report folder from plain data with Jinja2 templates (``reports/templates``).

A built-in template is a folder ``reports/templates/<name>/``: every ``*.j2`` file in it renders to
the same relative path in the report folder without the ``.j2`` suffix (``index.html.j2`` ->
``index.html``, ``tables/effects.tex.j2`` -> ``tables/effects.tex``). A user template is one file
whose name (less a ``.j2`` suffix) ends in ``.html``/``.htm`` (it replaces ``index.html``) or
``.md`` (it replaces ``report.md``); the other outputs come from the ``summary`` template, so the
folder is always complete. Shared pieces (style sheet, macros) live in
``reports/templates/_shared/`` and are reachable from every template by that path. A user template
may include only what cfx ships and the files named in ``includes`` (each as ``user/<file
name>``): nothing else beside it is readable, and a symbolic link is refused, so a template in a
home folder cannot read ``user/.ssh/id_rsa``.

Every template, built-in or not, renders in a :class:`jinja2.sandbox.SandboxedEnvironment` with
:class:`jinja2.StrictUndefined`: unsafe attribute access (``__class__``, ``mro``, ...) and undefined
names stop the rendering with :class:`TemplateError`. So does an expression that would exhaust
memory: ``*`` making a text or list longer than :data:`MAX_SIZE` items, ``**`` with a result
over :data:`MAX_POWER_BITS` bits (``range`` is capped by Jinja2 itself at 100,000). HTML
outputs are autoescaped. Numbers reach the page only through the context and are formatted with
the filters of :data:`FILTERS`, so no template types a number. Tables are template macros, not
pandas ``Styler``: a cell's digits follow its own row's CI (``signed(ci=...)``), which Styler's
per-column formatters do not see, and users edit the tables in their templates.

Outputs render in this order, each one's text then available to the next ones as
``outputs["<relative path>"]``: the other files (sorted), ``report.md``, ``index.html``; the HTML
page can thus show the LaTeX table it sits beside.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from numbers import Number
from pathlib import Path

from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.exceptions import SecurityError, TemplateNotFound, TemplateSyntaxError, UndefinedError
from jinja2.exceptions import TemplateError as JinjaError
from jinja2.sandbox import SandboxedEnvironment

__all__ = ["BUILTIN", "FILTERS", "MAX_SIZE", "MAX_POWER_BITS", "MemoryLimits", "TemplateError",
           "find_templates", "check_template", "key_values", "render_report"]

BUILTIN = ("summary", "paper")
_SHARED = "_shared"
_MAIN = ("report.md", "index.html")
_HTML = (".html", ".htm")
_USER = "user/"
MAX_SIZE = 1_000_000
"""Most characters or items a template's ``*`` may make."""
MAX_POWER_BITS = 4096
"""Most bits of a template's integer ``**`` result."""


class TemplateError(ValueError):
    """A template that cannot be found, parsed or rendered; the message is one line."""


def find_templates() -> Path:
    """The ``reports/templates`` folder of the source tree this package runs from.

    ``reports/`` is not a Python package: it is found beside the ``analysis`` package, which is
    where an editable install (``pip install -e .``) or a source checkout keeps it.

    Raises
    ------
    TemplateError
        If the folder or one of the built-in templates is missing.
    """
    root = Path(__file__).resolve().parents[1] / "reports" / "templates"
    missing = [name for name in (*BUILTIN, _SHARED) if not (root / name).is_dir()]
    if missing:
        raise TemplateError(f"report templates not found: {root} lacks {', '.join(missing)}; "
                            "cfx must run from a source checkout (pip install -e .) that holds "
                            "reports/templates")
    return root


# -- filters -----------------------------------------------------------------------------------

def _missing(x) -> bool:
    return x is None or (isinstance(x, Number) and not isinstance(x, bool) and math.isnan(x))


def _num(x, digits: int = 2) -> str:
    """Fixed-point with ``digits`` decimals; an em dash for a missing value (None or NaN)."""
    if _missing(x):
        return "—"
    if isinstance(x, bool) or not isinstance(x, Number):
        return str(x)
    return f"{x:.{digits}f}"


_MAX_DIGITS = 8
_EXACT = 1e-7  # a CI narrower than this (relative) is floating-point noise of an exact value


def _digits_for(x=None, low=None, high=None) -> int:
    """Decimals that show a number as precisely as its CI supports.

    Two significant digits of the CI's width (``20.04 [19.91, 20.17]``: 2 decimals;
    ``0.0003 [-0.0001, 0.0007]``: 5); without a usable CI (missing or of zero width, as an exact
    oracle gives, up to rounding noise), two significant digits of the value, at least 2 decimals.
    """
    width = None if _missing(low) or _missing(high) else abs(float(high) - float(low))
    scale = max(abs(float(v)) for v in (x, low, high) if not _missing(v)) if width else 0.0
    if width is not None and math.isfinite(width) and width > _EXACT * max(scale, 1.0):
        digits = 1 - math.floor(math.log10(width))
    else:
        size = 0.0 if _missing(x) else abs(float(x))
        digits = 2 if size == 0 or not math.isfinite(size) else \
            max(2, 1 - math.floor(math.log10(size)))
    return min(max(digits, 0), _MAX_DIGITS)


def _fixed(x, digits: int, sign: bool) -> str:
    """``x`` with ``digits`` decimals; a value that rounds to zero prints unsigned (``0.00``)."""
    text = f"{x:{'+' if sign else ''}.{digits}f}"
    return text.lstrip("+-") if float(text) == 0 else text


def _signed(x, digits: int | None = None, ci: Sequence | None = None) -> str:
    """``x`` with an explicit sign (``+20.04``); decimals from ``digits``, else from the width of
    ``ci`` (its ``(low, high)``), else two significant digits (see :func:`_digits_for`)."""
    if _missing(x) or not isinstance(x, Number):
        return "—"
    low, high = (None, None) if ci is None else ci
    return _fixed(x, _digits_for(x, low, high) if digits is None else digits, sign=True)


def _ci(low, high, digits: int | None = None) -> str:
    """An interval ``[low, high]`` with signs, decimals from its own width unless ``digits``
    is given; an em dash when either end is missing."""
    if _missing(low) or _missing(high):
        return "—"
    if digits is None:
        digits = _digits_for(max(abs(low), abs(high)), low, high)
    return f"[{_fixed(low, digits, sign=True)}, {_fixed(high, digits, sign=True)}]"


def _pvalue(p, digits: int = 3) -> str:
    """A p-value: ``digits`` decimals, ``< 0.001`` below the smallest printable value."""
    if _missing(p):
        return "—"
    smallest = 10.0 ** -digits
    return f"< {smallest:.{digits}f}" if p < smallest else f"{p:.{digits}f}"


def _general(x, digits: int = 4) -> str:
    """``digits`` significant digits for floats; other values as text."""
    if _missing(x):
        return "—"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
          "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
          "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}",
          "—": "---", "Δ": r"$\Delta$", "±": r"$\pm$"}


def _latex(text) -> str:
    """Text with LaTeX's special characters escaped."""
    return "".join(_LATEX.get(ch, ch) for ch in str(text))


def _md(text) -> str:
    """Text safe inside a Markdown table cell (pipes escaped, one line)."""
    return " ".join(str(text).split()).replace("|", r"\|")


FILTERS = {"num": _num, "signed": _signed, "ci": _ci, "pvalue": _pvalue, "general": _general,
           "latex": _latex, "md": _md}


def key_values(data, prefix: str = "", limit: int = 500) -> list[tuple[str, str]]:
    """Flatten nested JSON-like data into ``(dotted key, text)`` rows for a generic table.

    Parameters
    ----------
    data : dict, list or scalar
        E.g. the content of an ``audit.json`` of unknown schema.
    prefix : str
        Key of ``data`` itself.
    limit : int
        At most this many rows; a last row says how many were left out.

    Returns
    -------
    list of (str, str)
        Dict keys joined with ``.``, list positions as ``[i]``; floats with 6 significant
        digits, other scalars as text.
    """
    rows: list[tuple[str, str]] = []
    _flatten(data, prefix, rows)
    if len(rows) > limit:
        rows = rows[:limit] + [("…", f"{len(rows) - limit} more entries not shown")]
    return rows


def _flatten(data, key: str, rows: list[tuple[str, str]]) -> None:
    if isinstance(data, Mapping) and data:
        for name, value in data.items():
            _flatten(value, f"{key}.{name}" if key else str(name), rows)
    elif isinstance(data, list | tuple) and data:
        for index, value in enumerate(data):
            _flatten(value, f"{key}[{index}]", rows)
    else:
        text = ("{}" if isinstance(data, Mapping) else "[]" if isinstance(data, list | tuple)
                else f"{data:.6g}" if isinstance(data, float) else str(data))
        rows.append((key or "value", text))


# -- rendering ---------------------------------------------------------------------------------

def _autoescape(name: str | None) -> bool:
    return name is not None and name.removesuffix(".j2").endswith(_HTML)


class MemoryLimits:
    """Mixin for a Jinja sandbox: refuse ``*`` and ``**`` whose result would exhaust memory
    (:data:`MAX_SIZE` items, :data:`MAX_POWER_BITS` bits)."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context, operator, left, right):
        if operator == "*":
            for sized, count in ((left, right), (right, left)):
                if isinstance(sized, str | list | tuple) and isinstance(count, int) and \
                        len(sized) * count > MAX_SIZE:
                    raise SecurityError(f"'*' would make {len(sized) * count:,} items; at most "
                                        f"{MAX_SIZE:,}")
        if operator == "**" and isinstance(left, int) and isinstance(right, int) and \
                abs(left) > 1 and right > 0:
            bits = right * math.log2(abs(left))
            if bits > MAX_POWER_BITS:
                raise SecurityError(f"'**' would make a number of about {bits:,.0f} bits; at "
                                    f"most {MAX_POWER_BITS}")
        return super().call_binop(context, operator, left, right)


class _LimitedEnvironment(MemoryLimits, SandboxedEnvironment):
    """The report sandbox with :class:`MemoryLimits`."""


def _environment(templates: Path, user_files: Mapping[str, Path]) -> SandboxedEnvironment:
    env = _LimitedEnvironment(loader=_Loader(templates, user_files),
                               undefined=StrictUndefined, autoescape=_autoescape,
                               trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(FILTERS)
    return env


def _user_target(path: Path) -> str:
    name = path.name.removesuffix(".j2")
    if name.endswith(_HTML):
        return "index.html"
    if name.endswith(".md"):
        return "report.md"
    raise TemplateError(f"template: {path} must be a built-in name ({', '.join(BUILTIN)}) or a "
                        "Jinja2 file named *.html, *.htm or *.md (optionally + .j2)")


def _user_file(path: Path, what: str) -> Path:
    """``path`` if it is a regular file and not a symbolic link."""
    if path.is_symlink():
        raise TemplateError(f"{what}: {path} is a symbolic link; give the file itself")
    if not path.is_file():
        raise TemplateError(f"{what}: {path} is not an existing file")
    return path


def _plan(template: str | os.PathLike, templates: Path, includes: Sequence = ()
          ) -> tuple[dict[str, Path], dict[str, str]]:
    """The user's readable files ({``user/<name>``: path}) and {output path: template name}."""
    user_files: dict[str, Path] = {}
    if isinstance(template, str) and template in BUILTIN:
        base, user = template, None
    else:
        user = Path(template)
        if not user.is_symlink() and not user.is_file():
            raise TemplateError(f"template: {template} is neither a built-in template "
                                f"({', '.join(BUILTIN)}) nor an existing file")
        user_files[_USER + user.name] = _user_file(user, "template")
        base = "summary"
    for path in map(Path, includes):
        name = _USER + path.name
        if name in user_files and user_files[name] != path:
            raise TemplateError(f"include: {path} and {user_files[name]} would both be {name}; "
                                "rename one")
        user_files[name] = _user_file(path, "include")
    folder = templates / base
    plan = {str(p.relative_to(folder).with_suffix("")): f"{base}/{p.relative_to(folder)}"
            for p in sorted(folder.rglob("*.j2"))}
    if user is not None:
        plan[_user_target(user)] = _USER + user.name
    missing = [m for m in _MAIN if m not in plan]
    if missing:
        raise TemplateError(f"template {base}: no {' or '.join(m + '.j2' for m in missing)} "
                            f"in {folder}")
    return user_files, plan


def check_template(template: str | os.PathLike, templates: str | os.PathLike | None = None,
                   includes: Sequence[str | os.PathLike] = ()) -> None:
    """Raise :class:`TemplateError` unless ``template`` names a built-in template or a usable
    file (``*.html``, ``*.htm``, ``*.md``, optionally ``.j2``) and every path in ``includes`` is
    a file (not a symbolic link); nothing is rendered."""
    _plan(template, find_templates() if templates is None else Path(templates), includes)


def _order(plan: dict[str, str]) -> list[str]:
    return sorted(p for p in plan if p not in _MAIN) + list(_MAIN)


class _Loader(FileSystemLoader):
    """Shipped templates by path; the user's template and named includes as ``user/<name>``,
    read without following a symbolic link; any other ``user/`` name is not found."""

    def __init__(self, templates: Path, user_files: Mapping[str, Path]):
        super().__init__([str(templates)])
        self._user = dict(user_files)

    def get_source(self, environment, template):
        if not template.startswith(_USER):
            return super().get_source(environment, template)
        path = self._user.get(template)
        if path is None:
            raise TemplateNotFound(template)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            with os.fdopen(fd, "rb") as fh:
                text = fh.read().decode("utf-8")
        except OSError as exc:
            raise TemplateError(f"template {template}: cannot read {path} ({exc.strerror}); "
                                "give a regular file, not a symbolic link") from None
        except UnicodeDecodeError:
            raise TemplateError(f"template {template}: {path} is not UTF-8 text") from None
        return text, str(path), lambda: False


def _explain(exc: Exception, name: str) -> str | None:
    """One line for a failure while rendering template ``name``; None for a bug of ours."""
    if isinstance(exc, TemplateError):
        return str(exc)
    if isinstance(exc, SecurityError):
        return f"template {name}: refused by the sandbox: {exc}"
    if isinstance(exc, TemplateSyntaxError):
        return f"template {exc.name or name}, line {exc.lineno}: {exc.message}"
    if isinstance(exc, TemplateNotFound):
        return (f"template {name}: includes {exc.name}, which is neither a template cfx ships "
                "(reports/templates) nor a file named as an include")
    if isinstance(exc, UndefinedError):
        return (f"template {name}: {exc.message}; reports/templates/README.md lists the names "
                "a template can use")
    if isinstance(exc, JinjaError):
        return f"template {name}: {exc}"
    if isinstance(exc, TypeError | ValueError | ArithmeticError | LookupError):
        return f"template {name}: {type(exc).__name__}: {exc}"
    return None


def render_report(out: str | os.PathLike, context: Mapping, template: str | os.PathLike = "summary",
                  templates: str | os.PathLike | None = None,
                  includes: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """Render a template's outputs into the folder ``out`` from plain data.

    Parameters
    ----------
    out : path
        The report folder (created if needed; files already there are overwritten). Figures and
        tables the templates link to are expected to be written there by the caller.
    context : mapping
        Plain data the templates read (numbers, strings, lists, dicts); ``outputs`` is added.
    template : str or path
        A built-in name (:data:`BUILTIN`) or a user template file (see the module docstring).
    templates : path, optional
        The templates folder; :func:`find_templates` by default.
    includes : sequence of path
        Files a user template may include, each as ``user/<file name>``; no other file of the
        user's is readable, and symbolic links are refused.

    Returns
    -------
    list of Path
        The files written, in rendering order (``index.html`` last).

    Raises
    ------
    TemplateError
        Unknown template, syntax error, undefined name, unsafe access (sandbox), with the
        template's name and line where Jinja2 gives them.
    """
    root = find_templates() if templates is None else Path(templates)
    user_files, plan = _plan(template, root, includes)
    env = _environment(root, user_files)
    out = Path(out)
    outputs: dict[str, str] = {}
    written = []
    for target in _order(plan):
        name = plan[target]
        try:
            text = env.get_template(name).render({**context, "outputs": dict(outputs)})
        except Exception as exc:  # a template failure becomes one line (see _explain)
            message = _explain(exc, name)
            if message is None:
                raise
            raise TemplateError(" ".join(message.split())) from None
        path = out / target
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        outputs[target] = text
        written.append(path)
    return written
