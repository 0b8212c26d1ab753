"""Training the mask + text conditional generators for ``cfx train`` (kept out of the CLI module,
which loads without torch and MONAI).

``--arch gan`` trains the GAN (:mod:`cfx.models.training.gan`), ``--arch diffusion`` the diffusion
model (:mod:`cfx.models.training.diffusion`); both read the same batch sources, fit the same
per-field text whitening and write the same checkpoint folder (config, weights, model card).

``--cohort DIR`` reads a cohort with CTs and trains on lung-centred patches; ``--cohort
phantom`` draws a new phantom subject for every training sample (an unlimited cohort), and
``--cohort phantom:N`` fixes ``N`` phantom subjects with one CT each. The checkpoint folder is
saved every ``--save-every`` steps and at the end, with what ``--resume`` needs to continue
exactly where it stopped. ``--l1-weight`` and ``--adversarial-weight`` set the GAN generator's
loss weights; given with ``--resume`` they change them from that step on (e.g.
``--adversarial-weight 0`` continues on L1 alone, without running the discriminator).
``--p-uncond`` (the share of rows trained without any record, for classifier-free guidance) and
``--sampling-steps`` (the DDIM steps the sweep uses by default) are the diffusion model's.

Both run under :class:`cfx.models.training.guard.TrainingGuard` with the settings :data:`GUARD`: a
diverged step (non-finite loss or gradient norm, or a loss or gradient-norm spike over its
running mean) is rolled back to the last good state at a lower learning rate, and after the last
allowed rollback the run stops with a one-line error naming the step. Only states the next step
confirmed good are saved; the config's ``training.steps`` is the step of the saved model and
``training.guard`` the rule and the rollbacks. Its ``grid`` block records the training volumes'
spacing, orientation, field of view, the patch and the HU window (:class:`cfx.counterfactual.grid.
ModelGrid`), which the sweep resamples each subject to.

A cohort folder is streamed (:mod:`cfx.counterfactual.training_stream`): each subject is resampled
onto the training grid once and cached on disk (``--cache``, default :func:`default_cache`), and
``--workers`` processes read the patches. ``--ddp`` runs one process of a ``torchrun`` launch
(``torchrun --nproc-per-node N --no-python cfx train --ddp ...``; NCCL on CUDA, gloo on CPU):
the global batch ``--batch-size`` is split over the processes (:mod:`cfx.models.training.
distributed`), and rank 0 prepares the cache, prints and saves; ``--resume`` works the same.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import asdict
from pathlib import Path
from types import ModuleType

import nibabel as nib
import numpy as np
import torch
from torch import distributed as dist

from cfx.analysis.controls import BODY_MARGIN_MM
from cfx.counterfactual import __version__
from cfx.counterfactual.attributes import DEFAULT_ATTRIBUTES, NumericAttribute
from cfx.counterfactual.cohort import load_cohort
from cfx.counterfactual.errors import KeptOutputError, UserInputError
from cfx.counterfactual.grid import ModelGrid, check_resumed_grid
from cfx.counterfactual.labels import DEFAULT_VOCABULARY
from cfx.counterfactual.phantom.anatomy import MIN_SIZE
from cfx.counterfactual.progress import console, track
from cfx.counterfactual.prompts import DEFAULT_TEMPLATE
from cfx.counterfactual.training_cards import model_card
from cfx.counterfactual.training_data import PhantomSource
from cfx.counterfactual.training_stream import StreamingCohortSource
from cfx.counterfactual.vocabularies import Vocabularies
from cfx.counterfactual.volume import read_geometry
from cfx.models.architectures import (
    ARCHITECTURES,
    Architecture,
    by_checkpoint,
    implementation,
    look_up,
)
from cfx.models.checkpoint import (
    CheckpointError,
    has_training_state,
    read_config,
    save_checkpoint,
    save_training_state,
)
from cfx.models.text import HFTextEncoder, TextEncoderLoadError
from cfx.models.training.guard import DivergenceError, GuardSettings, Snapshot, TrainingGuard
from cfx.models.training.state import load_module

PHANTOM_FOV_MM = 320.0  # field of view of on-the-fly phantom subjects (64 voxels at 5 mm)
TEXT_MAX_LENGTH = 64  # tokens; the default template's longest prompt has 55
_FIT_DRAWS = 2048  # training records drawn to fit the text whitening
_FIELD_DIMS = 8  # most principal axes kept per field
SMALL_COHORT = 500  # fewer training subjects than this get a warning (see the model card figures)
FUSION_LR_SCALE = 1.0  # learning-rate factor of the layers that read the text, a new run
GUARD = GuardSettings()  # divergence rule, rollbacks and learning-rate cuts of every run
BODY_CHANNEL = {  # config.json's "body" block of a model trained with --body
    "channel": len(DEFAULT_VOCABULARY.labels) + 1,
    "rule": "unlabelled voxels inside the body outline: not air below air_hu connected to a "
            "face of the volume (cfx.analysis.controls.body_outline) of the subject's CT; without "
            "a CT, the lungs' axial convex hull grown by margin_mm on every slice "
            "(cfx.analysis.controls.synthetic_body)",
    "air_hu": -500.0, "margin_mm": BODY_MARGIN_MM}


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


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserInputError("--device: cuda asked for but no CUDA device is visible; use "
                             "--device cpu or auto")
    return torch.device(name)


def _source(arguments: dict, quiet: bool, cache: Path, workers: int, geometry: tuple):
    """The batch source named by ``arguments["cohort"]``: phantom subjects, or a cohort folder
    streamed from the disk cache ``cache`` on the training grid ``geometry`` (spacing,
    orientation, field of view; read by ``workers``)."""
    spec, patch = arguments["cohort"], tuple(arguments["patch"])
    if spec == "phantom" or spec.startswith("phantom:"):
        count = spec.partition(":")[2]
        if count and (not count.isdigit() or int(count) < 1):
            raise UserInputError(f"--cohort: got {spec!r}; give a folder, 'phantom' or "
                                 "'phantom:N' with N >= 1 subjects")
        shape = tuple(arguments["phantom_shape"])
        spacing = tuple(PHANTOM_FOV_MM / n for n in shape)
        return PhantomSource(shape, spacing, patch, int(count) if count else None,
                             arguments["seed"], drop_rate=arguments["drop_rate"],
                             body=arguments.get("body", False))
    cohort = load_cohort(spec)
    grid = ModelGrid(geometry[0], geometry[1], patch, geometry[2], (0.0, 0.0))
    return StreamingCohortSource(cohort, patch, grid, cache, DEFAULT_VOCABULARY,
                                 DEFAULT_TEMPLATE, arguments["drop_rate"],
                                 arguments.get("body", False), workers,
                                 progress=lambda items, what: track(items, what, quiet=quiet))


def _fit_phrases(source, seed: int) -> tuple[dict[str, list[str]], dict[str, list[float]]]:
    """Field -> its distinct phrases over records drawn as training draws them, for the fields
    the template writes in more than one way (a field with one phrase cannot condition); and
    numeric field -> the value each of its phrases writes (read out, not whitened: see
    :mod:`cfx.models.text_conditioning`)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xF17]))
    seen: dict[str, dict[str, float | None]] = {}
    for record in source.records(rng, _FIT_DRAWS):
        for field, phrase in source.template.phrases(record).items():
            seen.setdefault(field, {}).setdefault(phrase, _numeric_value(field, record))
    phrases = {field: list(written) for field, written in seen.items() if len(written) > 1}
    values = {field: list(seen[field].values()) for field in phrases
              if None not in seen[field].values() and len(set(seen[field].values())) > 1}
    return phrases, values


