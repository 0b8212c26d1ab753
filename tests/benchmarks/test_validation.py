"""``benchmarks/validation.py --quick``: every CLI stage runs end to end on a tiny phantom, the
table has a row per planted attribute and model, and the oracle reproduces what was planted."""

import json

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from cfx.counterfactual.phantom.effects import DEFAULT_EFFECTS, parse_effects
from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def validation():
    return load_benchmark("validation")


def test_contrasts_of_an_effects_file(validation):
    """A baseline reference gives way to a value without effect; sex is the null control."""
    effects = parse_effects({
        "diagnosis": {"reference": "none", "values": {"IPF": {"shift_hu": 50, "pattern": "lung"}}},
        "smoking": {"reference": "yes", "values": {"no": {"shift_hu": -10, "pattern": "lung"}}},
    }, "effects.json")
    chosen = [(c.attribute, c.value, c.reference, c.null)
              for c in validation.contrasts(effects)]
    assert chosen == [("smoking", "no", "yes", False), ("diagnosis", "IPF", "CTD-ILD", False),
                      ("sex", "male", "female", True)]


def test_quick_run_recovers_the_planted_effects_with_the_oracle(validation, tmp_path, capsys):
    out = tmp_path / "validation"
    assert validation.main(["--quick", "--out", str(out), "--channels", "4,8,8", "--patch", "8",
                            "--update-card"]) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "validation.json").read_text())

    # a row per attribute with a planted effect (and the null control), for both models
    planted = set(DEFAULT_EFFECTS.entries)
    contrasts = result["contrasts"]
    assert {c["attribute"] for c in contrasts if not c["null"]} == planted
    assert [c["attribute"] for c in contrasts if c["null"]] == ["sex"]
    rows = {(r["model"], r["attribute"]): r for r in result["rows"]}
    assert set(rows) == {(m, c["attribute"]) for m in ("gan", "oracle") for c in contrasts}
    for c in contrasts:
        for model in ("gan", "oracle"):
            assert f"| {c['attribute']} {c['value']} − {c['reference']} | {model} |" in printed

    # the oracle is exact: recovered == planted, nothing off the lungs, r = 1 where defined
    for c in contrasts:
        oracle = rows["oracle", c["attribute"]]
        assert oracle["recovered"] == pytest.approx(oracle["planted"], abs=1e-3)
        assert oracle["off_lung"] == pytest.approx(0.0, abs=1e-6)
        assert oracle["body"] == 0.0 and oracle["outside_body"] == 0.0
        assert oracle["verdict"] == ("no effect" if c["null"] else "specific")
        if c["null"]:
            assert oracle["planted"] == pytest.approx(0.0, abs=1e-6)
            assert oracle["correlation"] is None
        else:
            assert abs(oracle["planted"]) > 1.0
            assert oracle["correlation"] == pytest.approx(1.0, abs=1e-6)
            assert oracle["ratio"] == pytest.approx(1.0, abs=1e-4)

    # every stage ran, each command once per cohort, model and contrast
    commands = {stage: sum(s["stage"] == stage for s in result["stages"])
                for stage in validation.STAGES}
    n = len(contrasts)
    assert commands == {"startup": 1, "phantom": 2, "train": 1, "sweep": 2 * n, "stats": 2 * n,
                        "audit": 2 * n}
    assert all(seconds > 0 for seconds in result["stage_seconds"].values())
    for stage in validation.STAGES:
        assert f"| {stage} | {commands[stage]} |" in printed
    assert (out / "gan" / "config.json").is_file()
    assert (out / "planted.json").is_file()

    # what the training cohort shows, per contrast: in the air outside the body (-1000 HU and
    # noise), nothing beyond its error (12 subjects for about 10 coefficients: a wide one)
    associations = {a["attribute"]: a["regions"] for a in result["training_cohort"]}
    assert set(associations) == {c["attribute"] for c in contrasts}
    assert all(abs(a["outside-body"][0]) < 3 * a["outside-body"][1] for a in associations.values())
    assert "What the training cohort shows (12 subjects;" in printed

    # the network and patch asked for, and the table in the trained model's card
    arguments = json.loads((out / "gan" / "config.json").read_text())["training"]["arguments"]
    assert arguments["channels"] == [4, 8, 8] and arguments["patch"] == [8, 8, 8]
    card = (out / "gan" / "README.md").read_text()
    section = card.split(validation.CARD_HEADING, 1)[1]
    assert section.index("| sex male − female | gan |") < section.index("## Recovery of")
    assert "| outside-body Δ (HU) |" in section


