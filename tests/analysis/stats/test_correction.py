"""Holm and BH adjustment against hand computations; NaN entries stay out of the family."""

import numpy as np
import pytest

from cfx.analysis.stats.correction import adjust_pvalues


def test_holm_and_bh_by_hand():
    p = np.array([0.01, 0.04, 0.03, 0.20])
    # Holm: sorted 0.01, 0.03, 0.04, 0.20 times 4, 3, 2, 1, then running max.
    assert adjust_pvalues(p, "holm") == pytest.approx([0.04, 0.09, 0.09, 0.20])
    # BH: sorted p * 4 / rank = 0.04, 0.06, 0.0533, 0.20, then running min from the top.
    assert adjust_pvalues(p, "fdr") == pytest.approx([0.04, 0.05333333, 0.05333333, 0.20])


def test_nan_entries_are_left_out_of_the_family():
    p = np.array([0.01, np.nan, 0.04])
    holm = adjust_pvalues(p, "holm")
    assert np.isnan(holm[1])
    assert holm[[0, 2]] == pytest.approx(adjust_pvalues([0.01, 0.04], "holm"))
    assert np.isnan(adjust_pvalues([np.nan, np.nan], "fdr")).all()


def test_correction_errors():
    with pytest.raises(ValueError, match=r"method: expected one of \['fdr', 'holm'\], got 'bonf'"):
        adjust_pvalues([0.1], "bonf")
    with pytest.raises(ValueError, match=r"pvalues: expected values in \[0, 1\] or NaN, got min "
                                         r"0.1 and max 1.5"):
        adjust_pvalues([0.1, 1.5], "holm")