def _numeric_value(field: str, record: dict) -> float | None:
    """The value of a numeric attribute's field in ``record``; None for any other field."""
    if field not in DEFAULT_ATTRIBUTES.names or \
            not isinstance(DEFAULT_ATTRIBUTES.attribute(field), NumericAttribute):
        return None
    return float(record[field])


def _training_geometry(arguments: dict) -> tuple[tuple, str, tuple]:
    """Spacing (mm), orientation (axis codes) and field of view (mm) of the training volumes:
    the phantom's, or over a cohort's masks the median spacing, the commonest orientation and
    the largest extent per array axis."""
    if arguments["cohort"].startswith("phantom"):
        shape = arguments["phantom_shape"]
        spacing = tuple(PHANTOM_FOV_MM / n for n in shape)
        return spacing, "RAS", tuple(n * s for n, s in zip(shape, spacing, strict=True))
    return _cohort_geometry(load_cohort(arguments["cohort"]))


def _cohort_geometry(cohort) -> tuple[tuple, str, tuple]:
    """Median spacing (mm), commonest orientation and largest extent (mm) of a cohort's masks:
    the grid it is trained on."""
    grids = [read_geometry(subject.mask) for subject in cohort]
    spacings = np.array([np.linalg.norm(affine[:3, :3], axis=0) for _, affine in grids])
    extents = np.array([np.multiply(shape, s) for (shape, _), s in zip(grids, spacings,
                                                                        strict=True)])
    codes = ["".join(nib.aff2axcodes(affine)) for _, affine in grids]
    return (tuple(round(float(s), 6) for s in np.median(spacings, axis=0)),
            max(set(codes), key=codes.count),
            tuple(round(float(e), 3) for e in extents.max(axis=0)))


