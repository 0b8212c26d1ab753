"""The sweep with a diffusion checkpoint: shared noise, guidance, from-CT, manifest, errors."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cfx.counterfactual.cli import app
from cfx.counterfactual.cohort import load_cohort
from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.phantom import PhantomSettings, write_phantom
from cfx.counterfactual.prompts import DEFAULT_TEMPLATE
from cfx.counterfactual.sweep.generators import resolve_generator
from cfx.counterfactual.sweep.learned import LearnedDiffusionGenerator, LearnedGenerator
from cfx.counterfactual.sweep.request import Request, SamplingOptions
from cfx.counterfactual.volume import read_labels, read_volume
from cfx.models.samplers import SAMPLERS, DDIMSampler
from tests.models.conftest import save_tiny_bert

runner = CliRunner()
_TRAIN = ("--cohort", "phantom:4", "--steps", "2", "--patch", "16", "--phantom-shape", "16",
          "--batch-size", "2", "--device", "cpu", "-q")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("diffusion")
    bert = str(save_tiny_bert(root / "bert"))
    for arch, extra in (("diffusion", ("--channels", "8,8", "--level-rows", "64")),
                        ("gan", ("--channels", "4,8"))):
        result = runner.invoke(app, ["train", "--arch", arch, "--out", str(root / arch),
                                     "--text-encoder", bert, *extra, *_TRAIN])
        assert result.exit_code == 0, result.output
    write_phantom(root / "cohort", PhantomSettings(subjects=2, shape=(16, 16, 16),
                                                   spacing=(20.0,) * 3), quiet=True)
    return root


@pytest.fixture(scope="module")
def cohort(root):
    return load_cohort(root / "cohort")


def _requests(*values):
    return [Request(v, {"smoking": v}, f"Lung CT scan: Smoker: {v}.",
                    {"smoking": f"Lung CT scan: Smoker: {v}."}) for v in values]


def _generate(model, cohort, values, seed=7):
    subject = cohort.subjects[0]
    return model.generate(subject, read_labels(subject.mask), "smoking", _requests(*values), seed)


def test_resolves_by_architecture_with_the_checkpoints_defaults(root, cohort):
    model = resolve_generator(str(root / "diffusion"), cohort)
    assert isinstance(model, LearnedDiffusionGenerator)
    assert model.sampling == {"steps": 20, "guidance": 1.0, "eta": 0.0, "from_ct": False,
                              "strength": None}
    assert model.roi == (32, 32, 32)  # twice the training patch, as the GAN
    gan = resolve_generator(str(root / "gan"), cohort)
    assert type(gan) is LearnedGenerator and not hasattr(gan, "sampling")
    options = SamplingOptions(guidance=2.0, steps=5, from_ct=True)
    assert resolve_generator(str(root / "diffusion"), cohort, options).sampling == {
        "steps": 5, "guidance": 2.0, "eta": 0.0, "from_ct": True, "strength": 0.6}


def test_shared_noise_seeds_and_guidance(root, cohort):
    model = LearnedDiffusionGenerator(root / "diffusion", sampling=SamplingOptions(steps=4))
    model.check(cohort, "smoking")
    yes, no, again = _generate(model, cohort, ("yes", "no", "yes"))
    assert yes.shape == (16, 16, 16) and yes.dtype == np.float32
    assert np.array_equal(yes, again)  # a null pair
    assert not np.array_equal(yes, no)
    assert np.array_equal(_generate(model, cohort, ("yes",))[0], yes)
    assert not np.array_equal(_generate(model, cohort, ("yes",), seed=8)[0], yes)
    blind = LearnedDiffusionGenerator(root / "diffusion",
                                      sampling=SamplingOptions(steps=4, guidance=0))
    a, b = _generate(blind, cohort, ("yes", "no"))
    assert np.array_equal(a, b)  # guidance 0 ignores the record


def test_stochastic_ddim_shares_every_steps_noise(root, cohort):
    model = LearnedDiffusionGenerator(root / "diffusion",
                                      sampling=SamplingOptions(steps=4, eta=0.7))
    assert model.sampling["eta"] == 0.7
    model.check(cohort, "smoking")
    yes, no, again = _generate(model, cohort, ("yes", "no", "yes"))
    assert np.array_equal(yes, again) and not np.array_equal(yes, no)
    deterministic = LearnedDiffusionGenerator(root / "diffusion",
                                              sampling=SamplingOptions(steps=4))
    assert np.abs(_generate(deterministic, cohort, ("yes",))[0] - yes).mean() > 1  # HU


def test_the_checkpoints_sampling_block_names_the_sampler(root, cohort, tmp_path, monkeypatch):
    """A sampler registered under another name is read from config.json, recorded in the run's
    sampling, and samples as the sampler it is; an unknown one is refused in one line."""
    def named(sampler):
        folder = tmp_path / sampler
        shutil.copytree(root / "diffusion", folder)
        config = json.loads((folder / "config.json").read_text())
        config["sampling"]["sampler"] = sampler
        (folder / "config.json").write_text(json.dumps(config))
        return folder

    monkeypatch.setitem(SAMPLERS, "ddim-copy", DDIMSampler)
    copy = LearnedDiffusionGenerator(named("ddim-copy"), sampling=SamplingOptions(steps=3,
                                                                                  eta=0.5))
    assert copy.sampling == {"sampler": "ddim-copy", "steps": 3, "guidance": 1.0, "eta": 0.5,
                             "from_ct": False, "strength": None}
    plain = LearnedDiffusionGenerator(root / "diffusion", sampling=SamplingOptions(steps=3,
                                                                                   eta=0.5))
    assert np.array_equal(_generate(copy, cohort, ("yes",))[0],
                          _generate(plain, cohort, ("yes",))[0])
    with pytest.raises(UserInputError, match="its config.json samples with 'euler', which this "
                                             "cfx does not know"):
        LearnedDiffusionGenerator(named("euler"))


def test_from_ct_keeps_the_subjects_ct_at_small_strength(root, cohort):
    ct = read_volume(cohort.subjects[0].ct).data.clip(-1024, 1024)
    errors = {}
    for strength in (0.001, 1.0):
        model = LearnedDiffusionGenerator(root / "diffusion", sampling=SamplingOptions(
            steps=4, from_ct=True, strength=strength))
        model.check(cohort, "smoking")
        errors[strength] = np.abs(_generate(model, cohort, ("yes",))[0] - ct).mean()
    assert errors[0.001] < 40  # HU
    assert errors[1.0] > 5 * errors[0.001]


def test_from_ct_a_levelled_model_reads_the_record_the_ct_shows(root, cohort):
    """At a small strength the volume is the CT less the level map of the record it shows
    (the requests' source) plus the request's: the subject's own record gives its CT back, and
    the other value moves each label by the two records' level difference (a new run has
    label levels)."""
    assert json.loads((root / "diffusion" / "config.json").read_text())["generator"][
        "label_levels"]
    model = LearnedDiffusionGenerator(root / "diffusion", sampling=SamplingOptions(
        steps=4, from_ct=True, strength=0.001))
    subject = cohort.subjects[0]
    own = subject.record["smoking"]
    other = "yes" if own == "no" else "no"
    requests = [Request.build(v, {**subject.record, "smoking": v}, DEFAULT_TEMPLATE,
                              source=subject.record) for v in (own, other)]
    mask = read_labels(subject.mask)
    same, edited = model.generate(subject, mask, "smoking", requests, 7)
    ct = read_volume(subject.ct).data.clip(-1024, 1024)
    assert np.abs(same - ct).mean() < 40  # HU, as the plain model at this strength
    conditions = model._runner().conditions([model._records()(r.phrases) for r in requests])
    with torch.no_grad():
        levels = model.model.levels(conditions.flatten(1)).numpy() * 1024.0  # (2, labels) HU
    assert np.abs(levels[1] - levels[0]).max() > 1.0  # the records' levels differ
    for label in range(1, 4):  # the lungs and the airway
        where = mask.data == label
        where &= (np.minimum(same, edited) > -1023) & (np.maximum(same, edited) < 1023)
        moved = (edited - same)[where].mean()  # unclipped voxels (measured: within 0.01 HU)
        assert where.sum() > 10
        assert moved == pytest.approx(levels[1, label] - levels[0, label], abs=0.5)


def test_sweep_records_sampling_and_resume_compares_it(root, tmp_path):
    out = tmp_path / "run"
    base = ["sweep", "--cohort", str(root / "cohort"), "--attribute", "smoking", "--values",
            "no,yes", "--model", str(root / "diffusion"), "--out", str(out), "--device", "cpu",
            "-q"]
    sampling = ["--steps", "2", "--from-ct", "--strength", "0.3", "--eta", "0.5"]
    result = runner.invoke(app, [*base, *sampling])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"]
    assert manifest["settings"]["sampling"] == {"steps": 2, "guidance": 1.0, "eta": 0.5,
                                                "from_ct": True, "strength": 0.3}
    again = runner.invoke(app, [*base, *sampling, "--resume"])
    assert again.exit_code == 0, again.output
    other = runner.invoke(app, [*base, "--steps", "2", "--from-ct", "--strength", "0.3",
                                "--resume"])
    assert other.exit_code == 2
    assert "cannot resume with different settings (sampling: run has" in other.stderr
    # the audit regenerates with the run's sampling, so a volume comes back exactly
    audit = runner.invoke(app, ["audit", str(out), "--cohort", str(root / "cohort"), "-q"])
    assert audit.exit_code == 0, audit.output
    composition = json.loads((out / "audit" / "audit.json").read_text())["criteria"][
        "composition"]
    assert composition["status"] == "measured", composition
    assert composition["metrics"]["null_max_abs"]["value"] < 0.5  # HU (int16 storage)


def _error(args, out):
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cfx: error: "), result.stderr
    assert not out.exists()
    return lines[0]


@pytest.mark.parametrize("model, extra, message", [
    ("gan", ["--guidance", "2"], "--guidance: only diffusion models take this option; model gan "
                                 "is a GAN (cond_gan3d)"),
    ("gan", ["--steps", "4", "--from-ct"], "--steps, --from-ct: only diffusion models take these "
                                           "options; model gan is a GAN"),
    ("phantom-oracle", ["--strength", "0.5"], "--strength: only diffusion models take this "
                                              "option; model phantom-oracle is the phantom's "
                                              "exact renderer"),
    ("diffusion", ["--strength", "0.5"], "--strength: applies to --from-ct only"),
    ("diffusion", ["--from-ct", "--strength", "0"], r"--strength: got 0.0; give a value in "
                                                    r"(0, 1]"),
    ("diffusion", ["--guidance", "-1"], "--guidance: got -1.0; give a weight >= 0"),
    ("diffusion", ["--steps", "0"], "--steps: got 0; give 1 to 1000 steps"),
    ("diffusion", ["--eta", "1.5"], "--eta: got 1.5; give a value in [0, 1]"),
    ("gan", ["--eta", "0.5"], "--eta: only diffusion models take this option"),
])
def test_sampling_option_errors(root, tmp_path, model, extra, message):
    name = model if model == "phantom-oracle" else str(root / model)
    args = ["sweep", "--cohort", str(root / "cohort"), "--attribute", "smoking", "--values",
            "no,yes", "--model", name, *extra]
    assert message in _error(args, tmp_path / "run")


def test_from_ct_needs_a_ct_for_every_subject(root, tmp_path):
    args = ["sweep", "--mask", str(root / "cohort" / "masks" / "P000.nii.gz"), "--attribute",
            "smoking", "--values", "no,yes", "--model", str(root / "diffusion"), "--from-ct"]
    line = _error(args, tmp_path / "run")
    assert "--from-ct: subject P000 of" in line and "has no CT; give a cohort with a CT" in line


def test_the_gan_adapter_refuses_a_diffusion_checkpoint(root):
    with pytest.raises(UserInputError, match="holds a cond_diffusion3d model; LearnedGenerator "
                                             "serves cond_gan3d"):
        LearnedGenerator(root / "diffusion")


def test_models_list_and_show_describe_a_diffusion_checkpoint(root, monkeypatch):
    monkeypatch.chdir(root)  # short local names keep the table narrow
    listed = runner.invoke(app, ["models", "list", "diffusion", "gan"])
    assert listed.exit_code == 0, listed.output
    assert "cond_diffusion3d (20 DDIM steps, guidance 1)" in listed.stdout
    assert "cond_gan3d (affine)" in listed.stdout
    shown = runner.invoke(app, ["models", "show", "diffusion"])
    assert shown.exit_code == 0, shown.output
    assert "architecture: cond_diffusion3d, scaled_linear_beta noise schedule, sampling 20 " \
           "DDIM steps, guidance 1, channels [8, 8]" in shown.stdout


def test_audit_of_a_from_ct_run_measures_the_round_trip(root, cohort, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, [
        "sweep", "--cohort", str(root / "cohort"), "--attribute", "smoking", "--values", "no,yes",
        "--model", str(root / "diffusion"), "--out", str(out), "--device", "cpu", "--steps", "3",
        "--from-ct", "--strength", "0.4", "-q"])
    assert result.exit_code == 0, result.output
    audit = runner.invoke(app, ["audit", str(out), "--cohort", str(root / "cohort"), "-q"])
    assert audit.exit_code == 0, audit.output
    criterion = json.loads((out / "audit" / "audit.json").read_text())["criteria"]["reversibility"]
    assert criterion["status"] == "measured"
    # by hand: edit each real CT to the other value (the run's volume) and back to its own
    model = LearnedDiffusionGenerator(root / "diffusion", sampling=SamplingOptions(
        steps=3, from_ct=True, strength=0.4))
    manifest = json.loads((out / "manifest.json").read_text())
    trips, floors = [], []
    for subject in cohort.subjects:
        own = subject.record["smoking"]
        other = "yes" if own == "no" else "no"
        name = f"sub-{subject.id}/sub-{subject.id}_attr-smoking_val-{{}}_seed-0_ct.nii.gz"
        edited = read_volume(out / name.format(other))
        seed = next(i["noise_seed"] for i in manifest["items"] if i["subject"] == subject.id)
        record, shown = {**subject.record, "smoking": own}, {**subject.record, "smoking": other}
        back = model.generate(dataclasses.replace(subject, ct=out / name.format(other)),
                              read_labels(subject.mask), "smoking",
                              [Request.build(own, record, DEFAULT_TEMPLATE, source=shown)],
                              seed)[0]
        real = read_volume(subject.ct).data
        trips.append(np.abs(back - real).mean())
        floors.append(np.abs(read_volume(out / name.format(own)).data - real).mean())
        assert edited.data.shape == real.shape
    metrics = criterion["metrics"]
    assert metrics["round_trip_mean_abs"]["value"] == pytest.approx(np.mean(trips), rel=1e-5)
    assert metrics["own_edit_mean_abs"]["value"] == pytest.approx(np.mean(floors), rel=1e-5)
    assert metrics["strength"]["value"] == 0.4
    rows = (out / "audit" / "reversibility.csv").read_text().splitlines()
    assert len(rows) == 1 + len(cohort.subjects)
