"""The mask + text conditional 3D GAN (``cfx train --arch gan``, checkpoint ``cond_gan3d``):
network, trainer, training defaults and options, card section and whole-volume runner.

``fusion`` (how the text enters), ``l1_weight``, ``adversarial_weight``, ``region_weight`` and
``edit_weight`` (the generator's loss weights, see :class:`cfx.models.training.gan.GANSettings`),
``gate_decay`` (a new run's generator gates its fusion by anatomy, see
:mod:`cfx.models.nets.fusion`), ``film_decay`` (the FiLM's record weights decay, see
:class:`cfx.models.training.gan.GANSettings`) and ``label_levels`` (a new run's generator sets
each label's level from the record, see :class:`cfx.models.nets.cond_gan3d.CondGAN3DGenerator`,
fitted once on ``level_rows`` training rows before the first step, see
:mod:`cfx.models.training.levels`) are its own options; the weights and decay given with
``--resume`` apply from that step on (``--adversarial-weight 0`` continues on L1 alone, without
running the discriminator).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from cfx.models.architectures import check_kept_levels, check_level_rows
from cfx.models.checkpoint import load_training_state
from cfx.models.inference import OVERLAP, count_windows, draw_noise, generate_volumes, time_window
from cfx.models.nets.cond_gan3d import CondGAN3DGenerator, TextCondition
from cfx.models.text import HFTextEncoder
from cfx.models.training.gan import GANSettings, GANTrainer
from cfx.models.training.levels import LEVEL_ROWS

__all__ = ["NETWORK", "TRAINER", "L1_WEIGHT", "ADVERSARIAL_WEIGHT", "FUSION", "given_options",
           "check_new", "new_arguments", "resumed_arguments", "command", "new_trainer",
           "resumed_trainer", "normalisation", "served", "card", "Runner"]

NETWORK, TRAINER = CondGAN3DGenerator, GANTrainer
# a new run's loss weights (edit: issue 16, with fitted and held levels on 200 phantoms, off-lung
# change 3-9 % of each planted effect where 0 gave 4-19 %)
L1_WEIGHT, ADVERSARIAL_WEIGHT, REGION_WEIGHT, EDIT_WEIGHT = 100.0, 1.0, 100.0, 20.0
GATE_DECAY = 0.0  # a new run's label-gate decay; > 0 builds a gated generator
FILM_DECAY = 2.0  # a new run's decay of the FiLM's record weights (0 with cross-attention)
LABEL_LEVELS = True  # a new run's generator sets each label's level from the record
FUSION = "affine"  # text fusion of a new run
_TOKEN_DIMS = 32  # most principal axes kept of the tokens


def given_options(options: dict) -> dict:
    """The loss weights given (``options`` None: not given), checked; a new or resumed run
    takes them.

    Raises
    ------
    ValueError
        A weight or decay below 0, or both weights 0; the message starts with the flags.
    """
    weights = {}
    if options.get("label_levels") is not None:
        weights["label_levels"] = bool(options["label_levels"])
    for name, kind in (("gate_decay", "decay"), ("film_decay", "decay"),
                       ("region_weight", "weight"), ("edit_weight", "weight"),
                       ("l1_weight", "weight"), ("adversarial_weight", "weight")):
        if options.get(name) is not None:
            if not options[name] >= 0:
                raise ValueError(f"--{name.replace('_', '-')}: got {options[name]}; give a "
                                 f"{kind} >= 0")
            weights[name] = options[name]
    if weights.get("l1_weight", L1_WEIGHT) == 0 and weights.get("adversarial_weight",
                                                                ADVERSARIAL_WEIGHT) == 0:
        raise ValueError("--l1-weight, --adversarial-weight: both are 0; the generator "
                         "would learn nothing, give one of them > 0")
    return weights


def check_new(options: dict, channels: str, levels: tuple[int, ...]) -> None:
    """A new run's options and ``--channels`` (text and levels).

    Raises
    ------
    ValueError
        ``--film-decay`` with a fusion that has no FiLM; ``--level-rows`` below 1 or without
        label levels.
    """
    _check_film(options.get("film_decay"), options.get("fusion") or FUSION)
    check_level_rows(options, LABEL_LEVELS)


def _check_film(film_decay: float | None, fusion: str) -> None:
    if film_decay and fusion != "affine":
        raise ValueError(f"--film-decay: applies to --fusion affine only; this run is --fusion "
                         f"{fusion}")


def new_arguments(common: dict, options: dict, given: dict, out: Path, steps: int) -> dict:
    """``training.arguments`` of a new run from the checked ``common`` ones, this
    architecture's ``options`` (None: not given) and :func:`given_options`."""
    fusion = FUSION if options.get("fusion") is None else options["fusion"]
    arguments = {**{k: common[k] for k in ("cohort", "arch", "patch", "batch_size",
                                           "text_encoder")},
                 "fusion": fusion,
                 **{k: common[k] for k in ("channels", "phantom_shape", "drop_rate", "lr",
                                           "fusion_lr_scale", "body")},
                 "l1_weight": L1_WEIGHT, "adversarial_weight": ADVERSARIAL_WEIGHT,
                 "region_weight": REGION_WEIGHT, "edit_weight": EDIT_WEIGHT,
                 "gate_decay": GATE_DECAY,
                 "film_decay": FILM_DECAY if fusion == "affine" else 0.0,
                 "label_levels": LABEL_LEVELS,
                 "seed": common["seed"], **given}
    if arguments["label_levels"]:
        arguments["level_rows"] = options.get("level_rows") or LEVEL_ROWS
    arguments["command"] = command(arguments, out, steps)
    return arguments


