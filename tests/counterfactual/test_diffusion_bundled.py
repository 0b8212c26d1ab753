"""The bundled demo diffusion model: it loads by name, draws a 32³ CT on CPU, and recovers the
planted smoking effect on held-out phantom subjects from noise and from each subject's own CT
(the figures of ``benchmarks/recovery.py``, on fewer subjects)."""

import pytest

from cfx.counterfactual.cohort import load_cohort
from cfx.counterfactual.data import DEMO_COHORT
from cfx.counterfactual.sweep.generators import SamplingOptions, resolve_generator
from cfx.counterfactual.sweep.learned import LearnedDiffusionGenerator, bundled_models

BUNDLED = "phantom-diffusion-32"
SHAPE, SPACING = (32, 32, 32), (10.0, 10.0, 10.0)
SMOKING = (("smoking", "yes", "no"),)


def _model(**options):
    return LearnedDiffusionGenerator(bundled_models()[BUNDLED],
                                     sampling=SamplingOptions(**options))


def test_resolves_by_name_with_its_sampling_defaults():
    generator = resolve_generator(BUNDLED, load_cohort(DEMO_COHORT))
    assert isinstance(generator, LearnedDiffusionGenerator)
    assert generator.content_hash.startswith("sha256:")
    assert generator.config["training_cohort"]["kind"] == "phantom"
    assert generator.sampling == {"steps": 20, "guidance": 1.0, "eta": 0.0, "from_ct": False,
                                  "strength": None}
    assert generator.model.config["prediction"] == "v_prediction"
    assert generator.model.fields == ("age", "sex", "smoking", "mortality", "diagnosis")


def test_smoking_from_noise(recovery):
    """Planted +20 HU over the lungs of two held-out subjects, drawn from noise: the recovered
    lung-mean shift is within ±25 %, lung-shaped, and the change off the lungs is small."""
    (row,) = recovery.evaluate(_model(), recovery.held_out(2, SHAPE, SPACING), SMOKING)
    assert row.planted == pytest.approx(20.0)
    assert 15.0 <= row.recovered <= 25.0, row
    assert row.off_lung < 5.0, row
    assert row.correlation > 0.4, row


def test_smoking_from_each_subjects_ct(recovery, tmp_path):
    """The same contrast, each subject's own CT noised to strength 0.6 and denoised under both
    records: the edit keeps the patient's anatomy and still moves the lungs."""
    oracle, cts = recovery.write_held_out(tmp_path / "held-out", 2, SHAPE, SPACING)
    (row,) = recovery.evaluate(_model(from_ct=True, strength=0.6), oracle, SMOKING, cts)
    assert 12.0 <= row.recovered <= 25.0, row
    assert row.off_lung < 5.0, row
