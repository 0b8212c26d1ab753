"""A sweep's projected time: the passes a learned model projects are the passes it runs, the
seconds come from one timed window (a fake clock here), and the engine prints the projection
over a minute and warns over ten minutes on the CPU."""

import itertools

import numpy as np
import pytest
from typer.testing import CliRunner

import cfx.models.inference
from cfx.counterfactual.cli import app
from cfx.counterfactual.cohort import load_cohort
from cfx.counterfactual.phantom import PhantomSettings, write_phantom
from cfx.counterfactual.sweep.engine import SweepConfig, run_sweep
from cfx.counterfactual.sweep.generators import Request, SamplingOptions, resolve_generator
from cfx.counterfactual.sweep.projection import projection_lines
from cfx.counterfactual.volume import read_labels
from tests.models.conftest import save_tiny_bert

runner = CliRunner()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("projection")
    bert = str(save_tiny_bert(root / "bert"))
    common = ["--cohort", "phantom:4", "--patch", "16", "--phantom-shape", "16",
              "--batch-size", "2", "--text-encoder", bert, "--device", "cpu", "-q"]
    for arch, extra in (("gan", ["--channels", "4,8", "--steps", "2"]),
                        ("diffusion", ["--channels", "8,8", "--steps", "2",
                                       "--sampling-steps", "3", "--level-rows", "64"])):
        result = runner.invoke(app, ["train", "--arch", arch, "--out", str(root / arch),
                                     *common, *extra])
        assert result.exit_code == 0, result.output
    cohort = root / "cohort"
    write_phantom(cohort, PhantomSettings(subjects=2, shape=(40, 16, 16), spacing=(20.0,) * 3),
                  quiet=True)
    return root


def _requests():
    return [Request(v, {"smoking": v}, f"Lung CT scan: Smoker: {v}.",
                    {"smoking": f"Lung CT scan: Smoker: {v}."}) for v in ("no", "yes")]


@pytest.fixture
def clock(monkeypatch):
    """perf_counter advancing 2.5 s per call: one timed window takes exactly 2.5 s."""
    ticks = itertools.count()
    monkeypatch.setattr(cfx.models.inference.time, "perf_counter", lambda: 2.5 * next(ticks))


@pytest.mark.parametrize("arch, sampling", [
    ("gan", SamplingOptions()),
    ("diffusion", SamplingOptions(steps=3, guidance=2.0)),  # both branches: 2 passes a window
])
def test_projected_passes_are_the_passes_a_volume_runs(root, clock, monkeypatch, arch,
                                                       sampling):
    cohort = load_cohort(root / "cohort")
    model = resolve_generator(str(root / arch), cohort, sampling)
    subject = cohort.subjects[0]
    mask = read_labels(subject.mask, model.vocabulary)  # 40 x 16 x 16: several windows
    requests = _requests()
    projected = model.projected_seconds(mask.shape, requests)
    calls = []
    forward = type(model.model).forward

    def counting(self, *args, **kwargs):
        calls.append(args[0].shape[0])  # windows in this pass (x2 under guidance)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(type(model.model), "forward", counting)
    model.generate(subject, mask, "smoking", requests, seed=3)
    assert sum(calls) > len(requests)  # more than one window per request
    assert projected == pytest.approx(2.5 * sum(calls))


def test_projection_lines():
    assert projection_lines(None, 3, "cpu") == []
    assert projection_lines(60.0, 3, "cpu") == []
    lines = projection_lines(61.0, 3, "cpu")
    assert len(lines) == 1 and lines[0].startswith("projected time: about 1 min for 3 ")
    lines = projection_lines(601.0, 3, "cpu")
    assert lines[0].startswith("projected time: about 10 min")
    assert lines[1].startswith("warning: this sweep is projected to run over 10 minutes on "
                               "the CPU")
    assert len(projection_lines(601.0, 3, "cuda")) == 1
    assert "about 2.0 h" in projection_lines(7200.0, 3, "cpu")[0]


class _SlowFake:
    """A checkpoint-like generator on a 20 mm grid that projects ``seconds`` per group."""

    name, content_hash, text_encoder = "slow", "sha256:slow", None

    def __init__(self, seconds):
        self.seconds = seconds
        self.config = {"grid": {"spacing_mm": [20, 20, 20], "orientation": "RAS",
                                "patch_voxels": [16, 16, 16],
                                "field_of_view_mm": [800, 800, 800],
                                "hu_window": [-1024, 1024]}}
        self.asked = []

    def check(self, cohort, attribute):
        pass

    def projected_seconds(self, shape, requests):
        self.asked.append((tuple(shape), len(requests)))
        return self.seconds

    def generate(self, subject, mask, attribute, requests, seed):
        return [np.full(mask.shape, -800.0, np.float32) for _ in requests]


@pytest.mark.parametrize("seconds, said, warned", [(20.0, False, False), (40.0, True, False),
                                                   (400.0, True, True)])
def test_the_sweep_says_its_projected_time_before_generating(root, tmp_path, capsys, seconds,
                                                             said, warned):
    cohort = load_cohort(root / "cohort")
    fake = _SlowFake(seconds)
    config = SweepConfig(attribute="smoking", values=("no", "yes"), seeds=(0,),
                         out=tmp_path / "run", quiet=True, device="cpu")
    run_sweep(config, cohort, fake)
    err = " ".join(capsys.readouterr().err.split())
    assert fake.asked == [((40, 16, 16), 2), ((40, 16, 16), 2)]  # each group, on the model grid
    total = 2 * seconds
    assert ("projected time: about" in err) == said
    if said:
        assert f"about {total / 60:.0f} min for 2 subject x seed groups on cpu" in err
    assert ("warning: this sweep is projected to run over 10 minutes" in err) == warned


def test_a_resumed_sweep_projects_only_what_is_left(root, tmp_path, capsys):
    cohort = load_cohort(root / "cohort")
    config = SweepConfig(attribute="smoking", values=("no", "yes"), seeds=(0,),
                         out=tmp_path / "run", quiet=True, device="cpu")
    run_sweep(config, cohort, _SlowFake(400.0))
    again = _SlowFake(400.0)
    run_sweep(SweepConfig(**{**config.__dict__, "resume": True}), cohort, again)
    assert again.asked == []  # nothing left to generate: nothing projected