def resumed_arguments(saved: dict, given: dict, out: Path, steps: int) -> dict:
    """``training.arguments`` of a resumed run: as saved, with the loss weights given now
    (its command gives them and the new total of steps).

    Raises
    ------
    ValueError
        ``--gate-decay`` given for a run trained without the gate, or ``--label-levels``
        (``--no-label-levels``) for one trained without (with) them: the network cannot gain
        or lose them; ``--film-decay`` for a run without FiLM.
    """
    _check_film(given.get("film_decay"), saved["fusion"])
    if given.get("gate_decay") and not saved.get("gate_decay"):
        raise ValueError(f"--gate-decay: {out} was trained without the label gate and cannot "
                         "gain it on resume; start a new run with --gate-decay")
    check_kept_levels(saved, given, out)
    arguments = {**saved, **given}
    return {**arguments, "command": command(arguments, out, steps)}


def command(arguments: dict, out: Path, steps: int) -> str:
    """The ``cfx train`` command line that reproduces a run."""
    words = ["cfx", "train", "--cohort", arguments["cohort"], "--out", str(out), "--steps",
             str(steps), "--patch", ",".join(map(str, arguments["patch"])), "--batch-size",
             str(arguments["batch_size"]), "--text-encoder", arguments["text_encoder"],
             "--fusion", arguments["fusion"], "--channels",
             ",".join(map(str, arguments["channels"])), "--drop-rate",
             str(arguments["drop_rate"]), "--lr", str(arguments["lr"]), "--fusion-lr-scale",
             str(arguments.get("fusion_lr_scale", 1.0)), "--l1-weight",
             str(arguments.get("l1_weight", L1_WEIGHT)), "--adversarial-weight",
             str(arguments.get("adversarial_weight", ADVERSARIAL_WEIGHT)), "--edit-weight",
             str(arguments.get("edit_weight", EDIT_WEIGHT)), "--seed", str(arguments["seed"])]
    if arguments.get("region_weight"):
        words += ["--region-weight", str(arguments["region_weight"])]
    if arguments.get("gate_decay"):
        words += ["--gate-decay", str(arguments["gate_decay"])]
    if arguments["fusion"] == "affine":  # always said: a new run's default is not 0
        words += ["--film-decay", str(arguments.get("film_decay", 0.0))]
    words.append("--label-levels" if arguments.get("label_levels") else "--no-label-levels")
    if arguments.get("level_rows"):  # older runs learnt their levels by gradient steps
        words += ["--level-rows", str(arguments["level_rows"])]
    words.append("--body" if arguments.get("body") else "--no-body")  # new runs: on
    if arguments["cohort"].startswith("phantom"):
        words += ["--phantom-shape", ",".join(map(str, arguments["phantom_shape"]))]
    return shlex.join(words)


def _settings(arguments: dict) -> GANSettings:
    # the discriminator halves the patch per layer and ends with a 4-voxel kernel
    layers = max(1, min(3, int(np.log2(min(arguments["patch"]))) - 2))
    return GANSettings(batch_size=arguments["batch_size"], lr_generator=arguments["lr"],
                       lr_discriminator=arguments["lr"],
                       fusion_lr_scale=arguments.get("fusion_lr_scale", 1.0),
                       l1_weight=arguments.get("l1_weight", L1_WEIGHT),
                       adversarial_weight=arguments.get("adversarial_weight",
                                                        ADVERSARIAL_WEIGHT),
                       region_weight=arguments.get("region_weight", 0.0),  # older runs: none
                       edit_weight=arguments.get("edit_weight", EDIT_WEIGHT),
                       gate_decay=arguments.get("gate_decay", GATE_DECAY),
                       film_decay=arguments.get("film_decay", 0.0),  # older runs: none
                       level_rows=arguments.get("level_rows", 0),  # older runs: by steps
                       seed=arguments["seed"], discriminator_layers=layers)


