"""Package layout: the top-level folders install as ``cfx.<folder>``.

``analysis/``, ``counterfactual/``, ``models/`` and ``reports/`` stay at the repository root (the
layers of the design notes) and are imported as ``cfx.analysis``, ``cfx.counterfactual``,
``cfx.models``; ``cfx.reports`` holds the report templates. ``package_dir`` maps each name to its
folder, for wheels and for editable installs (``pip install -e .``) alike. Everything else about
the project is in ``pyproject.toml``; the packages are listed here because ``pyproject.toml``'s
package finder cannot prefix the names it finds. ``cfx`` itself is a namespace package: a
``cfx/`` folder at the root would shadow the installed one when a wheel-installed cfx runs from
a checkout.
"""

from setuptools import find_namespace_packages, setup

LAYERS = ("analysis", "counterfactual", "models", "reports")

setup(
    package_dir={f"cfx.{layer}": layer for layer in LAYERS},
    packages=[f"cfx.{name}" for name in
              find_namespace_packages(include=[f"{layer}*" for layer in LAYERS])],
)
