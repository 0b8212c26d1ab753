"""``benchmarks/training_fit.py``: region means of real and drawn training CTs per attribute
value, each checked against a computation here (numpy masks, the sweep's generator)."""

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from cfx.counterfactual.cli import app
from cfx.counterfactual.cohort import load_cohort
from cfx.counterfactual.prompts import DEFAULT_TEMPLATE
from cfx.counterfactual.sweep.generators import Request, SamplingOptions
from cfx.counterfactual.sweep.learned import learned_generator
from cfx.counterfactual.volume import read_labels, read_volume
from tests.conftest import load_benchmark
from tests.models.conftest import save_tiny_bert

runner = CliRunner()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A phantom cohort of 4 subjects with CTs (16³, 20 mm) and a tiny GAN trained on it."""
    root = tmp_path_factory.mktemp("fit")
    bert = str(save_tiny_bert(root / "bert"))
    result = runner.invoke(app, ["phantom", "--out", str(root / "cohort"), "--subjects", "4",
                                 "--shape", "16,16,16", "--spacing", "20", "--quiet"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["train", "--cohort", str(root / "cohort"), "--out",
                                 str(root / "gan"), "--steps", "2", "--patch", "16",
                                 "--channels", "4,8", "--batch-size", "2", "--text-encoder", bert,
                                 "--device", "cpu", "--workers", "0", "--cache",
                                 str(root / "cache"), "-q"])
    assert result.exit_code == 0, result.output
    return root


def _outside_air(ct, labels):
    """Air below -500 HU, unlabelled, connected to a face of the volume (written here with
    scipy, independently of cfx.analysis.controls)."""
    components, _ = ndimage.label((ct < -500) & (labels == 0))
    border = np.zeros(ct.shape, bool)
    border[[0, -1], :, :] = border[:, [0, -1], :] = border[:, :, [0, -1]] = True
    return np.isin(components, np.unique(components[border & (components > 0)]))


def test_the_table_holds_each_groups_real_and_drawn_region_means(setup):
    fit = load_benchmark("training_fit")
    table = fit.fit_table(setup / "gan", setup / "cohort", 3, "smoking")
    cohort = load_cohort(setup / "cohort")
    model = learned_generator(setup / "gan", SamplingOptions(None, None, False, None))
    expected = {}
    for index, subject in enumerate(cohort.subjects[:3]):
        real = nib.load(subject.ct).get_fdata()
        labels = np.asarray(nib.load(subject.mask).dataobj)
        (drawn,) = model.generate(subject, read_labels(subject.mask), "smoking",
                                  [Request.build(subject.record["smoking"], subject.record,
                                                 DEFAULT_TEMPLATE)],
                                  seed=1000 + index, ct=read_volume(subject.ct))
        air = _outside_air(real, labels)
        regions = {"lung": labels > 0, "body": ~air & (labels == 0), "air": air}
        group = expected.setdefault(subject.record["smoking"], {r: [] for r in regions})
        for region, where in regions.items():
            group[region].append([real[where].mean(), drawn[where].mean()])
    assert set(table) == set(expected)
    for value, group in expected.items():
        for region, rows in group.items():
            np.testing.assert_allclose(table[value][region], rows, rtol=1e-5)
    assert all(abs(row[0] + 1000) < 25 for g in expected.values() for row in g["air"])


def test_main_prints_one_row_per_value_and_refuses_a_cohort_without_cts(setup, tmp_path,
                                                                       capsys):
    fit = load_benchmark("training_fit")
    assert fit.main([str(setup / "gan"), str(setup / "cohort"), "--subjects", "4"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    values = {load_cohort(setup / "cohort").subjects[i].record["smoking"] for i in range(4)}
    assert [r.split("|")[1].strip() for r in rows[1:]] == sorted(values)
    masks_only = tmp_path / "masks.csv"
    lines = (setup / "cohort" / "clinical.csv").read_text().splitlines()
    masks_only.write_text("\n".join([lines[0] + ",mask"] + [
        f"{line},{setup / 'cohort' / 'masks' / (line.split(',')[0] + '.nii.gz')}"
        for line in lines[1:]]) + "\n")
    assert fit.main([str(setup / "gan"), str(masks_only)]) == 2
    assert "has no CTs" in capsys.readouterr().err
