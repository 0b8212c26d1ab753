"""Shared CLI options: one definition, one choice check with the nearest spelling suggested."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cfx.counterfactual.cli.app import app, load_command
from cfx.counterfactual.cli.params import DEVICES, look_up_option

runner = CliRunner()


@pytest.mark.parametrize(("value", "message"), [
    ("cuda0", "got 'cuda0'; choose one of auto, cpu, cuda (did you mean 'cuda'?)"),
    ("CPU", "got 'CPU'; choose one of auto, cpu, cuda (did you mean 'cpu'?)"),
    ("atuo", "got 'atuo'; choose one of auto, cpu, cuda (did you mean 'auto'?)"),
    ("gpu", "got 'gpu'; choose one of auto, cpu, cuda"),  # 'cpu' is not near enough
    ("tpu", "got 'tpu'; choose one of auto, cpu, cuda"),
])
def test_look_up_option_suggests_the_nearest_spelling(value, message):
    with pytest.raises(ValueError) as caught:
        look_up_option(value, DEVICES)
    assert str(caught.value) == message


def test_look_up_option_passes_an_allowed_value():
    assert [look_up_option(v, DEVICES) for v in DEVICES] == list(DEVICES)


def _one_line_error(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cfx: error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("command", ["sweep", "audit", "train"])
def test_device_typo_is_one_line_with_a_suggestion_in_every_command(tmp_path, command):
    args = {"sweep": ["sweep", "--attribute", "smoking", "--values", "yes,no",
                      "--out", str(tmp_path / "run")],
            "audit": ["audit", str(tmp_path)],
            "train": ["train", "--cohort", "phantom", "--out", str(tmp_path / "ckpt")]}[command]
    line = _one_line_error([*args, "--device", "cuda0"])
    assert ("Invalid value for '--device': got 'cuda0'; choose one of auto, cpu, cuda "
            "(did you mean 'cuda'?)") in line
    assert not (tmp_path / "run").exists() and not (tmp_path / "ckpt").exists()


def test_render_axis_typo_suggests_the_axis(tmp_path):
    line = _one_line_error(["render", str(tmp_path), "--axis", "axail"])
    assert "--axis: got 'axail'; choose one of axial, coronal, sagittal (did you mean " \
           "'axial'?)" in line


def test_train_arch_typo_suggests_the_architecture(tmp_path):
    line = _one_line_error(["train", "--cohort", "phantom", "--out", str(tmp_path / "c"),
                            "--arch", "difusion"])
    assert "got 'difusion'; choose one of gan, diffusion (did you mean 'diffusion'?)" in line


@pytest.mark.parametrize(("option", "flags"), [
    ("labels", ("--labels",)),
    ("quiet", ("--quiet", "-q")),
    ("no_verify", ("--no-verify",)),
    ("device", ("--device",)),
    ("attributes", ("--attributes",)),
])
def test_shared_options_have_one_spelling_in_every_command(option, flags):
    seen = {}
    for name in ("phantom", "validate", "train", "sweep", "stats", "render", "report", "audit"):
        for parameter in load_command(name).params:
            if parameter.name == option:
                seen[name] = (tuple(parameter.opts) + tuple(parameter.secondary_opts),
                              parameter.default)
    assert len(seen) >= 2, seen
    assert {spelling for spelling, _ in seen.values()} == {flags}, seen
    assert len({default for _, default in seen.values()}) == 1, seen
