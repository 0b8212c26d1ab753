"""``cfx report --include FILE``: a user template reads exactly the files named with it."""

import pytest
from typer.testing import CliRunner

from cfx.counterfactual.cli import app
from tests.conftest import oracle_run

runner = CliRunner()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A phantom run of 2 subjects (16³) with statistics."""
    return oracle_run(tmp_path_factory.mktemp("include"))


@pytest.fixture
def template(tmp_path):
    (tmp_path / "intro.md").write_text("Methods by the lab.")
    (tmp_path / "secret.md").write_text("not for the report")
    path = tmp_path / "mine.md"
    path.write_text("# {{ attribute }}\n{% include 'user/intro.md' %}\n")
    return path


def test_a_named_include_is_rendered(run, template, tmp_path):
    out = tmp_path / "report"
    result = runner.invoke(app, ["report", str(run), "--template", str(template), "--include",
                                 str(tmp_path / "intro.md"), "--subjects", "1", "--out", str(out),
                                 "-q"])
    assert result.exit_code == 0, result.stderr
    assert (out / "report.md").read_text() == "# smoking\nMethods by the lab."


def test_a_file_beside_the_template_is_not_readable_without_include(run, template, tmp_path):
    out = tmp_path / "report"
    result = runner.invoke(app, ["report", str(run), "--template", str(template), "--include",
                                 str(tmp_path / "secret.md"), "--out", str(out), "-q"])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "includes user/intro.md, which is neither a template cfx ships" in result.stderr
    assert not out.exists()


def test_an_include_that_is_a_link_is_refused_before_anything_is_read(run, template, tmp_path):
    (tmp_path / "link.md").symlink_to(tmp_path / "secret.md")
    result = runner.invoke(app, ["report", str(run), "--template", str(template), "--include",
                                 str(tmp_path / "link.md"), "--out", str(tmp_path / "r"), "-q"])
    assert result.exit_code == 2
    assert result.stderr.startswith("cfx: error: --include: ")
    assert "is a symbolic link; give the file itself" in result.stderr
    assert not (tmp_path / "r").exists()
