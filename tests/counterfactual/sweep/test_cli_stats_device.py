"""cfx stats --device: where the voxel maps' max-T products run, and its user errors."""

import json

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

import cfx.counterfactual.stats as stats_engine
from cfx.counterfactual.cli import app
from cfx.counterfactual.cohort import load_cohort
from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.stats import StatsConfig, run_stats
from cfx.counterfactual.sweep.engine import SweepConfig, run_sweep
from cfx.counterfactual.volume import write_volume

runner = CliRunner()
torch = pytest.importorskip("torch")
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible")
STEM = "attr-smoking_contrast-yes-vs-no_stat-"


@pytest.fixture
def run(tmp_path, labels, affine, fake):
    """A smoking sweep of 12 subjects: +20 HU in the lungs, seed noise of 20 HU sd."""
    root = tmp_path / "cohort"
    ids = [f"S{i:02d}" for i in range(12)]
    for sid in ids:
        write_volume(root / "masks" / f"{sid}.nii.gz", labels, affine)
    (root / "clinical.csv").write_text("subject,smoking\n" + "".join(f"{s},no\n" for s in ids))
    plain = fake.generate

    def generate(subject, mask, attribute, requests, seed):  # the noise differs per value
        volumes = plain(subject, mask, attribute, requests, seed)
        rng = np.random.default_rng([seed, 7])
        return [v + (r.value == "yes") * rng.normal(0, 20, v.shape).astype(np.float32)
                for v, r in zip(volumes, requests, strict=True)]

    fake.generate = generate
    out = tmp_path / "run"
    run_sweep(SweepConfig("smoking", ("no", "yes"), (0,), out, quiet=True), load_cohort(root),
              fake)
    return out


@pytest.fixture
def devices(monkeypatch):
    """The ``device`` every one_sample_permutation call of cfx stats received."""
    received = []
    real = stats_engine.one_sample_permutation

    def spy(*args, **kwargs):
        received.append(kwargs["device"])
        return real(*args, **kwargs)

    monkeypatch.setattr(stats_engine, "one_sample_permutation", spy)
    return received


def test_cpu_runs_numpy_and_says_so(run, tmp_path, devices):
    result = runner.invoke(app, ["stats", str(run), "--voxelwise", "--permutations", "300",
                                 "--no-zones", "--device", "cpu", "--out", str(tmp_path / "stats")])
    assert result.exit_code == 0, result.stderr
    assert devices == [None]
    entry = json.loads((tmp_path / "stats" / "summary.json").read_text())["voxelwise"]
    assert entry["yes-vs-no"]["device"] == "cpu"
    assert "max-T products on" not in result.stderr


def test_maps_from_torch_products_equal_the_numpy_maps(run, tmp_path, monkeypatch, devices):
    def written(out):
        return {stat: nib.load(out / f"{STEM}{stat}.nii.gz").get_fdata()
                for stat in ("t", "pfwe", "logpfwe")}

    config = dict(run=run, voxelwise=True, permutations=300, zones=False, quiet=True)
    run_stats(StatsConfig(**config, device="cpu", out=tmp_path / "numpy"))
    monkeypatch.setattr(stats_engine, "_voxel_device", lambda device: "cpu")  # torch's CPU
    lines = []
    run_stats(StatsConfig(**config, out=tmp_path / "torch"), note=lines.append)
    assert lines == ["voxel maps yes-vs-no: 300 random sign flips; max-T products on cpu"]
    assert devices == [None, "cpu"]
    numpy_maps, torch_maps = written(tmp_path / "numpy"), written(tmp_path / "torch")
    assert np.nanmin(numpy_maps["pfwe"]) < 0.05  # some voxels significant: a real comparison
    for stat, values in numpy_maps.items():
        np.testing.assert_array_equal(torch_maps[stat], values, err_msg=stat)


@no_gpu
def test_cuda_without_a_gpu_is_one_line_exit_2_and_nothing_written(run, tmp_path):
    out = tmp_path / "stats"
    result = runner.invoke(app, ["stats", str(run), "--voxelwise", "--device", "cuda",
                                 "--out", str(out)])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "cfx: error: --device cuda: no CUDA GPU is visible here; use --device auto or cpu"]
    assert not out.exists()


def test_cuda_without_voxel_maps_is_refused(run, tmp_path):
    with pytest.raises(UserInputError, match=r"^--device cuda: only the voxel maps use a GPU; "
                                             r"add --voxelwise or drop --device$"):
        run_stats(StatsConfig(run=run, device="cuda", out=tmp_path / "stats"))
    assert not (tmp_path / "stats").exists()


def test_auto_asks_torch_only_where_a_gpu_can_exist(tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(stats_engine, "resolve_device", lambda d: asked.append(d) or "cpu")
    monkeypatch.setattr(stats_engine, "_GPU_DEVICE_FILES", (str(tmp_path / "no-driver"),))
    assert stats_engine._voxel_device("auto") is None
    assert stats_engine._voxel_device("cpu") is None
    assert asked == [] or not stats_engine.sys.platform.startswith("linux")
    monkeypatch.setattr(stats_engine, "_GPU_DEVICE_FILES", (str(tmp_path),))  # a driver
    assert stats_engine._voxel_device("auto") is None
    monkeypatch.setattr(stats_engine, "resolve_device", lambda d: asked.append(d) or "cuda")
    assert stats_engine._voxel_device("auto") == "cuda"
    assert asked[-2:] == ["auto", "auto"]
