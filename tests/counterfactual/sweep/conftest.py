import numpy as np
import pytest

from cfx.counterfactual.cohort import load_cohort
from cfx.counterfactual.volume import write_volume

SHIFT = {"yes": 20.0, "no": 0.0}


class FakeGenerator:
    """Lung −850 HU + 20 HU if smoker, noise from the seed; counts calls."""

    name = "fake"
    content_hash = "sha256:fake"
    text_encoder = None

    def __init__(self):
        self.calls = []

    def check(self, cohort, attribute):
        pass

    def generate(self, subject, mask, attribute, requests, seed):
        self.calls.append((subject.id, seed, [r.value for r in requests]))
        noise = np.random.default_rng(seed).normal(0, 20, mask.shape).astype(np.float32)
        lung = np.isin(mask.data, (1, 2))
        return [np.where(lung, -850 + SHIFT[r.value], 40) + noise for r in requests]


@pytest.fixture
def fake():
    return FakeGenerator()


@pytest.fixture
def cohort_dir(tmp_path, labels, affine):
    root = tmp_path / "cohort"
    for sid in ("A1", "B2", "C3"):
        write_volume(root / "masks" / f"{sid}.nii.gz", labels, affine)
    (root / "clinical.csv").write_text("subject,age,smoking\nA1,60,yes\nB2,70,\nC3,55,no\n")
    return root


@pytest.fixture
def cohort(cohort_dir):
    return load_cohort(cohort_dir)


class ConfigurableFakeGenerator(FakeGenerator):
    """A FakeGenerator that records what ``configure`` was told."""

    def __init__(self):
        super().__init__()
        self.configured = []

    def configure(self, device, batch_size):
        self.configured.append((device, batch_size))


@pytest.fixture
def configurable_fake():
    return ConfigurableFakeGenerator()


@pytest.fixture
def phantom_dir(tmp_path):
    """A tiny phantom cohort (3 subjects, 20³ voxels of 8 mm) for oracle sweeps."""
    from cfx.counterfactual.phantom import PhantomSettings, write_phantom

    return write_phantom(tmp_path / "phantom", PhantomSettings(subjects=3, shape=(20, 20, 20),
                                                               spacing=(8.0, 8.0, 8.0)),
                         quiet=True)
