"""Project-level checks: the conda environment matches pyproject, and layers import one way."""

import ast
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pip_section(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    indent = len(lines[start + 1]) - len(lines[start + 1].lstrip())
    items = []
    for line in lines[start + 1:]:
        if not line.strip() or len(line) - len(line.lstrip()) < indent:
            break
        items.append(line.strip()[2:].strip().strip('"'))
    return items


def test_environment_yml_names_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = {r.strip() for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    conda = [r for r in _pip_section((ROOT / "environment.yml").read_text(encoding="utf-8"))
             if not r.startswith("-e")]
    assert {_name(r) for r in conda} == {_name(r) for r in wanted}
    assert set(conda) == wanted  # same version pins too
    assert "torch==2.13.0" in conda


LAYERS = ("analysis", "counterfactual", "models", "reports")
"""The top-level folders, installed as ``cfx.<folder>`` (``setup.py``)."""
FORBIDDEN = {"models": {"analysis", "counterfactual"}, "analysis": {"models", "counterfactual"}}


def _imported(path: Path) -> list[str]:
    """Every absolute module name ``path`` imports (``from cfx import x`` imports ``cfx.x``)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names += ([f"cfx.{alias.name}" for alias in node.names] if node.module == "cfx"
                      else [node.module])
    return names


def _layer(name: str) -> str | None:
    """The layer a module name belongs to (``cfx.models.nets`` -> ``models``), else None."""
    parts = name.split(".")
    return parts[1] if parts[0] == "cfx" and len(parts) > 1 and parts[1] in LAYERS else None


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layers_import_one_way(layer):
    offenders = [f"{path.relative_to(ROOT)}: {name}" for path in (ROOT / layer).rglob("*.py")
                 for name in _imported(path) if _layer(name) in FORBIDDEN[layer]]
    assert offenders == []


def test_the_layers_are_imported_only_under_their_cfx_names():
    """A bare ``import analysis`` would still work from the repository root (it is on the path)
    and load a second copy of the package; every file uses the ``cfx.`` names."""
    files = [*ROOT.glob("*.py"), *(path for folder in (*LAYERS, "tests", "benchmarks")
                                   for path in (ROOT / folder).rglob("*.py"))]
    offenders = [f"{path.relative_to(ROOT)}: {name}" for path in files
                 for name in _imported(path) if name.split(".")[0] in LAYERS]
    assert len(files) > 100
    assert offenders == []


def test_the_install_maps_each_cfx_name_to_its_top_level_folder():
    """``cfx.analysis`` is ``analysis/`` of this tree (the editable install's mapping), and
    importing the command line loads no module under a bare layer name."""
    code = ("import json, sys; import cfx.analysis, cfx.counterfactual.cli.app, cfx.models; "
            "print(json.dumps({'files': [m.__file__ for m in (cfx.analysis, "
            "cfx.counterfactual, cfx.models)], 'modules': sorted(sys.modules)}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    found = json.loads(done.stdout)
    assert found["files"] == [str(ROOT / layer / "__init__.py")
                              for layer in ("analysis", "counterfactual", "models")]
    assert "cfx.counterfactual.cli.app" in found["modules"]
    assert [m for m in found["modules"] if m.split(".")[0] in LAYERS] == []

