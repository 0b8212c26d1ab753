"""The bundled demo GAN: it loads by name, draws a 64³ CT on CPU, and recovers the planted
smoking effect on held-out phantom subjects (the figures of ``benchmarks/recovery.py``)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from cfx.counterfactual.cohort import load_cohort
from cfx.counterfactual.data import DEMO_COHORT
from cfx.counterfactual.sweep.generators import resolve_generator
from cfx.counterfactual.sweep.learned import LearnedGenerator, bundled_models

BUNDLED = "phantom-gan-64"


@pytest.fixture(scope="module")
def model():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield LearnedGenerator(bundled_models()[BUNDLED])
    torch.set_num_threads(threads)


def test_resolves_by_name_for_the_demo_cohort():
    generator = resolve_generator(BUNDLED, load_cohort(DEMO_COHORT))
    assert isinstance(generator, LearnedGenerator)
    assert generator.content_hash.startswith("sha256:")
    assert generator.config["training_cohort"]["kind"] == "phantom"


def test_reads_every_phantom_attribute_per_field(model):
    assert model.model.fields == ("age", "sex", "smoking", "mortality", "diagnosis")


@pytest.fixture(scope="module")
def smoking(model, recovery):
    (row,) = recovery.evaluate(model, recovery.held_out(2), (("smoking", "yes", "no"),))
    return row


def test_smoking_shift_is_the_planted_one_within_the_issue_tolerance(smoking):
    """Planted +20 HU over the lungs of two held-out subjects: the recovered lung-mean shift is
    within ±25 %, lung-shaped, and the change off the lungs stays under 5 HU."""
    assert smoking.planted == pytest.approx(20.0)
    assert 15.0 <= smoking.recovered <= 25.0, smoking
    assert smoking.off_lung < 5.0, smoking
    assert smoking.correlation > 0.5, smoking


def test_draws_a_64_cube_in_hu(model, recovery):
    from cfx.counterfactual.cohort import Subject
    from cfx.counterfactual.prompts import DEFAULT_TEMPLATE
    from cfx.counterfactual.sweep.generators import Request
    from cfx.counterfactual.volume import Volume

    oracle = recovery.held_out(1)
    sid = oracle.subject_ids[0]
    record = oracle.truth(sid)
    (ct,) = model.generate(Subject(sid, Path(sid), None, record),
                           Volume(oracle.labels(sid), oracle.affine()), "smoking",
                           [Request.build("yes", record, DEFAULT_TEMPLATE)], 0)
    assert ct.shape == (64, 64, 64) and ct.dtype == np.float32
    lung = oracle.lung_mask(sid)
    real = oracle.render(sid, {}, 0)
    assert abs(ct[lung].mean() - real[lung].mean()) < 60  # lungs at lung density


@pytest.mark.slow
def test_recovery_on_twelve_held_out_subjects(model, recovery):
    rows = {r.attribute: r for r in recovery.evaluate(model, recovery.held_out(12))}
    assert 0.75 <= rows["smoking"].ratio <= 1.25 and rows["smoking"].correlation > 0.5
    assert 0.75 <= rows["age"].ratio <= 1.25 and rows["diagnosis"].recovered < 0
    assert all(rows[a].off_lung < 5.0 for a in ("smoking", "sex", "age", "mortality"))
    assert abs(rows["sex"].recovered) < 3.0  # no planted effect
