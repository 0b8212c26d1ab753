"""One line, exit 2, nothing left behind: operating-system failures (an output that is a file or
under one, a name too long, a read-only or full file system), absurd sizes and templates that
would exhaust memory. A failure after writing began removes what this command wrote, never what
an earlier run wrote; temporary folders a killed command left are removed by the next run."""

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cfx.counterfactual.cli import app

LONG = "x" * 300
WRITERS = ["phantom", "sweep", "train", "stats", "report"]  # commands taking --out


def _writer(command, cohort_or_run, out):
    """``command`` writing to ``out`` (a fresh cohort, run, checkpoint, stats or report)."""
    return {
        "phantom": ["phantom", "--out", out, "--subjects", "1", "--shape", "16,16,16", "-q"],
        "sweep": ["sweep", "-a", "smoking", "--values", "no,yes", "--cohort", cohort_or_run,
                  "--model", "phantom-oracle", "--out", out, "-q"],
        "train": ["train", "--cohort", "phantom", "--out", out, "--steps", "1", "-q"],
        "stats": ["stats", cohort_or_run, "--out", out, "-q"],
        "report": ["report", cohort_or_run, "--out", out, "-q"],
    }[command]


def _source(command, phantom, run):
    return phantom if command in ("phantom", "sweep", "train") else run


@pytest.mark.parametrize("command", WRITERS)
def test_an_output_under_a_file_is_refused(phantom, run, work, refused, command):
    (work / "afile").write_text("mine")
    refused(_writer(command, _source(command, phantom, run), work / "afile" / "out"),
            "afile is a file, so", "cannot be made under it")


@pytest.mark.parametrize("command", ["phantom", "sweep", "stats", "report"])
def test_an_output_that_is_a_file_is_refused(phantom, run, work, refused, command):
    (work / "afile").write_text("mine")
    refused(_writer(command, _source(command, phantom, run), work / "afile"), "afile")


@pytest.mark.parametrize("command", WRITERS)
def test_a_name_too_long_for_the_file_system_is_refused(phantom, run, work, refused, command):
    refused(_writer(command, _source(command, phantom, run), work / "new" / LONG),
            "the name xxxxxxxxxxxxxxxxxxxxxxxx... is 300 bytes; this file system allows 255")


@pytest.mark.parametrize("command", ["stats", "render", "report", "audit"])
def test_a_run_argument_that_is_a_file_is_refused(work, refused, command):
    (work / "afile").write_text("mine")
    out = ["--out", work / "report"] if command == "report" else []
    refused([command, work / "afile", *out, "-q"], "afile: a file, not a run folder")


def test_a_cohort_under_a_file_is_one_line(work, refused):
    (work / "afile").write_text("mine")
    refused(["validate", work / "afile" / "cohort"], "afile/cohort")
    refused(["prompts", "--cohort", work / "afile" / "cohort"], "afile/cohort")


@pytest.fixture
def read_only(monkeypatch):
    """Every file system reports itself read-only (what a read-only mount reports to root too,
    where permission bits would not stop the test)."""
    real = os.statvfs

    def statvfs(path):
        got = real(path)
        return os.statvfs_result((got.f_bsize, got.f_frsize, got.f_blocks, got.f_bfree,
                                  got.f_bavail, got.f_files, got.f_ffree, got.f_favail,
                                  got.f_flag | os.ST_RDONLY, got.f_namemax))

    monkeypatch.setattr(os, "statvfs", statvfs)


@pytest.mark.parametrize("command", WRITERS)
def test_a_read_only_file_system_is_refused_before_writing(phantom, run, work, refused,
                                                           read_only, command):
    refused(_writer(command, _source(command, phantom, run), work / "out"),
            "is on a read-only file system")


@pytest.mark.parametrize("command", ["render", "audit"])
def test_a_read_only_run_is_refused_before_reading_volumes(run, refused, read_only, command):
    refused([command, run, "-q"], f"{run}: ", "is on a read-only file system")


