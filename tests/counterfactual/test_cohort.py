import numpy as np
import pytest

from cfx.counterfactual.cohort import check_subject_id, load_cohort
from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.volume import write_volume


def _folder(tmp_path, rows, with_ct=()):
    root = tmp_path / "cohort"
    (root / "masks").mkdir(parents=True)
    for subject in rows.splitlines()[1:]:
        sid = subject.split(",")[0]
        write_volume(root / "masks" / f"{sid}.nii.gz", np.ones((2, 2, 2), np.int16), np.eye(4))
    for sid in with_ct:
        write_volume(root / "ct" / f"{sid}.nii.gz", np.zeros((2, 2, 2)), np.eye(4))
    (root / "clinical.csv").write_text(rows)
    return root


def test_folder_cohort_records_drop_missing_values(tmp_path):
    root = _folder(tmp_path, "subject,age,smoking,sex\nA1,68,yes,male\nB2,,no,\nC3,70.0,,female\n",
                   with_ct=["A1"])
    cohort = load_cohort(root)
    assert [s.id for s in cohort] == ["A1", "B2", "C3"]
    assert cohort.columns == ("age", "smoking", "sex")
    assert cohort.subject("A1").record == {"age": 68, "smoking": "yes", "sex": "male"}
    assert cohort.subject("B2").record == {"smoking": "no"}
    assert cohort.subject("C3").record == {"age": 70, "sex": "female"}
    assert isinstance(cohort.subject("C3").record["age"], int)
    assert cohort.subject("A1").ct.name == "A1.nii.gz" and cohort.subject("B2").ct is None
    assert not cohort.has_ct


def test_csv_cohort_resolves_paths_relative_to_the_table(tmp_path):
    (tmp_path / "m").mkdir()
    write_volume(tmp_path / "m" / "x.nii.gz", np.ones((2, 2, 2), np.int16), np.eye(4))
    write_volume(tmp_path / "m" / "ct.nii.gz", np.ones((2, 2, 2)), np.eye(4))
    (tmp_path / "c.csv").write_text("subject,mask,ct,age\nx,m/x.nii.gz,m/ct.nii.gz,50\n")
    cohort = load_cohort(tmp_path / "c.csv")
    assert cohort.subjects[0].mask == tmp_path / "m" / "x.nii.gz"
    assert cohort.subjects[0].record == {"age": 50} and cohort.has_ct


def test_duplicate_ids(tmp_path):
    root = _folder(tmp_path, "subject,age\nA1,1\nA1,2\n")
    with pytest.raises(UserInputError, match=r"clinical\.csv, row 3: duplicate subject id 'A1' "
                                             r"\(also row 2\)"):
        load_cohort(root)


def test_missing_mask_file(tmp_path):
    root = _folder(tmp_path, "subject,age\nA1,1\n")
    (root / "clinical.csv").write_text("subject,age\nA1,1\nZZ,2\n")
    with pytest.raises(UserInputError, match=r"row 3: no mask for subject 'ZZ'"):
        load_cohort(root)


def test_csv_row_without_mask_and_missing_files(tmp_path):
    (tmp_path / "c.csv").write_text("subject,mask\nx,\n")
    with pytest.raises(UserInputError, match=r"c\.csv, row 2: subject 'x' has no mask"):
        load_cohort(tmp_path / "c.csv")
    (tmp_path / "c.csv").write_text("subject,mask\nx,gone.nii.gz\n")
    with pytest.raises(UserInputError, match=r"row 2: mask file .*gone\.nii\.gz not found"):
        load_cohort(tmp_path / "c.csv")
    (tmp_path / "c.csv").write_text("subject,age\nx,1\n")
    with pytest.raises(UserInputError, match=r"c\.csv: no 'mask' column"):
        load_cohort(tmp_path / "c.csv")


def test_missing_cohort_and_table(tmp_path):
    with pytest.raises(UserInputError, match=r"nowhere: cohort not found"):
        load_cohort(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match=r"empty: cohort folder has no clinical\.csv"):
        load_cohort(tmp_path / "empty")


def test_table_without_subject_column_or_rows(tmp_path):
    root = _folder(tmp_path, "subject,age\n")
    with pytest.raises(UserInputError, match="the table has no subjects"):
        load_cohort(root)
    (root / "clinical.csv").write_text("id,age\nA,1\n")
    with pytest.raises(UserInputError, match=r"no 'subject' column; columns: id, age"):
        load_cohort(root)


@pytest.mark.parametrize("bad", ["../evil", "a/b", "a\\b", "..", "x..y", "sp ace", "é", ""])
def test_unsafe_subject_ids_are_refused(bad):
    with pytest.raises(UserInputError, match=r"row 4: subject id .* is not allowed"):
        check_subject_id(bad, "row 4")


def test_unsafe_id_in_table_names_the_row(tmp_path):
    root = _folder(tmp_path, "subject,age\nok,1\n")
    (root / "clinical.csv").write_text("subject,age\nok,1\n../../etc,2\n")
    with pytest.raises(UserInputError, match=r"clinical\.csv, row 3: subject id '\.\./\.\./etc'"):
        load_cohort(root)


def test_unknown_columns_named_on_the_command_line(tmp_path):
    cohort = load_cohort(_folder(tmp_path, "subject,age,smoking\nA,1,yes\n"))
    cohort.check_columns(["age"], "--covariates")
    with pytest.raises(UserInputError, match=r"--covariates: 'bmi' not a column of .*; columns: "
                                             r"age, smoking"):
        cohort.check_columns(["age", "bmi"], "--covariates")
