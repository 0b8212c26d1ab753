import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.sweep.engine import SweepConfig, noise_seed, run_sweep
from cfx.counterfactual.sweep.lock import run_lock
from cfx.counterfactual.sweep.manifest import sha256


def _config(out, **kw):
    return SweepConfig(**{"attribute": "smoking", "values": ("yes", "no"), "seeds": (0, 1),
                          "out": out, "quiet": True, **kw})


def _tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.nii.gz"))}


def test_sweep_writes_paired_cts_and_diffs_on_the_mask_grid(tmp_path, cohort, fake, affine, labels):
    result = run_sweep(_config(tmp_path / "run", reference="no"), cohort, fake)
    assert result.items == 12 and result.generated == 12 and result.reused == 0
    assert len(fake.calls) == 6  # one call per subject and seed: values share the noise
    assert len({c[1] for c in fake.calls}) == 6  # every subject and seed has its own noise
    assert all(values == ["yes", "no"] for _, _, values in fake.calls)
    run = tmp_path / "run"
    yes = nib.load(run / "sub-A1/sub-A1_attr-smoking_val-yes_seed-1_ct.nii.gz")
    no = nib.load(run / "sub-A1/sub-A1_attr-smoking_val-no_seed-1_ct.nii.gz")
    diff = nib.load(run / "sub-A1/sub-A1_attr-smoking_contrast-yes-vs-no_seed-1_diff.nii.gz")
    np.testing.assert_array_equal(yes.affine, affine)
    lung = np.isin(labels, (1, 2))
    np.testing.assert_allclose(diff.get_fdata()[lung], 20.0, atol=1e-3)
    np.testing.assert_allclose(diff.get_fdata()[~lung], 0.0, atol=1e-3)
    np.testing.assert_allclose(yes.get_fdata() - no.get_fdata(), diff.get_fdata(), atol=1e-3)
    seed0 = nib.load(run / "sub-A1/sub-A1_attr-smoking_val-yes_seed-0_ct.nii.gz").get_fdata()
    assert not np.allclose(seed0, yes.get_fdata())


