"""The ``cfx`` command line: each module in this package adds one subcommand, imported when it
runs (:data:`counterfactual.cli.app.COMMANDS`)."""

from counterfactual.cli.app import app

__all__ = ["app"]
