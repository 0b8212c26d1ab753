import pytest

from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.sweep.naming import ct_name, diff_name, value_label, value_labels


def test_labels_are_letters_and_digits():
    assert [value_label(v) for v in ("CTD-ILD", 68, 68.5, -3, "yes")] == [
        "CTDILD", "68", "68p5", "m3", "yes"]
    assert ct_name("P001", "age", "24", 2) == "sub-P001/sub-P001_attr-age_val-24_seed-2_ct.nii.gz"
    assert diff_name("P001", "smoking", "yes", "no", 0) == (
        "sub-P001/sub-P001_attr-smoking_contrast-yes-vs-no_seed-0_diff.nii.gz")


def test_values_that_share_a_label_are_refused():
    with pytest.raises(UserInputError, match=r"--values: a-b, ab cannot be told apart"):
        value_labels(["a-b", "ab"])
