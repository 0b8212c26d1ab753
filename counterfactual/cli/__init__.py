"""The ``cfx`` command line: each module in this package adds one subcommand."""

from counterfactual.cli.app import app

__all__ = ["app"]