def new_trainer(arguments: dict, phrases: dict[str, list[str]], field_dims: list[int],
                label_channels: int, encoder: HFTextEncoder, source, device: torch.device,
                values: dict[str, list[float]] | None = None) -> GANTrainer:
    """A new trainer: the generator built, its text whitening fitted on ``phrases`` (field ->
    distinct phrases; ``values``: a numeric field -> the value of each of its phrases, read out
    instead of whitened), its label levels fitted (``level_rows``) and its output started at
    the data's mean intensity less them."""
    generator = CondGAN3DGenerator(
        list(phrases), field_dims, label_channels=label_channels,
        channels=arguments["channels"], fusion=arguments["fusion"], text_width=encoder.width,
        token_dims=min(_TOKEN_DIMS, encoder.width // 2), gate=arguments["gate_decay"] > 0,
        label_levels=arguments.get("label_levels", False),
        hold_levels=bool(arguments.get("label_levels") and arguments.get("level_rows")))
    trainer = GANTrainer(generator, encoder, source, _settings(arguments), device)
    trainer.fit_text(list(phrases.values()), [(values or {}).get(f) for f in phrases])
    if arguments.get("level_rows"):
        trainer.fit_levels(arguments["level_rows"])
    trainer.calibrate_output(source(np.random.default_rng(arguments["seed"]), 16))
    return trainer


def resumed_trainer(arguments: dict, generator: dict, folder: Path, encoder: HFTextEncoder,
                    source, device: torch.device) -> tuple[GANTrainer, dict]:
    """The trainer saved in ``folder`` (``generator``: its constructor kwargs), and the
    training state's JSON."""
    trainer = GANTrainer(CondGAN3DGenerator(**generator), encoder, source, _settings(arguments),
                         device)
    tensors, meta = load_training_state(folder)
    trainer.load_training_state(tensors, meta)
    return trainer, meta


def normalisation(network: CondGAN3DGenerator) -> dict:
    """What ``config.json``'s ``text_normalisation`` adds for this architecture."""
    return {"token_dims": network.tokens.dims if network.tokens is not None else None}


def served(arguments: dict) -> dict:
    """Blocks ``config.json`` adds for this architecture: none (a GAN does not sample)."""
    return {}


def card(config: dict, generator: dict) -> tuple[str, str, str]:
    """The model card's description, extra training bullet and closing sections."""
    fusion = config["training"]["arguments"]["fusion"]
    levels = ", label levels" if generator.get("label_levels") else ""
    what = (f"A mask + text conditional 3D GAN (`cond_gan3d`, {fusion} text fusion{levels}) made "
            "with\n`cfx train`: it draws a chest CT (HU) for a lung/airway label map and a "
            "clinical prompt.")
    return what, "", f"""
## Recovery of planted effects
Not evaluated yet: run `python benchmarks/recovery.py {config["name"]} --update-card`.
"""


class Runner:
    """Whole volumes from a served generator: one noise field per (volume, seed), every
    record of a group drawn from it, window by window (:func:`cfx.models.inference.
    generate_volumes`)."""

    def __init__(self, network: CondGAN3DGenerator):
        self.network = network

    def conditions(self, rows: Sequence[TextCondition]) -> TextCondition:
        """One batch of the records' conditions, in row order."""
        return TextCondition.stack(list(rows))

    def run(self, labels: torch.Tensor, conditions: TextCondition, shape: Sequence[int],
            seed: int, roi: Sequence[int], window_batch: int) -> list[torch.Tensor]:
        """One HU volume (shape ``shape``) per row of ``conditions``, all from the noise of
        ``seed``; ``labels`` (1, C, X, Y, Z) one-hot on the network's device."""
        noise, vector = draw_noise(self.network, shape, seed)
        device = labels.device
        return generate_volumes(self.network, labels, noise.to(device), vector.to(device),
                                conditions, roi, window_batch=window_batch)

    def passes(self, shape: Sequence[int], roi: Sequence[int],
               rows: int) -> tuple[tuple[int, ...], int]:
        """The window :meth:`run` uses over a volume of ``shape`` (``roi`` itself: a smaller
        volume is padded to it) and how many network passes over it a run of ``rows`` records
        takes (one more with label levels: the record-free draw of the level hold)."""
        runs = rows + self.network.config["hold_levels"]
        return tuple(int(r) for r in roi), runs * count_windows(shape, roi, OVERLAP)

    def time_window(self, window: Sequence[int], conditions: TextCondition,
                    device: torch.device) -> float:
        """Seconds of one network pass over one ``window`` of background and zero noise under
        the first row of ``conditions``, on ``device`` (draws no random number)."""
        network = self.network
        labels = torch.zeros((1, network.config["label_channels"], *window), device=device)
        noise = torch.zeros((1, 1, *window), device=device)
        vector = torch.zeros((1, network.noise_dims), device=device)
        first = conditions.select([0])
        return time_window(lambda: network(labels, noise, first, vector))
