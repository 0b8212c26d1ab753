"""The ``cfx`` command line: each module in this package adds one subcommand."""

import counterfactual.cli.audit  # noqa: F401
import counterfactual.cli.models  # noqa: F401
import counterfactual.cli.phantom  # noqa: F401
import counterfactual.cli.prompts  # noqa: F401
import counterfactual.cli.report  # noqa: F401
import counterfactual.cli.train  # noqa: F401
from counterfactual.cli import render, stats, sweep, validate  # noqa: F401
from counterfactual.cli.app import app

__all__ = ["app"]
