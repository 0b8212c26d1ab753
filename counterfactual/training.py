"""Training the mask + text conditional generators for ``cfx train`` (kept out of the CLI module,
which loads without torch and MONAI).

``--arch gan`` trains the GAN (:mod:`models.training.gan`), ``--arch diffusion`` the diffusion
model (:mod:`models.training.diffusion`); both read the same batch sources, fit the same per-field
text whitening and write the same checkpoint folder (config, weights, model card).

``--cohort DIR`` reads a cohort with CTs and trains on lung-centred patches; ``--cohort
phantom`` draws a new phantom subject for every training sample (an unlimited cohort), and
``--cohort phantom:N`` fixes ``N`` phantom subjects with one CT each. The checkpoint folder is
saved every ``--save-every`` steps and at the end, with what ``--resume`` needs to continue
exactly where it stopped. ``--l1-weight`` and ``--adversarial-weight`` set the GAN generator's
loss weights; given with ``--resume`` they change them from that step on (e.g.
``--adversarial-weight 0`` continues on L1 alone, without running the discriminator).
``--p-uncond`` (the share of rows trained without any record, for classifier-free guidance) and
``--sampling-steps`` (the DDIM steps the sweep uses by default) are the diffusion model's.

Both run under :class:`models.training.guard.TrainingGuard` with the settings :data:`GUARD`: a
diverged step (non-finite loss or gradient norm, or a loss or gradient-norm spike over its
running mean) is rolled back to the last good state at a lower learning rate, and after the last
allowed rollback the run stops with a one-line error naming the step. Only states the next step
confirmed good are saved; the config's ``training.steps`` is the step of the saved model and
``training.guard`` the rule and the rollbacks. Its ``grid`` block records the training volumes'
spacing, orientation, field of view, the patch and the HU window (:class:`counterfactual.grid.
ModelGrid`), which the sweep resamples each subject to.
"""

from __future__ import annotations

import copy
import shlex
import time
from dataclasses import asdict
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from counterfactual import __version__
from counterfactual.cohort import load_cohort
from counterfactual.errors import UserInputError
from counterfactual.grid import ModelGrid
from counterfactual.labels import DEFAULT_VOCABULARY
from counterfactual.phantom.anatomy import MIN_SIZE
from counterfactual.progress import console, track
from counterfactual.prompts import DEFAULT_TEMPLATE
from counterfactual.training_data import CohortSource, PhantomSource
from counterfactual.volume import read_geometry
from models.checkpoint import (
    CheckpointError,
    has_training_state,
    load_training_state,
    read_config,
    save_checkpoint,
    save_training_state,
)
from models.nets.cond_diffusion3d import PREDICTIONS, CondDiffusion3D
from models.nets.cond_gan3d import CondGAN3DGenerator
from models.samplers import DEFAULT_SAMPLER
from models.text import HFTextEncoder, TextEncoderLoadError
from models.training.diffusion import DiffusionSettings, DiffusionTrainer
from models.training.gan import GANSettings, GANTrainer
from models.training.guard import DivergenceError, GuardSettings, Snapshot, TrainingGuard
from models.training.state import load_module

ARCHITECTURE = "cond_gan3d"
DIFFUSION_ARCHITECTURE = "cond_diffusion3d"
ARCHES = {"gan": ARCHITECTURE, "diffusion": DIFFUSION_ARCHITECTURE}  # --arch -> checkpoint's
PHANTOM_FOV_MM = 320.0  # field of view of on-the-fly phantom subjects (64 voxels at 5 mm)
TEXT_MAX_LENGTH = 64  # tokens; the default template's longest prompt has 55
_FIT_DRAWS = 2048  # training records drawn to fit the text whitening
_FIELD_DIMS, _TOKEN_DIMS = 8, 32  # most principal axes kept per field, and of the tokens
L1_WEIGHT, ADVERSARIAL_WEIGHT = 100.0, 1.0  # generator loss weights of a new run
SMALL_COHORT = 500  # fewer training subjects than this get a warning (see the model card figures)
FUSION = "affine"  # GAN text fusion of a new run
FUSION_LR_SCALE = 1.0  # learning-rate factor of the layers that read the text, a new run
P_UNCOND, SAMPLING_STEPS, GUIDANCE = 0.1, 20, 1.0  # diffusion defaults
GUARD = GuardSettings()  # divergence rule, rollbacks and learning-rate cuts of every run
_CHANNELS = {"gan": "16,32,64,64", "diffusion": "16,32,32"}
_LR = {"gan": 5e-4, "diffusion": 2e-4}
_GROUPS = 8  # GroupNorm groups of the diffusion UNet: its channels are multiples of this
_ONLY = {"fusion": ("--fusion", "gan"),
         "l1_weight": ("--l1-weight", "gan"), "adversarial_weight": ("--adversarial-weight", "gan"),
         "p_uncond": ("--p-uncond", "diffusion"),
         "sampling_steps": ("--sampling-steps", "diffusion")}