def test_the_validation_section_replaces_its_old_self_before_the_recovery_section(validation):
    card = "# m\n\n## How it was trained\n- x\n\n## Recovery of planted effects\nold\n"
    once = validation.card_with_validation(card, "table 1")
    assert once == ("# m\n\n## How it was trained\n- x\n\n"
                    f"{validation.CARD_HEADING}\ntable 1\n\n"
                    "## Recovery of planted effects\nold\n")
    twice = validation.card_with_validation(once, "table 2\n")
    assert twice == once.replace("table 1", "table 2")
    assert validation.card_with_validation("# m\n", "t") == f"# m\n\n{validation.CARD_HEADING}\nt\n"


@pytest.mark.parametrize("argv, message", [
    (["--channels", "8,x"], "--channels: got '8,x'"),
    (["--channels", "8"], "--channels: got '8'"),
    (["--patch", "4"], "--patch: got 4"),
    (["--update-card"], "--update-card: give --out DIR or --checkpoint DIR"),
])
def test_bad_arguments_are_refused(validation, capsys, argv, message):
    assert validation.main(["--quick", *argv]) == 2
    assert message in capsys.readouterr().err


def test_subjects_must_be_two_or_more(validation, capsys):
    assert validation.main(["--quick", "--subjects", "1"]) == 2
    assert "--subjects: got 1" in capsys.readouterr().err


def test_training_associations_equal_a_formula_fit_of_each_contrast(validation):
    """Each contrast's difference and standard error equal statsmodels' formula fit with the
    contrast's reference as the treatment baseline (missing: a category; a missing age: the mean
    and an indicator)."""
    rng = np.random.default_rng(3)
    n = 80
    ages = rng.integers(30, 90, n).astype(float)
    ages[:6] = np.nan
    means = pd.DataFrame({
        "age": [None if np.isnan(a) else int(a) for a in ages],
        "sex": rng.choice(["male", "female", None], n),
        "smoking": rng.choice(["yes", "no"], n),
        "mortality": rng.choice(["dead", "alive", None], n),
        "diagnosis": rng.choice(["IPF", "CTD-ILD", "UILD"], n)})
    smoker = (means["smoking"] == "yes").to_numpy()
    means["lung"] = -750 + 20 * smoker - 0.4 * np.nan_to_num(ages, nan=60) + rng.normal(0, 9, n)
    means["body"] = 20 + rng.normal(0, 11, n)
    means["outside-body"] = -1000 + rng.normal(0, 0.2, n)
    chosen = [validation.Contrast("age", 80, 40, ""),
              validation.Contrast("smoking", "yes", "no", ""),
              validation.Contrast("diagnosis", "IPF", "UILD", ""),
              validation.Contrast("mortality", "dead", "alive", ""),
              validation.Contrast("sex", "male", "female", "", null=True)]
    found = validation.training_associations(means, chosen)

    data = means.rename(columns={"outside-body": "air"}).copy()
    data["age_missing"] = data["age"].isna().astype(float)
    data["age"] = pd.to_numeric(data["age"]).fillna(pd.to_numeric(data["age"]).mean())
    for name in ("sex", "mortality"):
        data[name] = data[name].fillna("missing")
    for association, contrast in zip(found, chosen, strict=True):
        terms = []
        for name in ("sex", "smoking", "mortality", "diagnosis"):
            baseline = contrast.reference if name == contrast.attribute else "missing" \
                if name in ("sex", "mortality") else data[name].min()
            terms.append(f"C({name}, Treatment(reference={baseline!r}))")
        for region, column in (("lung", "lung"), ("body", "body"), ("outside-body", "air")):
            fit = smf.ols(f"{column} ~ age + age_missing + " + " + ".join(terms), data).fit()
            if contrast.attribute == "age":
                estimate, se = 40 * fit.params["age"], 40 * fit.bse["age"]
            else:
                key = (f"C({contrast.attribute}, Treatment(reference={contrast.reference!r}))"
                       f"[T.{contrast.value}]")
                estimate, se = fit.params[key], fit.bse[key]
            assert association.regions[region] == pytest.approx([estimate, se], rel=1e-9,
                                                                abs=1e-9)
    smoking = found[1].regions["lung"]
    assert abs(smoking[0] - 20) < 3 * smoking[1]  # the planted shift, within its own error
