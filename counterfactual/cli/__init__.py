"""The ``cfx`` command line: each module in this package adds one subcommand, imported when it
runs (:data:`cfx.counterfactual.cli.app.COMMANDS`)."""

from cfx.counterfactual.cli.app import app

__all__ = ["app"]
