import json
import sys

import nibabel as nib
import numpy as np
import pytest

from cfx.counterfactual.cohort import load_cohort
from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.labels import DEFAULT_VOCABULARY
from cfx.counterfactual.sweep.engine import SweepConfig, run_sweep
from cfx.counterfactual.sweep.executors import (
    GroupJob,
    LocalExecutor,
    RayExecutor,
    Work,
    _chunks,
    compresslevel,
    configure,
    resolve_device,
    resolve_executor,
    run_groups,
)
from cfx.counterfactual.sweep.generators import PhantomOracleGenerator, Request
from cfx.counterfactual.sweep.manifest import sha256
from cfx.counterfactual.volume import read_labels


def _tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.nii.gz"))}


def _job(cohort, write):
    subject = cohort.subject("A1")
    requests = tuple(Request(v, {**subject.record, "smoking": v}, f"Smoker: {v}.",
                             {"smoking": f"Smoker: {v}."})
                     for v in ("no", "yes"))
    return GroupJob(subject, 7, requests, ("no_ct.nii.gz", "yes_ct.nii.gz"),
                    ((1, "yes-vs-no_diff.nii.gz"),), 0, frozenset(write))


def test_run_group_writes_only_what_is_missing_and_returns_its_checksums(tmp_path, cohort, fake,
                                                                         labels, affine):
    work = Work(tmp_path, "smoking", DEFAULT_VOCABULARY)
    job = _job(cohort, {"yes_ct.nii.gz", "yes-vs-no_diff.nii.gz"})
    [(returned, written)] = list(run_groups(fake, [job], work))
    assert returned is job
    assert sorted(written) == ["yes-vs-no_diff.nii.gz", "yes_ct.nii.gz"]
    assert not (tmp_path / "no_ct.nii.gz").exists()
    assert all(sha256(tmp_path / rel) == digest for rel, digest in written.items())
    assert fake.calls == [("A1", 7, ["no", "yes"])]
    diff = nib.load(tmp_path / "yes-vs-no_diff.nii.gz")
    np.testing.assert_array_equal(diff.affine, affine)
    np.testing.assert_allclose(diff.get_fdata()[np.isin(labels, (1, 2))], 20.0, atol=1e-3)


def test_noisy_float_volumes_are_stored_and_sparse_or_integral_ones_deflated(rng):
    noisy = rng.normal(-800, 30, (16, 12, 10)).astype(np.float32)
    sparse = np.zeros_like(noisy)
    sparse[:4] = noisy[:4]  # a quarter non-zero
    assert compresslevel(noisy) == 0 and compresslevel(sparse) == 1
    assert compresslevel(np.rint(noisy)) == 1


def test_run_group_files_read_back_exactly_whatever_their_gzip_level(tmp_path, cohort, fake):
    work = Work(tmp_path, "smoking", DEFAULT_VOCABULARY)
    job = _job(cohort, {"no_ct.nii.gz", "yes_ct.nii.gz", "yes-vs-no_diff.nii.gz"})
    list(run_groups(fake, [job], work))
    mask = read_labels(cohort.subject("A1").mask)
    volumes = [np.float32(v) for v in fake.generate(cohort.subject("A1"), mask, "smoking",
                                                     job.requests, 7)]
    ct = nib.load(tmp_path / "no_ct.nii.gz")
    np.testing.assert_array_equal(ct.get_fdata(dtype=np.float32), volumes[0])
    assert (tmp_path / "no_ct.nii.gz").stat().st_size > volumes[0].nbytes  # stored
    diff = nib.load(tmp_path / "yes-vs-no_diff.nii.gz").get_fdata(dtype=np.float32)
    np.testing.assert_array_equal(diff, volumes[1] - volumes[0])
    assert (tmp_path / "yes-vs-no_diff.nii.gz").stat().st_size < volumes[0].nbytes / 4


def test_chunks_are_contiguous_cover_every_job_and_differ_by_at_most_one():
    for n_jobs, n_tasks in [(1, 1), (5, 2), (7, 3), (12, 4), (3, 3)]:
        chunks = _chunks(n_jobs, n_tasks)
        assert [k for c in chunks for k in c] == list(range(n_jobs))
        assert len(chunks) == n_tasks
        assert max(map(len, chunks)) - min(map(len, chunks)) <= 1


def test_devices_resolve_and_cuda_without_a_gpu_is_refused(monkeypatch):
    import torch

    assert resolve_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    with pytest.raises(UserInputError, match=r"--device cuda: no CUDA GPU is visible here"):
        LocalExecutor().check("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"


def test_configure_is_called_only_on_generators_that_have_it(fake, configurable_fake):
    configure(fake, "cpu", 8)  # no configure method: nothing to do, nothing raised
    configure(configurable_fake, "cpu", 8)
    assert configurable_fake.configured == [("cpu", 8)]


def test_without_ray_the_ray_executor_is_a_one_line_error(monkeypatch, tmp_path, cohort, fake):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(UserInputError, match=r"--executor ray: Ray is not installed; install it "
                                             r"with pip install 'cfx\[ray\]'"):
        run_sweep(SweepConfig("smoking", ("yes", "no"), (0,), tmp_path / "run", quiet=True),
                  cohort, fake, executor=resolve_executor("ray"))
    assert not (tmp_path / "run").exists() and fake.calls == []


def test_unknown_executor_and_bad_task_count_are_refused():
    with pytest.raises(UserInputError, match=r"--executor: 'dask' is not one of local, ray"):
        resolve_executor("dask")
    with pytest.raises(UserInputError, match=r"tasks: got 0; give an integer >= 1"):
        RayExecutor(tasks=0)


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'cfx[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_executor_writes_the_same_bytes_and_manifest_as_the_local_one(tmp_path, phantom_dir,
                                                                          ray_instance):
    cohort = load_cohort(phantom_dir)
    generator = PhantomOracleGenerator(cohort)
    local, remote = tmp_path / "local", tmp_path / "ray"
    run_sweep(SweepConfig("smoking", ("yes", "no"), (0, 1), local, quiet=True), cohort, generator)
    result = run_sweep(SweepConfig("smoking", ("yes", "no"), (0, 1), remote, quiet=True), cohort,
                       generator, executor=RayExecutor(tasks=3))
    assert result.generated == 12 and result.complete
    assert _tree(remote) == _tree(local) and len(_tree(local)) == 18
    manifests = [json.loads((f / "manifest.json").read_text()) for f in (local, remote)]
    assert manifests[0]["files"] == manifests[1]["files"] and manifests[1]["complete"]
