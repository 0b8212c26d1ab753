import pytest

from counterfactual.atomic import staged_dir, write_text


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
