import os
import stat

import numpy as np
import pytest

from cfx.counterfactual.atomic import current_umask, staged_dir, write_text
from cfx.counterfactual.volume import write_volume


def test_write_text_replaces_atomically(tmp_path):
    write_text(tmp_path / "a.json", "one")
    write_text(tmp_path / "a.json", "two")
    assert (tmp_path / "a.json").read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_staged_dir_appears_only_on_success(tmp_path):
    with staged_dir(tmp_path / "out") as tmp:
        (tmp / "f.txt").write_text("x")
        assert not (tmp_path / "out").exists()
    assert (tmp_path / "out" / "f.txt").read_text() == "x"

    with pytest.raises(RuntimeError), staged_dir(tmp_path / "failed") as tmp:
        (tmp / "f.txt").write_text("x")
        raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_staged_dir_fills_an_existing_empty_folder(tmp_path):
    (tmp_path / "out").mkdir()
    with staged_dir(tmp_path / "out") as tmp:
        (tmp / "f.txt").write_text("x")
    assert (tmp_path / "out" / "f.txt").exists()


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), [
    (0o022, 0o644, 0o755), (0o002, 0o664, 0o775), (0o077, 0o600, 0o700)])
def test_outputs_follow_the_umask_like_open_and_mkdir(tmp_path, umask, mask, file_mode, dir_mode):
    umask(mask)
    assert current_umask() == mask
    write_text(tmp_path / "a.json", "one")
    with staged_dir(tmp_path / "out") as tmp:
        (tmp / "f.txt").write_text("x")
    write_volume(tmp_path / "v.nii.gz", np.zeros((2, 2, 2)), np.eye(4))
    (tmp_path / "plain.txt").write_text("reference")  # what open() gives under this umask
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == file_mode
    for name in ("a.json", "v.nii.gz"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == file_mode, name
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == dir_mode