def _metadata(out: Path, architecture: ModuleType, generator: torch.nn.Module,
              encoder: HFTextEncoder, source, arguments: dict, fitted_on: dict[str, dict],
              steps: int, elapsed: float, device: torch.device, guard: dict,
              geometry: tuple, processes: int = 1) -> dict:
    normalisation = {
        "method": "per field: phrase alone, centre + PCA-whitening; a numeric field: ridge "
                  "read-out of its value",
        "fields": {name: {"dims": whitener.dims, **fitted_on[name],
                          "explained": round(float(whitener.explained.sum()), 4)}
                   for name, whitener in zip(generator.fields, generator.text, strict=True)},
        **architecture.normalisation(generator)}
    metadata = {
        "name": out.name,
        "hu_window": list(generator.hu_window),
        # attributes, labels and template the records were read with
        # (cfx.counterfactual.vocabularies)
        **Vocabularies(DEFAULT_ATTRIBUTES, source.vocabulary, source.template).to_json(),
        **({"body": BODY_CHANNEL} if arguments.get("body") else {}),
        "text_encoder": {"name": encoder.name, "identifier": encoder.identifier,
                         "width": encoder.width, "max_length": encoder.max_length},
        "text_normalisation": normalisation,
        "training_cohort": source.summary(),
        "grid": ModelGrid(geometry[0], geometry[1], tuple(arguments["patch"]), geometry[2],
                          tuple(generator.hu_window)).to_json(),
        "training": {"command": arguments["command"], "arguments": arguments, "steps": steps,
                     "elapsed_s": round(elapsed, 1), "device": str(device),
                     "processes": processes, "guard": guard},
        "cfx_version": __version__,
        **architecture.served(arguments),
    }
    return metadata


def _guard_metadata(snapshot: Snapshot, clip_norm: float, stopped: str | None = None) -> dict:
    """``training.guard`` of a checkpoint saved from ``snapshot``."""
    guard = {"rule": GUARD.rule(), "settings": asdict(GUARD), "clip_norm": clip_norm,
             "rollbacks": snapshot.meta["guard"]["rollbacks"]}
    if stopped is not None:
        guard["stopped"] = stopped
    return guard


def _save(out: Path, architecture: Architecture, trainer, snapshot: Snapshot,
          metadata: dict) -> None:
    """Write the checkpoint of a good state: its EMA weights served, its resume state."""
    served = copy.deepcopy(trainer.ema)
    load_module("ema", served, snapshot.tensors)
    card = model_card({"generator": served.config, **metadata}, implementation(architecture))
    save_checkpoint(out, architecture.checkpoint, served, metadata, card)
    save_training_state(out, snapshot.tensors, snapshot.meta)


def _check_options(architecture: Architecture, options: dict) -> None:
    """Options given (not None) must belong to ``architecture``."""
    for name, value in options.items():
        if value is None or name in architecture.options:
            continue
        owners = [a for a in ARCHITECTURES.values() if name in a.options]
        flag = owners[0].options[name]
        raise UserInputError(f"{flag}: applies to --arch {' or '.join(a.name for a in owners)} "
                             f"only; this run is --arch {architecture.name}")