def _triple(option: str, text: str, minimum: int) -> tuple[int, int, int]:
    try:
        values = tuple(int(p) for p in text.split(","))
    except ValueError:
        values = ()
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or min(values) < minimum:
        raise UserInputError(f"{option}: got {text!r}; give X,Y,Z (or one number), integers "
                             f">= {minimum}, e.g. 32,32,32")
    return values


def _channels(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(p) for p in text.split(","))
    except ValueError:
        values = ()
    if len(values) < 2 or min(values) < 1:
        raise UserInputError(f"--channels: got {text!r}; give at least two positive integers, "
                             "finest level first, e.g. 16,32,64,64")
    return values


def _loss_weights(l1_weight: float | None, adversarial_weight: float | None) -> dict:
    """The loss weights given (None: not given), checked."""
    weights = {}
    if l1_weight is not None:
        if not l1_weight >= 0:
            raise UserInputError(f"--l1-weight: got {l1_weight}; give a weight >= 0")
        weights["l1_weight"] = l1_weight
    if adversarial_weight is not None:
        if not adversarial_weight >= 0:
            raise UserInputError(f"--adversarial-weight: got {adversarial_weight}; give a "
                                 "weight >= 0")
        weights["adversarial_weight"] = adversarial_weight
    if weights.get("l1_weight", L1_WEIGHT) == 0 and weights.get("adversarial_weight",
                                                                ADVERSARIAL_WEIGHT) == 0:
        raise UserInputError("--l1-weight, --adversarial-weight: both are 0; the generator "
                             "would learn nothing, give one of them > 0")
    return weights


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserInputError("--device: cuda asked for but no CUDA device is visible; use "
                             "--device cpu or auto")
    return torch.device(name)


def _source(arguments: dict, quiet: bool):
    """The batch source named by ``arguments["cohort"]``."""
    spec, patch = arguments["cohort"], tuple(arguments["patch"])
    if spec == "phantom" or spec.startswith("phantom:"):
        count = spec.partition(":")[2]
        if count and (not count.isdigit() or int(count) < 1):
            raise UserInputError(f"--cohort: got {spec!r}; give a folder, 'phantom' or "
                                 "'phantom:N' with N >= 1 subjects")
        shape = tuple(arguments["phantom_shape"])
        spacing = tuple(PHANTOM_FOV_MM / n for n in shape)
        return PhantomSource(shape, spacing, patch, int(count) if count else None,
                             arguments["seed"], drop_rate=arguments["drop_rate"])
    cohort = load_cohort(spec)
    return CohortSource(cohort, patch, DEFAULT_VOCABULARY, DEFAULT_TEMPLATE,
                        arguments["drop_rate"],
                        progress=lambda items, what: track(items, what, quiet=quiet))


