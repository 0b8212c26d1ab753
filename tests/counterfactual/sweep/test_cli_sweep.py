import json
import re
import sys

import pytest
from typer.testing import CliRunner

from cfx.counterfactual.cli import app
from cfx.counterfactual.data import DEMO_COHORT, DEMO_PHANTOM_ARGS

runner = CliRunner()


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_bundled_demo_cohort_is_what_cfx_phantom_writes_with_the_recorded_settings(tmp_path):
    result = runner.invoke(app, ["phantom", "--out", str(tmp_path / "demo"), *DEMO_PHANTOM_ARGS,
                                 "--quiet"])
    assert result.exit_code == 0, result.stderr
    bundled = _files(DEMO_COHORT)
    assert len(bundled) == 2 + 2 * 9  # clinical.csv, truth.json, 9 masks, 9 CTs
    assert _files(tmp_path / "demo") == bundled


def test_sweep_without_a_cohort_sweeps_the_demo_cohort_and_says_where_outputs_are(tmp_path,
                                                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["sweep", "--attribute", "smoking", "--values", "yes,no"])
    assert result.exit_code == 0, result.stderr
    run = tmp_path / "runs" / "smoking"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["complete"] and len(manifest["items"]) == 18
    assert manifest["settings"]["cohort"] == str(DEMO_COHORT)
    assert len(list(run.glob("sub-*/*_ct.nii.gz"))) == 18
    assert len(list(run.glob("sub-*/*_diff.nii.gz"))) == 9
    assert "bundled demo cohort (9 phantom subjects)" in result.stderr
    assert f"outputs in {run}" in result.stderr
    assert "18" in result.stdout


def test_shards_from_the_command_line_make_a_run_stats_and_render_read(tmp_path, phantom_dir):
    run = tmp_path / "run"
    args = ["sweep", "--cohort", str(phantom_dir), "--attribute", "smoking", "--values", "no,yes",
            "--model", "phantom-oracle", "--seeds", "0,1", "--out", str(run)]
    first = runner.invoke(app, [*args, "--shard", "1/2"])
    assert first.exit_code == 0, first.stderr
    assert "shard 1/2 done" in first.stderr
    assert not json.loads((run / "manifest.json").read_text())["complete"]
    second = runner.invoke(app, [*args, "--shard", "2/2"])
    assert second.exit_code == 0, second.stderr
    assert json.loads((run / "manifest.json").read_text())["complete"]
    stats = runner.invoke(app, ["stats", str(run), "--quiet"])
    assert stats.exit_code == 0, stats.stderr
    assert (run / "stats" / "effects.csv").exists()
    render = runner.invoke(app, ["render", str(run), "--subject", "P000", "--size", "32",
                                 "--quiet"])
    assert render.exit_code == 0, render.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--shard", "a/b"], r"--shard: got 'a/b'; give i/n with 1 <= i <= n, e\.g\. 1/4"),
    (["--shard", "3/2"], r"--shard: got '3/2'; give i/n with 1 <= i <= n"),
    (["--shard", "0/2"], r"--shard: got '0/2'"),
    (["--batch-size", "0"], r"Invalid value for '--batch-size': got 0; give an integer >= 1"),
    (["--device", "gpu"], r"Invalid value for '--device': got 'gpu'; choose one of auto, cpu, "
                          r"cuda"),
    (["--executor", "dask"], r"Invalid value for '--executor': got 'dask'; choose one of local, "
                             r"ray"),
    (["--mask", "m.nii.gz"], r"give either --cohort DIR or one or more --mask FILE, not both"),
    (["--attribute", "bmi"], r"attribute 'bmi' is not known"),
    (["--values", "yes,maybe"], r"maybe"),
])
def test_bad_options_are_one_line_errors_and_write_nothing(tmp_path, phantom_dir, args, message):
    base = {"--attribute": "smoking", "--values": "yes,no", "--cohort": str(phantom_dir),
            "--model": "phantom-oracle", "--out": str(tmp_path / "run")}
    for key, value in zip(args[::2], args[1::2], strict=True):
        base[key] = value
    result = runner.invoke(app, ["sweep", *(x for kv in base.items() for x in kv)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cfx: error: ")
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "run").exists()


def test_ray_executor_without_ray_says_how_to_install_it(tmp_path, phantom_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    result = runner.invoke(app, ["sweep", "--cohort", str(phantom_dir), "--attribute", "smoking",
                                 "--values", "yes,no", "--model", "phantom-oracle", "--out",
                                 str(tmp_path / "run"), "--executor", "ray"])
    assert result.exit_code == 2
    assert result.stderr.strip() == ("cfx: error: --executor ray: Ray is not installed; install "
                                     "it with pip install 'cfx[ray]' (or pip install ray)")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_ray_executor_from_the_command_line_equals_the_local_one(tmp_path, phantom_dir):
    pytest.importorskip("ray", reason="ray is not installed (pip install 'cfx[ray]')")
    args = ["sweep", "--cohort", str(phantom_dir), "--attribute", "age", "--values", "40,80",
            "--model", "phantom-oracle", "--seeds", "0,1", "--quiet"]
    local = runner.invoke(app, [*args, "--out", str(tmp_path / "local")])
    remote = runner.invoke(app, [*args, "--out", str(tmp_path / "ray"), "--executor", "ray"])
    assert local.exit_code == 0 and remote.exit_code == 0, remote.stderr
    volumes = {p.relative_to(tmp_path / "local") for p in (tmp_path / "local").rglob("*.nii.gz")}
    assert len(volumes) == 18
    assert all((tmp_path / "local" / p).read_bytes() == (tmp_path / "ray" / p).read_bytes()
               for p in volumes)