def _new_arguments(cohort: str | None, out: Path, architecture: Architecture, steps: int,
                   patch: str, batch_size: int, text_encoder: str, channels: str | None,
                   phantom_shape: str, drop_rate: float, lr: float | None, seed: int,
                   fusion_lr_scale: float | None, body: bool | None, options: dict,
                   given: dict) -> dict:
    """The checked ``training.arguments`` of a new run (what ``--resume`` reads back)."""
    lr = architecture.lr if lr is None else lr
    body = architecture.body if body is None else body
    if not 0 <= drop_rate < 1:
        raise UserInputError(f"--drop-rate: got {drop_rate}; give a probability in [0, 1)")
    if not lr > 0:
        raise UserInputError(f"--lr: got {lr}; give a positive learning rate")
    fusion_lr_scale = FUSION_LR_SCALE if fusion_lr_scale is None else fusion_lr_scale
    if not fusion_lr_scale > 0:
        raise UserInputError(f"--fusion-lr-scale: got {fusion_lr_scale}; give a positive factor")
    text = architecture.channels if channels is None else channels
    levels = _channels(text)
    module = implementation(architecture)
    try:
        module.check_new(options, text, levels)
    except ValueError as exc:
        raise UserInputError(str(exc)) from None
    multiple = 2 ** (len(levels) - 1)
    patch_shape = _triple("--patch", patch, multiple)
    if any(p % multiple for p in patch_shape):
        raise UserInputError(f"--patch: got {patch!r}; with {len(levels)} levels every side "
                             f"must be a multiple of {multiple}")
    if cohort is None:
        raise UserInputError("--cohort: missing; give a cohort folder, 'phantom' or "
                             "'phantom:N'")
    grid = list(_triple("--phantom-shape", phantom_shape, MIN_SIZE))
    common = {"cohort": cohort, "arch": architecture.name, "patch": list(patch_shape),
              "batch_size": batch_size, "text_encoder": text_encoder, "channels": list(levels),
              "phantom_shape": grid, "drop_rate": drop_rate, "lr": lr,
              "fusion_lr_scale": fusion_lr_scale, "body": bool(body), "seed": seed}
    return module.new_arguments(common, options, given, out, steps)


