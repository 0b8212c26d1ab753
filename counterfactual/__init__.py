"""cfx: counterfactual attribute analysis of 3D chest CT (CLI, I/O, cohorts, sweeps)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cfx")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