def _fit_phrases(source, seed: int) -> dict[str, list[str]]:
    """Field -> its distinct phrases over records drawn as training draws them, for the fields
    the template writes in more than one way (a field with one phrase cannot condition)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xF17]))
    seen: dict[str, dict[str, None]] = {}
    for record in source.records(rng, _FIT_DRAWS):
        for field, phrase in source.template.phrases(record).items():
            seen.setdefault(field, {})[phrase] = None
    return {field: list(phrases) for field, phrases in seen.items() if len(phrases) > 1}


def _command(arguments: dict, out: Path, steps: int) -> str:
    """The ``cfx train`` command line that reproduces a run."""
    words = ["cfx", "train", "--cohort", arguments["cohort"], "--out", str(out), "--steps",
             str(steps), "--patch", ",".join(map(str, arguments["patch"])), "--batch-size",
             str(arguments["batch_size"]), "--text-encoder", arguments["text_encoder"],
             "--fusion", arguments["fusion"], "--channels",
             ",".join(map(str, arguments["channels"])), "--drop-rate",
             str(arguments["drop_rate"]), "--lr", str(arguments["lr"]), "--fusion-lr-scale",
             str(arguments.get("fusion_lr_scale", 1.0)), "--l1-weight",
             str(arguments.get("l1_weight", L1_WEIGHT)), "--adversarial-weight",
             str(arguments.get("adversarial_weight", ADVERSARIAL_WEIGHT)), "--seed",
             str(arguments["seed"])]
    if arguments["cohort"].startswith("phantom"):
        words += ["--phantom-shape", ",".join(map(str, arguments["phantom_shape"]))]
    return shlex.join(words)


def _card_head(config: dict, what: str, loss: str = "") -> str:
    """Title, description, intended use and how it was trained: what every model card shares
    (``loss``: an extra training bullet, ending in a newline)."""
    training = config["training"]
    arguments = training["arguments"]
    minutes = training["elapsed_s"] / 60
    return f"""# {config["name"]}

{what}

## Intended use
Research and demonstration of counterfactual attribute analysis with cfx. **Not for diagnosis
or any clinical decision.** Trained on {_trained_on(config["training_cohort"])}; what it draws
for real scans says nothing about real patients.

## How it was trained
- command: `{training["command"]}`
- steps: {training["steps"]} (batch {arguments["batch_size"]}, patch
  {"x".join(map(str, arguments["patch"]))} voxels), wall time {minutes:.1f} min on
  {training["device"]}
{loss}- text encoder: `{config["text_encoder"]["name"]}` ({config["text_encoder"]["width"]}-d),
  reading each field of the record written alone by the prompt template, its pooled
  embedding centred and PCA-whitened per field: {_fields_line(config["text_normalisation"])}
- intensities: fixed window {config["hu_window"][0]:g}..{config["hu_window"][1]:g} HU
  (outputs are clipped to it)
- saved model: {_saved_line(training)}
- cfx {config["cfx_version"]}
"""


def _saved_line(training: dict) -> str:
    """Which step the served weights are from, and what the divergence guard did."""
    guard = training["guard"]
    line = (f"the EMA weights of step {training['steps']}, confirmed good by the next step's "
            f"loss; gradients clipped to norm {guard['clip_norm']:g}; divergence: "
            f"{guard['rule']}")
    events = [f"step {r['step']} ({r['reason']}) rolled back to step {r['to_step']}, learning "
              f"rate x{r['lr_scale']:g}" for r in guard["rollbacks"]]
    line += "; " + ("; ".join(events) if events else "no rollback")
    if "stopped" in guard:
        line += f"; stopped: {guard['stopped']}"
    return line


def _card(config: dict) -> str:
    fusion = config["training"]["arguments"]["fusion"]
    what = (f"A mask + text conditional 3D GAN (`{ARCHITECTURE}`, {fusion} text fusion) made with"
            "\n`cfx train`: it draws a chest CT (HU) for a lung/airway label map and a clinical "
            "prompt.")
    return _card_head(config, what) + f"""
