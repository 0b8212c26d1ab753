"""The mask + text conditional 3D diffusion model (``cfx train --arch diffusion``, checkpoint
``cond_diffusion3d``): network, trainer, training defaults and options, card section and
whole-volume runner.

``p_uncond`` (the share of rows trained without any record, for classifier-free guidance),
``sampling_steps`` (the sampler steps the sweep uses by default), ``level_rows`` (the
training draws the label levels are fitted on) and ``edit_weight`` (the minimal-edit loss,
see :class:`cfx.models.training.diffusion.DiffusionSettings`) are its own options. A resumed
run continues bit for bit and takes none, so one command line redoes it.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

import torch

from cfx.models.architectures import check_kept_levels, check_level_rows
from cfx.models.checkpoint import load_training_state
from cfx.models.inference import time_window
from cfx.models.nets.cond_diffusion3d import PREDICTIONS, CondDiffusion3D
from cfx.models.samplers import DEFAULT_SAMPLER
from cfx.models.samplers.base import Sampler
from cfx.models.sampling import count_passes, draw_diffusion_noise, sample_volumes
from cfx.models.text import HFTextEncoder
from cfx.models.training.diffusion import DiffusionSettings, DiffusionTrainer
from cfx.models.training.levels import LEVEL_ROWS

__all__ = ["NETWORK", "TRAINER", "P_UNCOND", "SAMPLING_STEPS", "GUIDANCE", "GROUPS",
           "given_options", "check_new", "new_arguments", "resumed_arguments", "command",
           "new_trainer", "resumed_trainer", "normalisation", "served", "card", "Runner"]

NETWORK, TRAINER = CondDiffusion3D, DiffusionTrainer
P_UNCOND, SAMPLING_STEPS, GUIDANCE = 0.1, 20, 1.0  # defaults of a new run
LABEL_LEVELS = True  # a new run's network sets each label's level from the record (issue 16: on
# phantom:200 at 64³ with the body, from noise, 0.91-1.09 of four planted lung effects)
EDIT_WEIGHT = 0.01  # a new run's minimal-edit weight (issue 16: phantom:200 at 32³, the air
# outside the body moved 0.9 HU less per edit from noise, 36 %, the body less its level 0.7 HU)
GROUPS = 8  # GroupNorm groups of the UNet: its channels are multiples of this
_DEFAULT_CHANNELS = "16,32,32"


def given_options(options: dict) -> dict:
    """``--label-levels`` when given (a new run takes it; a resumed one must keep what it was
    trained with); nothing else (a resumed run continues bit for bit)."""
    if options.get("label_levels") is None:
        return {}
    return {"label_levels": bool(options["label_levels"])}


def check_new(options: dict, channels: str, levels: tuple[int, ...]) -> None:
    """A new run's ``--p-uncond`` and ``--channels`` (text and levels).

    Raises
    ------
    ValueError
        Out of range, the message starting with the flag.
    """
    p_uncond = options.get("p_uncond")
    if p_uncond is not None and not 0 <= p_uncond < 1:
        raise ValueError(f"--p-uncond: got {p_uncond}; give a probability in [0, 1)")
    check_level_rows(options, LABEL_LEVELS)
    edit_weight = options.get("edit_weight")
    if edit_weight is not None and not edit_weight >= 0:
        raise ValueError(f"--edit-weight: got {edit_weight}; give a weight >= 0")
    if any(c % GROUPS for c in levels):
        raise ValueError(f"--channels: got {channels!r}; for --arch diffusion every level must "
                         f"be a multiple of {GROUPS}, e.g. {_DEFAULT_CHANNELS}")


def new_arguments(common: dict, options: dict, given: dict, out: Path, steps: int) -> dict:
    """``training.arguments`` of a new run from the checked ``common`` ones and this
    architecture's ``options`` (None: not given; checked by :func:`check_new`)."""
    p_uncond = P_UNCOND if options.get("p_uncond") is None else options["p_uncond"]
    sampling_steps = (SAMPLING_STEPS if options.get("sampling_steps") is None
                      else options["sampling_steps"])
    arguments = {**{k: common[k] for k in ("cohort", "arch", "patch", "batch_size",
                                           "text_encoder", "channels", "phantom_shape",
                                           "drop_rate", "lr", "fusion_lr_scale", "body")},
                 "p_uncond": p_uncond, "sampling_steps": sampling_steps,
                 "edit_weight": (EDIT_WEIGHT if options.get("edit_weight") is None
                                 else options["edit_weight"]),
                 "label_levels": given.get("label_levels", LABEL_LEVELS), "seed": common["seed"]}
    if arguments["label_levels"]:
        arguments["level_rows"] = options.get("level_rows") or LEVEL_ROWS
    arguments["command"] = command(arguments, out, steps)
    return arguments


