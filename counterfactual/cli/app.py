"""The ``cfx`` command group: global options, one-line user errors (exit code 2), and commands
imported only when they run.

Each command lives in its own module of this package and registers itself on :data:`app` when
imported. :data:`COMMANDS` names the module of each and the first paragraph of its help, so
``cfx --help`` lists every command without importing any (their engines pull in torch, scipy,
pandas, matplotlib: seconds of start-up), and ``cfx NAME`` imports ``NAME``'s module alone. A test
keeps the table equal to the commands' own help.
"""

from __future__ import annotations

import importlib
import sys
import traceback

import click
import typer
from typer.core import TyperGroup

from cfx.counterfactual import __version__
from cfx.counterfactual.atomic import undo_on_failure
from cfx.counterfactual.errors import KeptOutputError, UserInputError, describe_os_error
from cfx.counterfactual.progress import console

__all__ = ["app", "COMMANDS", "load_command"]

_state = {"verbose": False}

COMMANDS = {
    "phantom": ("cfx.counterfactual.cli.phantom", "Write a synthetic chest-CT cohort: masks, CTs, "
                "clinical.csv and truth.json."),
    "validate": ("cfx.counterfactual.cli.validate", "Check a cohort: every mask against the label "
                 "vocabulary, every CT against its mask."),
    "prompts": ("cfx.counterfactual.cli.prompts", "Print each subject's prompt; with "
                "--attribute/--values, one row per subject and value."),
    "train": ("cfx.counterfactual.cli.train", "Train the mask + text conditional GAN or diffusion "
              "model and save a checkpoint folder (no pickle)."),
    "models": ("cfx.counterfactual.cli.models", "List and describe generator checkpoints."),
    "sweep": ("cfx.counterfactual.cli.sweep", "Generate every subject under each value of one "
              "attribute, pairs sharing their noise."),
    "stats": ("cfx.counterfactual.cli.stats", "Region metrics, paired effects of each value vs the "
              "reference beside the noise floor, voxelwise FWE maps, and observational tests of "
              "real CTs with their concordance."),
    "render": ("cfx.counterfactual.cli.render", "Write, under RUN/render/, a reference | "
               "counterfactual | difference panel animation per contrast (animated PNG; "
               "--animation gif for GIF) and a mosaic PNG per volume; --gifs all adds an "
               "animation per volume and a difference animation."),
    "report": ("cfx.counterfactual.cli.report", "Write index.html, report.md, figures/ and tables/ "
               "for a run with statistics."),
    "audit": ("cfx.counterfactual.cli.audit", "Audit a run's counterfactuals: null intervention, "
              "effectiveness, locality, oracle agreement, each with a verdict against stated "
              "thresholds and an overall verdict; writes RUN/audit/audit.json and per-item "
              "tables. With --strict, exits 1 on any failing criterion."),
}
"""Command name -> (its module, the first paragraph of its help), in the order of ``cfx
--help``."""


def load_command(name: str) -> click.Command:
    """The command ``name`` of :data:`COMMANDS`, its module imported (once), its flags shown as
    flags in its help (:func:`flags_as_flags`)."""
    importlib.import_module(COMMANDS[name][0])
    return flags_as_flags(typer.main.get_command(app).commands[name])


def flags_as_flags(command: click.Command) -> click.Command:
    """``command`` (and a group's subcommands) with every on/off option, ``--help`` included,
    listed without a value type: typer would print ``--body <bool>`` as if it took a value."""
    help_option = command.get_help_option(command.context_class(command))
    for param in [*command.params, *([help_option] if help_option is not None else [])]:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        flags_as_flags(sub)
    return command


class _LazyCommand(click.Command):
    """A command of :data:`COMMANDS` not imported yet: listed with its help, imported when run
    (click makes a command's context before it invokes it, so this hands over to the real one)."""

    def make_context(self, info_name, args, parent=None, **extra):
        return load_command(self.name).make_context(info_name, args, parent=parent, **extra)


def _fail(message: str, exc: BaseException, code: int) -> None:
    if _state["verbose"]:
        traceback.print_exception(exc, file=sys.stderr)
    console.print(f"cfx: error: {message}", markup=False, soft_wrap=True)
    sys.exit(code)


class _CfxGroup(TyperGroup):
    """Typer group whose errors are one line on stderr (``--verbose`` adds the traceback), user
    and operating-system errors alike (exit code 2), whose failed commands leave none of their
    writes behind, and whose commands are imported when they run (:data:`COMMANDS`)."""

    def get_help_option(self, ctx: click.Context) -> click.Option | None:
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""  # a flag, not a <bool> value (see flags_as_flags)
        return option

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*COMMANDS, *(name for name in self.commands if name not in COMMANDS)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:  # already imported
            return flags_as_flags(self.commands[cmd_name])
        if cmd_name in COMMANDS:
            return _LazyCommand(cmd_name, help=COMMANDS[cmd_name][1])
        return None

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        _state["verbose"] = False
        try:
            # a failed command leaves nothing it wrote; an interrupt keeps it, as a kill would
            with undo_on_failure(keep=(click.exceptions.Abort, KeptOutputError)):
                rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except UserInputError as exc:
            if not standalone_mode:
                raise
            _fail(str(exc), exc, 2)
        except OSError as exc:  # the file system refused: a full disk, a read-only folder, ...
            if not standalone_mode:
                raise
            _fail(describe_os_error(exc), exc, 2)
        except MemoryError as exc:
            if not standalone_mode:
                raise
            _fail(f"out of memory ({exc or 'an allocation failed'}); use smaller sizes or "
                  "fewer subjects", exc, 2)
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
    verbose: bool = typer.Option(False, "--verbose", "-v", metavar="",
                                 help="Show the traceback of an error."),
    version_: bool = typer.Option(False, "--version", metavar="",
                                  callback=_show_version, is_eager=True,
                                  help="Print the version and exit."),
) -> None:
    """Counterfactual attribute analysis of 3D chest CT."""
    _state["verbose"] = verbose
