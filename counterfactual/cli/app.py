"""The ``cfx`` command group: global options and one-line user errors (exit code 2)."""

from __future__ import annotations

import sys
import traceback

import typer
from typer.core import TyperGroup

from counterfactual import __version__
from counterfactual.errors import UserInputError
from counterfactual.progress import console

__all__ = ["app"]

_state = {"verbose": False}


def _fail(message: str, exc: BaseException, code: int) -> None:
    if _state["verbose"]:
        traceback.print_exception(exc, file=sys.stderr)
    console.print(f"cfx: error: {message}", markup=False, soft_wrap=True)
    sys.exit(code)


class _CfxGroup(TyperGroup):
    """Typer group whose errors are one line on stderr; ``--verbose`` adds the traceback."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        _state["verbose"] = False
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except UserInputError as exc:
            if not standalone_mode:
                raise
            _fail(str(exc), exc, 2)
        except typer.TyperException as exc:  # click's errors: bad option, bad value, ...
            if not standalone_mode:
                raise
            if type(exc).__name__ == "NoArgsIsHelpError":  # help was printed already
                sys.exit(0)
            ctx = getattr(exc, "ctx", None)
            where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            _fail(exc.format_message().replace("\n", " ") + where, exc, exc.exit_code)
        except typer.Abort as exc:
            if not standalone_mode:
                raise
            _fail("aborted", exc, 1)
        if standalone_mode:
            sys.exit(rv if isinstance(rv, int) else 0)
        return rv


app = typer.Typer(
    cls=_CfxGroup,
    name="cfx",
    help="Counterfactual attribute analysis of 3D chest CT.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"cfx {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: bool = typer.Option(False, "--verbose", "-v",
                                 help="Show the traceback of an error."),
    version_: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True,
                                  help="Print the version and exit."),
) -> None:
    """Counterfactual attribute analysis of 3D chest CT."""
    _state["verbose"] = verbose