## Recovery of planted effects
Not evaluated yet: run `python benchmarks/recovery.py {config["name"]} --update-card`.
"""


def _diffusion_command(arguments: dict, out: Path, steps: int) -> str:
    """The ``cfx train --arch diffusion`` command line that reproduces a run."""
    words = ["cfx", "train", "--arch", "diffusion", "--cohort", arguments["cohort"], "--out",
             str(out), "--steps", str(steps), "--patch", ",".join(map(str, arguments["patch"])),
             "--batch-size", str(arguments["batch_size"]), "--text-encoder",
             arguments["text_encoder"], "--channels", ",".join(map(str, arguments["channels"])),
             "--drop-rate", str(arguments["drop_rate"]), "--lr", str(arguments["lr"]),
             "--fusion-lr-scale", str(arguments.get("fusion_lr_scale", 1.0)),
             "--p-uncond", str(arguments["p_uncond"]), "--sampling-steps",
             str(arguments["sampling_steps"]), "--seed", str(arguments["seed"])]
    if arguments["cohort"].startswith("phantom"):
        words += ["--phantom-shape", ",".join(map(str, arguments["phantom_shape"]))]
    return shlex.join(words)


def _diffusion_card(config: dict, model: dict) -> str:
    """The model card of a diffusion checkpoint; ``model`` is the network's config."""
    arguments, sampling = config["training"]["arguments"], config["sampling"]
    target = PREDICTIONS[model["prediction"]]
    what = f"""A mask + text conditional 3D diffusion model (`{DIFFUSION_ARCHITECTURE}`: MONAI
`DiffusionModelUNet` predicting the {target}, the label map as input channels, the record by
cross-attention to one token per field and by FiLM of every residual block) made with `cfx
train`: sampled with DDIM, it draws a chest CT (HU) for a lung/airway label map and a clinical
record, from noise or from a real CT."""
    schedule = model["schedule"]
    loss = f"""- loss: DDPM {target} prediction (mean squared error), {schedule} noise schedule over
  {model["train_timesteps"]} steps (beta {model["beta_start"]:g}..{model["beta_end"]:g}); each
  field dropped with probability {arguments["drop_rate"]:g} and the whole record with
  probability {arguments["p_uncond"]:g} (classifier-free guidance); EMA weights served
"""
    return _card_head(config, what, loss) + f"""
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


def _fields_line(normalisation: dict) -> str:
    return ", ".join(f"{name} {f['dims']} dims ({100 * f['explained']:.0f} % of "
                     f"{f['phrases']} phrases)" for name, f in normalisation["fields"].items())


def _trained_on(summary: dict) -> str:
    if summary["kind"] == "phantom":
        count = summary["subjects"]
        count = "a new one per draw" if isinstance(count, str) else f"{count} of them"
        return (f"synthetic phantom subjects ({count}, {'x'.join(map(str, summary['shape']))} "
                f"voxels of {summary['spacing'][0]:g} mm)")
    return f"the cohort {summary['source']} ({summary['subjects']} subjects)"


def _training_geometry(arguments: dict, source) -> tuple[tuple, str, tuple]:
    """Spacing (mm), orientation (axis codes) and field of view (mm) of the training volumes:
    the phantom's, or over a cohort's masks the median spacing, the commonest orientation and
    the largest extent per array axis."""
    summary = source.summary()
    if summary["kind"] == "phantom":
        spacing = tuple(float(s) for s in summary["spacing"])
        return spacing, "RAS", tuple(n * s for n, s in zip(summary["shape"], spacing,
                                                             strict=True))
    grids = [read_geometry(subject.mask) for subject in load_cohort(arguments["cohort"])]
    spacings = np.array([np.linalg.norm(affine[:3, :3], axis=0) for _, affine in grids])
    extents = np.array([np.multiply(shape, s) for (shape, _), s in zip(grids, spacings,
                                                                        strict=True)])
    codes = ["".join(nib.aff2axcodes(affine)) for _, affine in grids]
    return (tuple(round(float(s), 6) for s in np.median(spacings, axis=0)),
            max(set(codes), key=codes.count),
            tuple(round(float(e), 3) for e in extents.max(axis=0)))


def _metadata(out: Path, generator: CondGAN3DGenerator | CondDiffusion3D, encoder: HFTextEncoder,
              source, arguments: dict, fitted_on: dict[str, int], steps: int, elapsed: float,
              device: torch.device, guard: dict, geometry: tuple) -> dict:
    normalisation = {
        "method": "per field: phrase alone, centre + PCA-whitening",
        "fields": {name: {"dims": whitener.dims, "phrases": fitted_on[name],
                          "explained": round(float(whitener.explained.sum()), 4)}
                   for name, whitener in zip(generator.fields, generator.text, strict=True)}}
    if isinstance(generator, CondGAN3DGenerator):
        normalisation["token_dims"] = generator.tokens.dims if generator.tokens is not None \
            else None
    else:
        normalisation["context"] = (f"one token per field: its whitened vector zero-padded to "
                                    f"{generator.vector_dims} dims, one-hot of the field, "
                                    "present flag")
    metadata = {
        "name": out.name,
        "hu_window": list(generator.hu_window),
        "labels": DEFAULT_VOCABULARY.to_json(),
        "prompt_template": {"name": DEFAULT_TEMPLATE.name, "sha256": DEFAULT_TEMPLATE.sha256},
        "text_encoder": {"name": encoder.name, "identifier": encoder.identifier,
                         "width": encoder.width, "max_length": encoder.max_length},
        "text_normalisation": normalisation,
        "training_cohort": source.summary(),
        "grid": ModelGrid(geometry[0], geometry[1], tuple(arguments["patch"]), geometry[2],
                          tuple(generator.hu_window)).to_json(),
        "training": {"command": arguments["command"], "arguments": arguments, "steps": steps,
                     "elapsed_s": round(elapsed, 1), "device": str(device), "guard": guard},
        "cfx_version": __version__,
    }
    if isinstance(generator, CondDiffusion3D):
        metadata["sampling"] = {"sampler": DEFAULT_SAMPLER, "steps": arguments["sampling_steps"],
                                "guidance": GUIDANCE, "eta": 0.0}
    return metadata


def _guard_metadata(snapshot: Snapshot, clip_norm: float, stopped: str | None = None) -> dict:
    """``training.guard`` of a checkpoint saved from ``snapshot``."""
    guard = {"rule": GUARD.rule(), "settings": asdict(GUARD), "clip_norm": clip_norm,
             "rollbacks": snapshot.meta["guard"]["rollbacks"]}
    if stopped is not None:
        guard["stopped"] = stopped
    return guard


def _save(out: Path, trainer: GANTrainer | DiffusionTrainer, snapshot: Snapshot,
          metadata: dict) -> None:
    """Write the checkpoint of a good state: its EMA weights served, its resume state."""
    served = copy.deepcopy(trainer.ema)
    load_module("ema", served, snapshot.tensors)
    if isinstance(trainer, GANTrainer):
        save_checkpoint(out, ARCHITECTURE, served, metadata, _card(metadata))
    else:
        save_checkpoint(out, DIFFUSION_ARCHITECTURE, served, metadata,
                        _diffusion_card(metadata, served.config))
    save_training_state(out, snapshot.tensors, snapshot.meta)


def _check_options(arch: str, options: dict) -> None:
    """Options given (not None) must belong to ``arch``."""
    for name, value in options.items():
        flag, owner = _ONLY[name]
        if value is not None and owner != arch:
            raise UserInputError(f"{flag}: applies to --arch {owner} only; this run is --arch "
                                 f"{arch}")


def _new_arguments(cohort: str | None, out: Path, arch: str, steps: int, patch: str,
                   batch_size: int, text_encoder: str, channels: str | None, phantom_shape: str,
                   drop_rate: float, lr: float | None, seed: int, weights: dict, fusion: str | None,
                   fusion_lr_scale: float | None, p_uncond: float | None,
                   sampling_steps: int | None) -> dict:
    """The checked ``training.arguments`` of a new run (what ``--resume`` reads back)."""
    lr = _LR[arch] if lr is None else lr
    if not 0 <= drop_rate < 1:
        raise UserInputError(f"--drop-rate: got {drop_rate}; give a probability in [0, 1)")
    if not lr > 0:
        raise UserInputError(f"--lr: got {lr}; give a positive learning rate")
    fusion_lr_scale = FUSION_LR_SCALE if fusion_lr_scale is None else fusion_lr_scale
    if not fusion_lr_scale > 0:
        raise UserInputError(f"--fusion-lr-scale: got {fusion_lr_scale}; give a positive factor")
    if arch == "gan":
        fusion = FUSION if fusion is None else fusion
    else:
        p_uncond = P_UNCOND if p_uncond is None else p_uncond
        sampling_steps = SAMPLING_STEPS if sampling_steps is None else sampling_steps
        if not 0 <= p_uncond < 1:
            raise UserInputError(f"--p-uncond: got {p_uncond}; give a probability in [0, 1)")
    text = _CHANNELS[arch] if channels is None else channels
    levels = _channels(text)
    if arch == "diffusion" and any(c % _GROUPS for c in levels):
        raise UserInputError(f"--channels: got {text!r}; for --arch diffusion every level must "
                             f"be a multiple of {_GROUPS}, e.g. {_CHANNELS['diffusion']}")
    multiple = 2 ** (len(levels) - 1)
    patch_shape = _triple("--patch", patch, multiple)
    if any(p % multiple for p in patch_shape):
        raise UserInputError(f"--patch: got {patch!r}; with {len(levels)} levels every side "
                             f"must be a multiple of {multiple}")
    if cohort is None:
        raise UserInputError("--cohort: missing; give a cohort folder, 'phantom' or "
                             "'phantom:N'")
    grid = list(_triple("--phantom-shape", phantom_shape, MIN_SIZE))
    if arch == "gan":
        arguments = {"cohort": cohort, "arch": arch, "patch": list(patch_shape),
                     "batch_size": batch_size, "text_encoder": text_encoder, "fusion": fusion,
                     "channels": list(levels), "phantom_shape": grid, "drop_rate": drop_rate,
                     "lr": lr, "fusion_lr_scale": fusion_lr_scale, "l1_weight": L1_WEIGHT,
                     "adversarial_weight": ADVERSARIAL_WEIGHT, "seed": seed, **weights}
        arguments["command"] = _command(arguments, out, steps)
    else:
        arguments = {"cohort": cohort, "arch": arch, "patch": list(patch_shape),
                     "batch_size": batch_size, "text_encoder": text_encoder,
                     "channels": list(levels), "phantom_shape": grid, "drop_rate": drop_rate,
                     "lr": lr, "fusion_lr_scale": fusion_lr_scale, "p_uncond": p_uncond,
                     "sampling_steps": sampling_steps,
                     "seed": seed}
        arguments["command"] = _diffusion_command(arguments, out, steps)
    return arguments


def _field_dims(phrases: dict[str, list[str]], encoder: HFTextEncoder) -> list[int]:
    return [min(_FIELD_DIMS, len(p) - 1, encoder.width // 2) for p in phrases.values()]


def _gan_trainer(arguments: dict, config: dict | None, out: Path, encoder: HFTextEncoder,
                 source, target: torch.device
                 ) -> tuple[GANTrainer, dict[str, int], float, dict | None]:
    """The GAN trainer: from the checkpoint when ``config`` is given (resume), else new with
    its whitening fitted; with the phrase counts the whitening was fitted on, the time spent
    so far and the guard's saved state (None on a new run)."""
    # the discriminator halves the patch per layer and ends with a 4-voxel kernel
    layers = max(1, min(3, int(np.log2(min(arguments["patch"]))) - 2))
    settings = GANSettings(batch_size=arguments["batch_size"], lr_generator=arguments["lr"],
                           lr_discriminator=arguments["lr"],
                           fusion_lr_scale=arguments.get("fusion_lr_scale", 1.0),
                           l1_weight=arguments.get("l1_weight", L1_WEIGHT),
                           adversarial_weight=arguments.get("adversarial_weight",
                                                            ADVERSARIAL_WEIGHT),
                           seed=arguments["seed"],
                           discriminator_layers=layers)
    torch.manual_seed(arguments["seed"])
    if config is not None:
        generator = CondGAN3DGenerator(**config["generator"])
        trainer = GANTrainer(generator, encoder, source, settings, target)
        tensors, meta = load_training_state(out)
        trainer.load_training_state(tensors, meta)
        return trainer, _fitted_on(config), config["training"]["elapsed_s"], meta.get("guard")
    phrases = _phrases(source, arguments["seed"])
    generator = CondGAN3DGenerator(
        list(phrases), _field_dims(phrases, encoder),
        label_channels=len(DEFAULT_VOCABULARY.labels) + 1, channels=arguments["channels"],
        fusion=arguments["fusion"], text_width=encoder.width,
        token_dims=min(_TOKEN_DIMS, encoder.width // 2))
    trainer = GANTrainer(generator, encoder, source, settings, target)
    trainer.fit_text(list(phrases.values()))
    trainer.calibrate_output(source(np.random.default_rng(arguments["seed"]), 16))
    return trainer, {name: len(p) for name, p in phrases.items()}, 0.0, None


def _diffusion_trainer(arguments: dict, config: dict | None, out: Path, encoder: HFTextEncoder,
                       source, target: torch.device
                       ) -> tuple[DiffusionTrainer, dict[str, int], float, dict | None]:
    """The diffusion trainer, as :func:`_gan_trainer`."""
    settings = DiffusionSettings(batch_size=arguments["batch_size"], lr=arguments["lr"],
                                 fusion_lr_scale=arguments.get("fusion_lr_scale", 1.0),
                                 p_uncond=arguments["p_uncond"], seed=arguments["seed"])
    torch.manual_seed(arguments["seed"])
    if config is not None:
        trainer = DiffusionTrainer(CondDiffusion3D(**config["generator"]), encoder, source,
                                   settings, target)
        tensors, meta = load_training_state(out)
        trainer.load_training_state(tensors, meta)
        return trainer, _fitted_on(config), config["training"]["elapsed_s"], meta.get("guard")
    phrases = _phrases(source, arguments["seed"])
    model = CondDiffusion3D(list(phrases), _field_dims(phrases, encoder),
                            label_channels=len(DEFAULT_VOCABULARY.labels) + 1,
                            channels=arguments["channels"], norm_num_groups=_GROUPS,
                            text_width=encoder.width)
    trainer = DiffusionTrainer(model, encoder, source, settings, target)
    trainer.fit_text(list(phrases.values()))
    return trainer, {name: len(p) for name, p in phrases.items()}, 0.0, None


def _phrases(source, seed: int) -> dict[str, list[str]]:
    phrases = _fit_phrases(source, seed)
    if not phrases:
        raise UserInputError("--cohort: no field of the clinical records takes more than one "
                             "value in the prompts; the text cannot condition anything")
    return phrases


def _fitted_on(config: dict) -> dict[str, int]:
    return {name: field["phrases"]
            for name, field in config["text_normalisation"]["fields"].items()}


def run_training(cohort: str | None, out: Path, arch: str, steps: int, patch: str,
                 batch_size: int, text_encoder: str, channels: str | None, phantom_shape: str,
                 drop_rate: float, lr: float | None, seed: int, save_every: int, log_every: int,
                 device: str, resume: bool, quiet: bool, fusion: str | None = None,
                 fusion_lr_scale: float | None = None, l1_weight: float | None = None,
                 adversarial_weight: float | None = None, p_uncond: float | None = None,
                 sampling_steps: int | None = None) -> None:
    """Train (or resume) and save the checkpoint folder ``out``; arguments as ``cfx train``.

    Options left as None take the architecture's default on a new run; ``channels`` and ``lr``
    default per architecture. On resume the run's architecture and settings are kept;
    ``l1_weight`` and ``adversarial_weight`` (GAN) given then apply from this step on and are
    recorded in the checkpoint's ``training.arguments``. An option of the other architecture
    is a user error.
    """
    target = _device(device)
    options = {"fusion": fusion, "l1_weight": l1_weight,
               "adversarial_weight": adversarial_weight, "p_uncond": p_uncond,
               "sampling_steps": sampling_steps}
    config = None
    if resume:
        try:
            config = read_config(out)
        except CheckpointError as exc:
            raise UserInputError(f"--resume: {exc}") from None
        arch = next(a for a, name in ARCHES.items() if name == config["architecture"])
    _check_options(arch, options)
    weights = _loss_weights(l1_weight, adversarial_weight) if arch == "gan" else {}
    if resume:
        if not has_training_state(out):
            raise UserInputError(f"--resume: {out} has no training state to continue from")
        if steps <= config["training"]["steps"]:
            raise UserInputError(f"--steps: {out} already has {config['training']['steps']} "
                                 f"steps; give a larger total than that, got {steps}")
        arguments = {**config["training"]["arguments"], **weights}
        if arch == "diffusion":  # resumes bit for bit and takes no option: one command redoes it
            arguments["command"] = _diffusion_command(arguments, out, steps)
    else:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UserInputError(f"--out: {out} exists and is not empty; give a new folder or "
                                 "add --resume to continue it")
        arguments = _new_arguments(cohort, out, arch, steps, patch, batch_size, text_encoder,
                                   channels, phantom_shape, drop_rate, lr, seed, weights, fusion,
                                   fusion_lr_scale, p_uncond, sampling_steps)
    source = _source(arguments, quiet)
    geometry = _training_geometry(arguments, source)
    try:
        encoder = HFTextEncoder(arguments["text_encoder"], max_length=TEXT_MAX_LENGTH,
                                device=target)
    except TextEncoderLoadError as exc:
        raise UserInputError(f"--text-encoder: {exc}") from None

    # 1. the network: from the checkpoint on resume, else new with whitening fitted
    build = _gan_trainer if arch == "gan" else _diffusion_trainer
    trainer, fitted_on, elapsed, resumed = build(arguments, config, out, encoder, source,
                                                 target)

    subjects = source.summary()["subjects"]
    if isinstance(subjects, int) and subjects < SMALL_COHORT:
        console.print(f"warning: {subjects} training subjects; on phantoms, GANs trained on 50-200 "
                      "subjects changed the body outside the lungs by 11-13 HU per attribute edit "
                      "(4-6 HU with thousands); judge this model with cfx audit", soft_wrap=True)

    # 2. train under the guard: log accepted steps, save each kept state once the step after
    #    it confirmed it good, roll diverged steps back (models.training.guard)
    guard = TrainingGuard(trainer, GUARD, resumed)
    clock, saved = time.perf_counter(), trainer.step
    network = trainer.generator if isinstance(trainer, GANTrainer) else trainer.model
    clip_norm = trainer.settings.clip_norm

    def save(snapshot: Snapshot, stopped: str | None = None) -> None:
        spent = elapsed + time.perf_counter() - clock
        _save(out, trainer, snapshot, _metadata(
            out, network, encoder, source, arguments, fitted_on, snapshot.step, spent, target,
            _guard_metadata(snapshot, clip_norm, stopped), geometry))

    totals: dict[str, float] = {}
    count = 0
    try:
        for outcome in track(guard.run(steps, save_every), "train",
                             total=steps - trainer.step + 1, quiet=quiet):
            if outcome.rollback is not None:
                console.print(outcome.rollback.message(), soft_wrap=True)
                totals.clear()
                count = 0
                continue
            if outcome.confirmed is not None:
                save(outcome.confirmed)
                saved = outcome.confirmed.step
            if outcome.probe:
                continue
            for key, value in outcome.values.items():
                totals[key] = totals.get(key, 0.0) + value
            count += 1
            if outcome.step % log_every == 0 and not quiet:
                console.print(f"step {outcome.step}/{steps}: " + ", ".join(
                    f"{k} {v / count:.3g}" for k, v in totals.items()))
                totals.clear()
                count = 0
    except DivergenceError as exc:
        stopped = f"diverged at step {exc.step} ({exc.reason}) with no rollback left"
        if exc.good.step > saved:
            save(exc.good, stopped)
            saved = exc.good.step
        kept = (f"{out} holds the model of step {saved}, the last good one" if saved > 0
                else "nothing was saved")
        raise UserInputError(
            f"--lr: training diverged at step {exc.step} ({exc.reason}) after "
            f"{len(exc.rollbacks)} rollbacks (learning rate cut to "
            f"{arguments['lr'] * guard.lr_scale:g}); {kept}; "
            "start a new run with a lower --lr") from None
    if not quiet:
        rolled = (f"; {len(guard.rollbacks)} rollbacks, learning rate x{guard.lr_scale:g}"
                  if guard.rollbacks else "")
        console.print(f"saved {out}: the model of step {guard.good.step}{rolled}",
                      soft_wrap=True)