def test_manifest_records_prompts_checksums_and_missing_attributes(tmp_path, cohort, fake):
    run_sweep(_config(tmp_path / "run"), cohort, fake)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["model"]["content_hash"] == "sha256:fake"
    assert manifest["subjects_without_attribute"] == ["B2"]
    prompts = {(i["subject"], i["value"]) for i in manifest["items"]
               if "Smoker: yes" in i["prompt"]}
    assert prompts == {("A1", "yes"), ("B2", "yes"), ("C3", "yes")}
    assert len(manifest["files"]) == 18
    for entry in manifest["files"]:
        assert sha256(tmp_path / "run" / entry["path"]) == entry["sha256"]
    description = json.loads((tmp_path / "run" / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "cfx"


def test_resume_regenerates_only_missing_or_corrupt_files(tmp_path, cohort, fake):
    run = tmp_path / "run"
    run_sweep(_config(run), cohort, fake)
    before = _tree(run)
    (run / "sub-B2/sub-B2_attr-smoking_val-no_seed-0_ct.nii.gz").unlink()
    corrupt = run / "sub-C3/sub-C3_attr-smoking_contrast-no-vs-yes_seed-1_diff.nii.gz"
    corrupt.write_bytes(b"garbage")
    fake.calls.clear()
    result = run_sweep(_config(run, resume=True), cohort, fake)
    assert sorted((c[0], c[1]) for c in fake.calls) == [("B2", noise_seed("B2", 0)),
                                                        ("C3", noise_seed("C3", 1))]
    assert result.reused == 8 and result.generated == 4
    assert _tree(run) == before


def test_killed_sweep_resumes_to_identical_bytes(tmp_path, cohort_dir, fake):
    from cfx.counterfactual.cohort import load_cohort

    reference = tmp_path / "reference"
    run_sweep(_config(reference), load_cohort(cohort_dir), fake)
    killed = tmp_path / "killed"
    script = f"""
import os, signal, sys
sys.path.insert(0, {str(os.path.dirname(__file__))!r})
from conftest import FakeGenerator
from cfx.counterfactual.cohort import load_cohort
import cfx.counterfactual.sweep.engine as engine
from cfx.counterfactual.sweep.engine import SweepConfig, noise_seed, run_sweep
from pathlib import Path

engine._SAVE_EVERY_S = 0.0  # record every group, so what a kill leaves is known exactly

class Dies(FakeGenerator):
    def generate(self, *args):
        if len(self.calls) == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().generate(*args)

run_sweep(SweepConfig("smoking", ("yes", "no"), (0, 1), Path({str(killed)!r}), quiet=True),
          load_cohort({str(cohort_dir)!r}), Dies())
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    assert 0 < len(_tree(killed)) < len(_tree(reference))
    recorded = {e["path"] for e in json.loads((killed / "manifest.json").read_text())["files"]}
    # groups 1 and 2, and group 3 if its files (written while group 4 starts) beat the kill
    assert len(recorded) in (6, 9)
    fake.calls.clear()
    run_sweep(_config(killed, resume=True), load_cohort(cohort_dir), fake)
    assert len(fake.calls) == 6 - len(recorded) // 3  # every group not recorded, nothing twice
    assert _tree(killed) == _tree(reference)


def test_resume_with_other_settings_names_them(tmp_path, cohort, fake):
    run_sweep(_config(tmp_path / "run"), cohort, fake)
    with pytest.raises(UserInputError, match=r"cannot resume with different settings \(seeds: "
                                             r"run has \[0, 1\], now \[0, 2\]\)"):
        run_sweep(_config(tmp_path / "run", seeds=(0, 2), resume=True), cohort, fake)


def test_non_empty_folder_without_resume_is_refused(tmp_path, cohort, fake):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(UserInputError, match=r"run: folder exists and is not empty; add --resume"):
        run_sweep(_config(tmp_path / "run"), cohort, fake)
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["notes.txt"]


def test_second_sweep_into_a_locked_folder_is_refused(tmp_path, cohort, fake):
    with run_lock(tmp_path / "run"):
        with pytest.raises(UserInputError, match="another cfx sweep is writing to this folder"):
            run_sweep(_config(tmp_path / "run"), cohort, fake)


@pytest.mark.parametrize(("kw", "message"), [
    ({"attribute": "bmi"}, r"attribute 'bmi' is not known; known attributes: age, sex"),
    ({"values": ("yes",)}, r"--values: give at least two values of smoking"),
    ({"reference": "maybe"}, r"--reference: 'maybe' is not one of --values \(yes, no\)"),
    ({"seeds": (0, 0)}, r"--seeds: \[0, 0\] must be distinct integers >= 0"),
])
def test_bad_settings_fail_before_writing(tmp_path, cohort, fake, kw, message):
    with pytest.raises(UserInputError, match=message):
        run_sweep(_config(tmp_path / "run", **kw), cohort, fake)
    assert not (tmp_path / "run").exists() and fake.calls == []


def test_mask_outside_the_vocabulary_fails_before_writing(tmp_path, cohort_dir, fake, labels,
                                                          affine):
    from cfx.counterfactual.cohort import load_cohort
    from cfx.counterfactual.volume import write_volume

    bad = labels.copy()
    bad[0, 0, 0] = 9
    write_volume(cohort_dir / "masks" / "C3.nii.gz", bad, affine)
    with pytest.raises(UserInputError, match=r"C3\.nii\.gz: mask has labels \[9\] outside"):
        run_sweep(_config(tmp_path / "run"), load_cohort(cohort_dir), fake)
    assert not (tmp_path / "run").exists() and fake.calls == []


def _manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


def _same_record(a, b):
    """Manifests of two runs of one sweep agree on everything but when and how they were run."""
    drop = ("created", "command", "shards")
    return {k: v for k, v in a.items() if k not in drop} == {
        k: v for k, v in b.items() if k not in drop}


def test_shard_slices_cover_every_group_once_and_are_balanced():
    from cfx.counterfactual.sweep.engine import shard_slice

    for n_groups in (0, 1, 5, 6, 17):
        for count in (1, 2, 3, 7):
            slices = [shard_slice(n_groups, i, count) for i in range(1, count + 1)]
            assert [k for s in slices for k in s] == list(range(n_groups))
            assert max(map(len, slices)) - min(map(len, slices)) <= 1


def test_shards_run_one_after_another_equal_one_unsharded_run(tmp_path, cohort, fake):
    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    run_sweep(_config(whole), cohort, fake)
    results = [run_sweep(_config(sharded, shard=(i, 3)), cohort, fake) for i in (1, 2, 3)]
    assert [r.items for r in results] == [4, 4, 4]  # 6 groups of 2 values, 2 groups per shard
    assert [r.complete for r in results] == [False, False, True]
    assert _tree(sharded) == _tree(whole)
    merged = _manifest(sharded)
    assert merged["complete"] and _same_record(merged, _manifest(whole))
    assert merged["shards"] == [f"manifest.shard-{i}-of-3.json" for i in (1, 2, 3)]
    shard = json.loads((sharded / "manifest.shard-2-of-3.json").read_text())
    assert shard["shard"] == "2/3" and shard["complete"] and len(shard["files"]) == 6
    assert shard["groups"] == [["B2", 0], ["B2", 1]]


def test_an_unfinished_sharded_run_is_incomplete_and_resumes_unsharded(tmp_path, cohort, fake):
    run = tmp_path / "run"
    result = run_sweep(_config(run, shard=(2, 2)), cohort, fake)
    assert not result.complete and not _manifest(run)["complete"]
    assert len(_manifest(run)["files"]) == 9  # B2 seed 1 and C3: 3 groups of 3 files
    fake.calls.clear()
    resumed = run_sweep(_config(run, resume=True), cohort, fake)
    assert resumed.complete and resumed.generated == 6 and resumed.reused == 6
    assert sorted(c[0] for c in fake.calls) == ["A1", "A1", "B2"]
    whole = tmp_path / "whole"
    run_sweep(_config(whole), cohort, fake)
    assert _tree(run) == _tree(whole)


def test_concurrent_shards_in_subprocesses_equal_one_unsharded_run(tmp_path, cohort_dir, cohort,
                                                                   fake):
    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    run_sweep(_config(whole), cohort, fake)
    script = """
import sys
sys.path.insert(0, {here!r})
from conftest import FakeGenerator
from cfx.counterfactual.cohort import load_cohort
from cfx.counterfactual.sweep.engine import SweepConfig, run_sweep
from pathlib import Path

run_sweep(SweepConfig("smoking", ("yes", "no"), (0, 1), Path({out!r}), quiet=True,
                      shard=({i}, 2)), load_cohort({cohort!r}), FakeGenerator())
"""
    procs = [subprocess.Popen([sys.executable, "-c", script.format(
        here=os.path.dirname(__file__), out=str(sharded), cohort=str(cohort_dir), i=i)],
        stderr=subprocess.PIPE, text=True) for i in (1, 2)]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read()
    assert _tree(sharded) == _tree(whole)
    assert _manifest(sharded)["complete"] and _same_record(_manifest(sharded), _manifest(whole))


def test_a_shard_refuses_a_folder_an_unsharded_sweep_holds_and_vice_versa(tmp_path, cohort,
                                                                          fake):
    from cfx.counterfactual.sweep.lock import shard_lock

    with run_lock(tmp_path / "run"):
        with pytest.raises(UserInputError, match="another cfx sweep is writing to this folder"):
            run_sweep(_config(tmp_path / "run", shard=(1, 2)), cohort, fake)
    with shard_lock(tmp_path / "run", 2, 2):
        with pytest.raises(UserInputError, match="another cfx sweep is writing to this folder"):
            run_sweep(_config(tmp_path / "run"), cohort, fake)
        with pytest.raises(UserInputError, match=r"shard 2/2 is already running into this"):
            run_sweep(_config(tmp_path / "run", shard=(2, 2)), cohort, fake)
        run_sweep(_config(tmp_path / "run", shard=(1, 2)), cohort, fake)  # other shards may run
    assert fake.calls and not _manifest(tmp_path / "run")["complete"]


def test_a_shard_refuses_a_run_with_other_settings_or_a_folder_that_is_no_run(tmp_path, cohort,
                                                                              fake):
    run_sweep(_config(tmp_path / "run", shard=(1, 2)), cohort, fake)
    with pytest.raises(UserInputError, match=r"cannot resume with different settings \(seeds: "
                                             r"run has \[0, 1\], now \[0, 2\]\)"):
        run_sweep(_config(tmp_path / "run", seeds=(0, 2), shard=(2, 2)), cohort, fake)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(UserInputError, match=r"other: not a cfx run \(no manifest.json\)"):
        run_sweep(_config(tmp_path / "other", shard=(1, 2)), cohort, fake)
    assert [p.name for p in (tmp_path / "other").iterdir()] == ["notes.txt"]


@pytest.mark.parametrize(("kw", "message"), [
    ({"shard": (3, 2)}, r"--shard: 3/2 is out of range; give i/n with 1 <= i <= n"),
    ({"shard": (0, 2)}, r"--shard: 0/2 is out of range"),
    ({"batch_size": 0}, r"--batch-size: got 0; give an integer >= 1"),
    ({"device": "tpu"}, r"--device: 'tpu' is not one of auto, cpu, cuda"),
])
def test_bad_shard_batch_or_device_fail_before_writing(tmp_path, cohort, fake, kw, message):
    with pytest.raises(UserInputError, match=message):
        run_sweep(_config(tmp_path / "run", **kw), cohort, fake)
    assert not (tmp_path / "run").exists() and fake.calls == []


def test_device_and_batch_size_reach_generators_that_take_them(tmp_path, cohort,
                                                              configurable_fake):
    generator = configurable_fake
    run_sweep(_config(tmp_path / "run", device="cpu", batch_size=4), cohort, generator)
    assert generator.configured == [("cpu", 4)] and len(generator.calls) == 6


def test_oracle_sweep_differences_equal_the_phantoms_exact_maps(tmp_path, phantom_dir):
    from cfx.counterfactual.cohort import load_cohort
    from cfx.counterfactual.phantom import PhantomOracle
    from cfx.counterfactual.sweep.generators import PhantomOracleGenerator

    cohort = load_cohort(phantom_dir)
    run_sweep(_config(tmp_path / "run", seeds=(3,), reference="no"), cohort,
              PhantomOracleGenerator(cohort))
    oracle = PhantomOracle.from_cohort(phantom_dir)
    for subject in oracle.subject_ids:
        name = f"sub-{subject}/sub-{subject}_attr-smoking_contrast-yes-vs-no_seed-3_diff.nii.gz"
        diff = nib.load(tmp_path / "run" / name)
        np.testing.assert_allclose(diff.get_fdata(), oracle.expected_difference(
            subject, "smoking", "yes", "no"), atol=1e-4)
        np.testing.assert_array_equal(diff.affine, oracle.affine())
        yes = nib.load(tmp_path / "run" / name.replace("contrast-yes-vs-no", "val-yes")
                       .replace("_diff", "_ct"))
        np.testing.assert_allclose(yes.get_fdata(), oracle.render(
            subject, {"smoking": "yes"}, noise_seed(subject, 3)), atol=1e-3)



def test_a_model_that_refuses_the_cohort_stops_the_sweep_before_writing(tmp_path, cohort, fake):
    def check(cohort, attribute):
        raise UserInputError("--model gan: text encoder 'x' gives 384-d embeddings but the model "
                             "was trained on 768-d ones")

    fake.check = check
    with pytest.raises(UserInputError, match=r"--model gan: text encoder 'x' gives 384-d"):
        run_sweep(_config(tmp_path / "run"), cohort, fake)
    assert not (tmp_path / "run").exists() and fake.calls == []