def resumed_arguments(saved: dict, given: dict, out: Path, steps: int) -> dict:
    """``training.arguments`` of a resumed run: as saved, its command line for the new total.

    Raises
    ------
    ValueError
        ``--label-levels`` (``--no-label-levels``) for a run trained without (with) them.
    """
    check_kept_levels(saved, given, out)
    return {**saved, "command": command(saved, out, steps)}


def command(arguments: dict, out: Path, steps: int) -> str:
    """The ``cfx train --arch diffusion`` command line that reproduces a run."""
    words = ["cfx", "train", "--arch", "diffusion", "--cohort", arguments["cohort"], "--out",
             str(out), "--steps", str(steps), "--patch", ",".join(map(str, arguments["patch"])),
             "--batch-size", str(arguments["batch_size"]), "--text-encoder",
             arguments["text_encoder"], "--channels", ",".join(map(str, arguments["channels"])),
             "--drop-rate", str(arguments["drop_rate"]), "--lr", str(arguments["lr"]),
             "--fusion-lr-scale", str(arguments.get("fusion_lr_scale", 1.0)),
             "--p-uncond", str(arguments["p_uncond"]), "--sampling-steps",
             str(arguments["sampling_steps"]),
             "--label-levels" if arguments.get("label_levels") else "--no-label-levels",
             "--seed", str(arguments["seed"])]
    if arguments.get("label_levels"):
        words += ["--level-rows", str(arguments.get("level_rows", LEVEL_ROWS))]
    words += ["--edit-weight", str(arguments.get("edit_weight", 0.0))]  # older runs: none
    if arguments.get("body"):
        words.append("--body")
    if arguments["cohort"].startswith("phantom"):
        words += ["--phantom-shape", ",".join(map(str, arguments["phantom_shape"]))]
    return shlex.join(words)


def _settings(arguments: dict) -> DiffusionSettings:
    return DiffusionSettings(batch_size=arguments["batch_size"], lr=arguments["lr"],
                             fusion_lr_scale=arguments.get("fusion_lr_scale", 1.0),
                             p_uncond=arguments["p_uncond"],
                             edit_weight=arguments.get("edit_weight", 0.0),
                             seed=arguments["seed"])


def new_trainer(arguments: dict, phrases: dict[str, list[str]], field_dims: list[int],
                label_channels: int, encoder: HFTextEncoder, source, device: torch.device,
                values: dict[str, list[float]] | None = None) -> DiffusionTrainer:
    """A new trainer: the UNet built and its text whitening fitted on ``phrases`` (field ->
    distinct phrases; ``values``: a numeric field -> the value of each of its phrases, read out
    instead of whitened)."""
    model = CondDiffusion3D(list(phrases), field_dims, label_channels=label_channels,
                            channels=arguments["channels"], norm_num_groups=GROUPS,
                            text_width=encoder.width,
                            label_levels=arguments.get("label_levels", False))
    trainer = DiffusionTrainer(model, encoder, source, _settings(arguments), device)
    trainer.fit_text(list(phrases.values()), [(values or {}).get(f) for f in phrases])
    if model.levels is not None:
        trainer.fit_levels(arguments.get("level_rows", LEVEL_ROWS))
    return trainer


def resumed_trainer(arguments: dict, generator: dict, folder: Path, encoder: HFTextEncoder,
                    source, device: torch.device) -> tuple[DiffusionTrainer, dict]:
    """The trainer saved in ``folder`` (``generator``: its constructor kwargs), and the
    training state's JSON."""
    trainer = DiffusionTrainer(CondDiffusion3D(**generator), encoder, source,
                               _settings(arguments), device)
    tensors, meta = load_training_state(folder)
    trainer.load_training_state(tensors, meta)
    return trainer, meta


def normalisation(network: CondDiffusion3D) -> dict:
    """What ``config.json``'s ``text_normalisation`` adds for this architecture."""
    return {"context": f"one token per field: its whitened vector zero-padded to "
                       f"{network.vector_dims} dims, one-hot of the field, present flag"}


def served(arguments: dict) -> dict:
    """Blocks ``config.json`` adds for this architecture: the sweep's sampling defaults."""
    return {"sampling": {"sampler": DEFAULT_SAMPLER, "steps": arguments["sampling_steps"],
                         "guidance": GUIDANCE, "eta": 0.0}}