@pytest.fixture
def disk_full_after(monkeypatch):
    """``disk_full_after(n)``: the ``n``-th rename onto a final name (and every later one) fails
    with ENOSPC, as a full disk fails a write."""

    def arm(n):
        real, calls = os.replace, []

        def replace(src, dst, *args, **kwargs):
            calls.append(dst)
            if len(calls) >= n:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
            return real(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, "replace", replace)
        return calls

    return arm


@pytest.mark.parametrize(("command", "after"), [("phantom", 1), ("sweep", 3), ("stats", 1),
                                                ("report", 1)])
def test_a_full_disk_midway_leaves_nothing_behind(phantom, run, work, refused, disk_full_after,
                                                  command, after):
    calls = disk_full_after(after)
    refused(_writer(command, _source(command, phantom, run), work / "new" / "out"),
            "no space left on the device")
    assert len(calls) >= after  # writing had begun


def test_a_full_disk_during_render_removes_the_new_renders(run, refused, disk_full_after):
    calls = disk_full_after(4)
    refused(["render", run, "--size", "32", "-q"], "no space left on the device")
    assert len(calls) >= 4 and not (run / "render").exists()


def test_a_full_disk_keeps_what_an_earlier_run_wrote(run, work, disk_full_after):
    before = {p: p.read_bytes() for p in (run / "stats").rglob("*") if p.is_file()}
    disk_full_after(1)
    result = CliRunner().invoke(app, ["stats", str(run), "-q"])
    assert result.exit_code == 2 and "no space left" in result.stderr
    after = {p: p.read_bytes() for p in (run / "stats").rglob("*") if p.is_file()}
    assert after == before
    assert not [p for p in run.iterdir() if p.name.startswith(".stats.")], "temporaries left"


def test_temporary_folders_of_a_killed_stats_are_removed_by_the_next_run(run):
    dead = run / ".stats.999999999-abcd.part"  # a process id that cannot be running
    old_style = run / ".stats.abcd.part"  # written before temporary names carried the pid
    live = run / f".stats.{os.getppid()}-abcd.part"  # the parent process is alive
    for folder in (dead, old_style, live):
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "regions.csv").write_text("half")
    result = CliRunner().invoke(app, ["stats", str(run), "-q"])
    assert result.exit_code == 0, result.stderr
    assert not dead.exists() and not old_style.exists() and live.exists()
    shutil.rmtree(live)


def test_phantom_refuses_an_absurd_shape(work, refused):
    refused(["phantom", "--out", work / "big", "--shape", "100000,100000,100000", "-q"],
            "--shape", "each from 16 to 1024")
    refused(["phantom", "--out", work / "big", "--shape", "1024,1024,1024", "-q"],
            "--shape", "a phantom has at most 134,217,728 (512³)")


def _checkpoint(work, change):
    folder = Path(shutil.copytree(Path("models/bundled/phantom-gan-64"), work / "ckpt"))
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(("change", "fragment"), [
    (lambda c: c["generator"].update(channels=[8, 16, 32, 200000]),
     "config.json: the generator settings describe"),
    (lambda c: c.pop("text_encoder"), "config.json: text_encoder.name is missing"),
    (lambda c: c["training"]["arguments"].update(patch=[24, 24]),
     "config.json: training.arguments.patch is [24, 24]; it must be three positive integers"),
    (lambda c: c.update(labels=5), "config.json: labels is not a label vocabulary"),
    (lambda c: c.update(hu_window=[1024, -1024]), "config.json: hu_window is [1024, -1024]"),
    (lambda c: c.pop("generator"), "config.json: generator is missing"),
])
def test_a_bad_checkpoint_config_is_one_line(phantom, work, refused, change, fragment):
    folder = _checkpoint(work, change)
    refused(_writer("sweep", phantom, work / "out")[:-3] + ["--model", folder, "--out",
                                                            work / "out", "-q"], fragment)


@pytest.mark.parametrize("expression", ['"x" * 10**10', "[0] * 10**9", "10 ** 10000000"])
def test_a_template_that_would_exhaust_memory_is_refused(run, work, refused, expression):
    (work / "mine.md").write_text(f"# run\n{{{{ {expression} }}}}\n")
    refused(["report", run, "--template", work / "mine.md", "--out", work / "report", "-q"],
            "template user/mine.md: refused by the sandbox", "at most")