def _field_dims(phrases: dict[str, list[str]], values: dict[str, list[float]],
                encoder: HFTextEncoder) -> list[int]:
    """Axes per field: 1 for a numeric read-out, else up to :data:`_FIELD_DIMS` principal
    ones."""
    return [1 if field in values else min(_FIELD_DIMS, len(p) - 1, encoder.width // 2)
            for field, p in phrases.items()]


def _trainer(architecture: Architecture, arguments: dict, config: dict | None, out: Path,
             encoder: HFTextEncoder, source, target: torch.device
             ) -> tuple[object, dict[str, dict], float, dict | None]:
    """The architecture's trainer: from the checkpoint when ``config`` is given (resume), else
    new with its whitening fitted; with what each field's text was fitted on (``phrases``, and
    ``readout`` for a numeric read-out), the time spent so far and the guard's saved state
    (None on a new run)."""
    module = implementation(architecture)
    torch.manual_seed(arguments["seed"])
    if config is not None:
        trainer, meta = module.resumed_trainer(arguments, config["generator"], out, encoder,
                                               source, target)
        return trainer, _fitted_on(config), config["training"]["elapsed_s"], meta.get("guard")
    phrases, values = _phrases(source, arguments["seed"])
    channels = len(DEFAULT_VOCABULARY.labels) + 1 + bool(arguments.get("body"))
    trainer = module.new_trainer(arguments, phrases, _field_dims(phrases, values, encoder),
                                 channels, encoder, source, target, values)
    fitted_on = {name: {"phrases": len(p), **({"readout": trainer.readouts[name]}
                                              if name in trainer.readouts else {})}
                 for name, p in phrases.items()}
    return trainer, fitted_on, 0.0, None


def _phrases(source, seed: int) -> tuple[dict[str, list[str]], dict[str, list[float]]]:
    phrases, values = _fit_phrases(source, seed)
    if not phrases:
        raise UserInputError("--cohort: no field of the clinical records takes more than one "
                             "value in the prompts; the text cannot condition anything")
    return phrases, values


def _fitted_on(config: dict) -> dict[str, dict]:
    return {name: {key: field[key] for key in ("phrases", "readout") if key in field}
            for name, field in config["text_normalisation"]["fields"].items()}


def run_training(cohort: str | None, out: Path, arch: str, steps: int, patch: str,
                 batch_size: int, text_encoder: str, channels: str | None, phantom_shape: str,
                 drop_rate: float, lr: float | None, seed: int, save_every: int, log_every: int,
                 device: str, resume: bool, quiet: bool, fusion: str | None = None,
                 fusion_lr_scale: float | None = None, l1_weight: float | None = None,
                 adversarial_weight: float | None = None, p_uncond: float | None = None,
                 sampling_steps: int | None = None, body: bool | None = None,
                 edit_weight: float | None = None, gate_decay: float | None = None,
                 region_weight: float | None = None, label_levels: bool | None = None,
                 film_decay: float | None = None, level_rows: int | None = None,
                 workers: int = 2,
                 cache: Path | None = None, ddp: bool = False) -> None:
    """Train (or resume) and save the checkpoint folder ``out``; arguments as ``cfx train``.

    Options left as None take the architecture's default on a new run; ``channels`` and ``lr``
    default per architecture. On resume the run's architecture and settings are kept;
    ``l1_weight`` and ``adversarial_weight`` (GAN) given then apply from this step on and are
    recorded in the checkpoint's ``training.arguments``. An option of the other architecture
    is a user error. A cohort folder is streamed from ``cache`` (default
    :func:`default_cache`) by ``workers`` reader processes. ``ddp``: this is one process of a
    ``torchrun`` launch; the global batch ``batch_size`` is split over the processes
    (:mod:`cfx.models.training.distributed`), rank 0 prepares the cache, prints and saves.
    """
    options = dict(locals())
    del options["ddp"]
    if not ddp:
        _run_training(**options, rank=0, world=1, target=_device(device))
        return
    rank, world, target = _start_distributed(device)
    try:
        _run_training(**{**options, "quiet": quiet or rank > 0}, rank=rank, world=world,
                      target=target)
    finally:
        dist.destroy_process_group()


def default_cache() -> Path:
    """The training cache: ``$XDG_CACHE_HOME/cfx/training`` (``~/.cache/cfx/training``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cfx" / "training"


def _start_distributed(device: str) -> tuple[int, int, torch.device]:
    """Join the ``torchrun`` process group: (rank, world size, this process's device)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise UserInputError("--ddp: RANK and WORLD_SIZE are not set; launch with torchrun "
                             "--nproc-per-node N --no-python cfx train --ddp ...")
    target = _device(device)
    if target.type == "cuda":
        target = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(target)
    dist.init_process_group("nccl" if target.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), target


def barrier() -> None:
    """Wait for every process of the group."""
    dist.barrier()


def _run_training(cohort: str | None, out: Path, arch: str, steps: int, patch: str,
                  batch_size: int, text_encoder: str, channels: str | None, phantom_shape: str,
                  drop_rate: float, lr: float | None, seed: int, save_every: int,
                  log_every: int, device: str, resume: bool, quiet: bool, fusion: str | None,
                  fusion_lr_scale: float | None, l1_weight: float | None,
                  adversarial_weight: float | None, p_uncond: float | None,
                  sampling_steps: int | None, body: bool | None, edit_weight: float | None,
                  gate_decay: float | None, region_weight: float | None,
                  label_levels: bool | None, film_decay: float | None,
                  level_rows: int | None, workers: int,
                  cache: Path | None, rank: int, world: int, target: torch.device) -> None:
    options = {"fusion": fusion, "l1_weight": l1_weight, "edit_weight": edit_weight,
               "region_weight": region_weight, "gate_decay": gate_decay,
               "label_levels": label_levels, "film_decay": film_decay,
               "adversarial_weight": adversarial_weight, "p_uncond": p_uncond,
               "sampling_steps": sampling_steps, "level_rows": level_rows}
    config = None
    if resume:
        try:
            config = read_config(out)
        except CheckpointError as exc:
            raise UserInputError(f"--resume: {exc}") from None
        architecture = by_checkpoint(config["architecture"])
    else:
        try:
            architecture = look_up(arch)
        except ValueError as exc:
            raise UserInputError(f"--arch: {exc}") from None
    _check_options(architecture, options)
    module = implementation(architecture)
    try:
        given = module.given_options(options)
    except ValueError as exc:
        raise UserInputError(str(exc)) from None
    if resume:
        if not has_training_state(out):
            raise UserInputError(f"--resume: {out} has no training state to continue from")
        if steps <= config["training"]["steps"]:
            raise UserInputError(f"--steps: {out} already has {config['training']['steps']} "
                                 f"steps; give a larger total than that, got {steps}")
        saved_body = bool(config["training"]["arguments"].get("body"))
        if body is not None and body != saved_body:
            flag, trained = ("--body", "without") if body else ("--no-body", "with")
            raise UserInputError(f"{flag}: {out} was trained {trained} the body channel and "
                                 f"cannot change that on resume; start a new run with {flag}")
        try:
            arguments = module.resumed_arguments(config["training"]["arguments"], given, out,
                                                 steps)
        except ValueError as exc:
            raise UserInputError(str(exc)) from None
    else:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UserInputError(f"--out: {out} exists and is not empty; give a new folder or "
                                 "add --resume to continue it")
        arguments = _new_arguments(cohort, out, architecture, steps, patch, batch_size,
                                   text_encoder, channels, phantom_shape, drop_rate, lr, seed,
                                   fusion_lr_scale, body, options, given)
    geometry = _training_geometry(arguments)
    if resume:  # the cohort must still be on the grid the checkpoint was trained on
        check_resumed_grid(config, geometry[0], geometry[1], str(out / "config.json"))
    if world > 1 and arguments["batch_size"] % world:
        raise UserInputError(f"--batch-size: {arguments['batch_size']} rows cannot be split "
                             f"evenly over {world} processes; give a multiple of {world}")
    cache = default_cache() if cache is None else Path(cache)
    if rank > 0:  # rank 0 prepares the cohort's cache; the others then find it complete
        barrier()
    source = _source(arguments, quiet, cache, workers, geometry)
    if rank == 0 and world > 1:
        barrier()
    try:
        encoder = HFTextEncoder(arguments["text_encoder"], max_length=TEXT_MAX_LENGTH,
                                device=target)
    except TextEncoderLoadError as exc:
        raise UserInputError(f"--text-encoder: {exc}") from None

    # 1. the network: from the checkpoint on resume, else new with whitening fitted
    trainer, fitted_on, elapsed, resumed = _trainer(architecture, arguments, config, out,
                                                    encoder, source, target)
    if world > 1:
        trainer.distribute(rank, world)

    subjects = source.summary()["subjects"]
    if isinstance(subjects, int) and subjects < SMALL_COHORT and rank == 0:
        console.print(f"warning: {subjects} training subjects; on phantoms, models trained on "
                      "200 fixed subjects with the default recipe recovered 0.88-1.09x (GAN, "
                      "1200 steps, three cohorts at 48³ and 64³) and 0.73-1.09x (diffusion, 2000 "
                      "steps, from noise, 32³ and 64³) of a planted lung effect and moved the "
                      "rest of the volume by 0.2-2.9 HU (GAN) and 1.3-3.0 HU (diffusion) per "
                      "edit, where a "
                      "200-subject cohort's own estimate of an 8-20 HU lung effect has a "
                      "standard error of 1.5-2.5 HU and its body's chance association with an "
                      "attribute 2-5 HU; judge this model with the control regions of cfx stats "
                      "and with cfx audit", soft_wrap=True)

    # 2. train under the guard: log accepted steps, save each kept state once the step after
    #    it confirmed it good, roll diverged steps back (cfx.models.training.guard)
    guard = TrainingGuard(trainer, GUARD, resumed)
    clock, saved = time.perf_counter(), trainer.step
    network = trainer.network
    clip_norm = trainer.settings.clip_norm

    def save(snapshot: Snapshot, stopped: str | None = None) -> None:
        if rank > 0:  # every process holds the same state; rank 0 writes it
            return
        spent = elapsed + time.perf_counter() - clock
        _save(out, architecture, trainer, snapshot, _metadata(
            out, module, network, encoder, source, arguments, fitted_on, snapshot.step, spent,
            target, _guard_metadata(snapshot, clip_norm, stopped), geometry, world))

    totals: dict[str, float] = {}
    count = 0
    try:
        for outcome in track(guard.run(steps, save_every), "train",
                             total=steps - trainer.step + 1, quiet=quiet):
            if outcome.rollback is not None:
                if rank == 0:
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
        error = KeptOutputError if saved > 0 else UserInputError  # keep the last good model
        raise error(
            f"--lr: training diverged at step {exc.step} ({exc.reason}) after "
            f"{len(exc.rollbacks)} rollbacks (learning rate cut to "
            f"{arguments['lr'] * guard.lr_scale:g}); {kept}; "
            "start a new run with a lower --lr") from None
    if not quiet:
        rolled = (f"; {len(guard.rollbacks)} rollbacks, learning rate x{guard.lr_scale:g}"
                  if guard.rollbacks else "")
        console.print(f"saved {out}: the model of step {guard.good.step}{rolled}",
                      soft_wrap=True)