def card(config: dict, generator: dict) -> tuple[str, str, str]:
    """The model card's description, extra training bullet and closing sections."""
    arguments, sampling = config["training"]["arguments"], config["sampling"]
    target = PREDICTIONS[generator["prediction"]]
    levels = ("; each label's level a linear map of the record, the UNet drawing the rest"
              if generator.get("label_levels") else "")
    what = f"""A mask + text conditional 3D diffusion model (`cond_diffusion3d`: MONAI
`DiffusionModelUNet` predicting the {target}, the label map as input channels, the record by
cross-attention to one token per field and by FiLM of every residual block{levels}) made with
`cfx train`: sampled with DDIM, it draws a chest CT (HU) for a lung/airway label map and a
clinical record, from noise or from a real CT."""
    schedule = generator["schedule"]
    edit = (f"- minimal-edit loss, weight {arguments['edit_weight']:g}: the mean absolute "
            "change of the clean-image\n  estimate when a row is read with another row's "
            "record\n" if arguments.get("edit_weight") else "")
    fitted = ("- label levels: fitted once before the first step, by least squares of each "
              f"label's voxels\n  on the record over {arguments.get('level_rows', LEVEL_ROWS)} "
              "training rows, and fixed; "
              "the UNet is trained on, and draws,\n  the CT less the level map\n"
              if generator.get("label_levels") else "")
    loss = f"""- loss: DDPM {target} prediction (mean squared error), {schedule} noise schedule over
  {generator["train_timesteps"]} steps (beta {generator["beta_start"]:g}..\
{generator["beta_end"]:g}); each
  field dropped with probability {arguments["drop_rate"]:g} and the whole record with
  probability {arguments["p_uncond"]:g} (classifier-free guidance); EMA weights served
{edit}{fitted}"""
    return what, loss, f"""
## Sampling
By default {sampling["steps"]} DDIM steps (eta {sampling["eta"]:g}) at guidance
{sampling["guidance"]:g}: `p = p_u + W (p_c - p_u)` on the {target} predicted with (`p_c`) and
without (`p_u`) the record, where 0 ignores the record, 1 is the
plain conditional model and W > 1 amplifies attribute effects. `cfx sweep --model
{config["name"]}` takes `--steps`, `--guidance`, `--eta`, and `--from-ct --strength S` to edit
each subject's own CT.

## Recovery of planted effects
Not evaluated yet: run `python benchmarks/recovery.py {config["name"]} --update-card` (from
noise) and add `--from-ct` (from each held-out subject's CT).
"""


class Runner:
    """Whole volumes from a served diffusion model: every record of a group sampled by
    ``sampler`` from the same noise (initial and per step), from noise or from a CT noised to
    ``strength`` (:func:`cfx.models.sampling.sample_volumes`).

    Parameters
    ----------
    network : CondDiffusion3D
    sampler : Sampler
        Built on ``network.noise_schedule``.
    steps : int
    guidance : float
    strength : float
        1 from noise; with a CT, how far it is noised.
    """

    def __init__(self, network: CondDiffusion3D, sampler: Sampler, steps: int,
                 guidance: float, strength: float):
        self.network, self.sampler = network, sampler
        self.steps, self.guidance, self.strength = steps, guidance, strength

    def conditions(self, rows: Sequence[torch.Tensor]) -> torch.Tensor:
        """One batch of the records' contexts, in row order."""
        return torch.cat(list(rows))

    def run(self, labels: torch.Tensor, conditions: torch.Tensor, shape: Sequence[int],
            seed: int, roi: Sequence[int], window_batch: int,
            ct: torch.Tensor | None = None, keep: torch.Tensor | None = None,
            source: torch.Tensor | None = None) -> torch.Tensor:
        """One HU volume (shape ``shape``) per row of ``conditions``, all from the noise of
        ``seed``; ``labels`` (1, C, X, Y, Z) one-hot, ``ct`` (1, 1, X, Y, Z) in HU, ``keep``
        (1, 1, X, Y, Z) bool, the voxels held to ``ct``, on the network's device, and
        ``source`` (1, F, context_dims) the record ``ct`` shows."""
        noise = draw_diffusion_noise(shape, seed)
        return sample_volumes(self.network, labels, conditions.to(labels.device), noise,
                              steps=self.steps, guidance=self.guidance, ct=ct,
                              strength=self.strength, roi=roi, window_batch=window_batch,
                              sampler=self.sampler, keep=keep,
                              source=None if source is None else source.to(labels.device))

    def passes(self, shape: Sequence[int], roi: Sequence[int],
               rows: int) -> tuple[tuple[int, ...], int]:
        """The window :meth:`run` uses over a volume of ``shape`` and how many network passes
        over it a run of ``rows`` records takes (every sampler step; both branches under
        guidance; the record-free run of a model with label levels)."""
        self.sampler.set_timesteps(self.steps, self.strength)
        return count_passes(self.network, shape, roi, len(self.sampler.timesteps),
                            self.guidance, rows)

    def time_window(self, window: Sequence[int], conditions: torch.Tensor,
                    device: torch.device) -> float:
        """Seconds of one network pass over one ``window`` (zero sample, background labels)
        under the first row of ``conditions``, on ``device`` (draws no random number)."""
        network = self.network
        sample = torch.zeros((1, 1, *window), device=device)
        labels = torch.zeros((1, network.config["label_channels"], *window), device=device)
        t = torch.zeros((1,), dtype=torch.long, device=device)
        context = conditions[:1].to(device)
        return time_window(lambda: network(sample, labels, t, context))
