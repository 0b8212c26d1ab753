"""A small phantom cohort shared by the phantom tests (generated once per session)."""

import pytest

from cfx.counterfactual.phantom import DEFAULT_EFFECTS, PhantomSettings, write_phantom


@pytest.fixture(scope="session")
def cohort_dir(tmp_path_factory):
    """Three subjects on a 24×24×20 grid with anisotropic spacing, default effects."""
    out = tmp_path_factory.mktemp("phantom") / "cohort"
    settings = PhantomSettings(subjects=3, shape=(24, 24, 20), spacing=(6.0, 5.0, 7.5), seed=3,
                               effects=DEFAULT_EFFECTS)
    return write_phantom(out, settings, quiet=True)
