"""Checkpoint folders read without torch: the layout, the format check, ``config.json``, the
content hash and the sampling block. :mod:`cfx.models.checkpoint` (which needs torch) writes
folders and loads weights, and re-exports all of this.

::

    CKPT/
      config.json              format, architecture, generator constructor kwargs, plus what the
                               caller records (HU window, labels, prompt template, text encoder,
                               text normalisation summary, training summary, sampling defaults,
                               cfx version)
      model.safetensors        generator weights (the EMA average) incl. text-whitening buffers
      README.md                model card
      training_state.safetensors + training_state.json   optional: what a resume needs
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from cfx.models.architectures import checkpoint_names

__all__ = ["CheckpointError", "read_config", "content_hash", "has_training_state",
           "sampling_block", "FORMAT", "CONFIG_FILE", "WEIGHTS_FILE",
           "CARD_FILE", "STATE_TENSORS", "STATE_JSON", "DEFAULT_SAMPLER"]

FORMAT = "cfx-checkpoint/1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"
STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"
DEFAULT_SAMPLER = "ddim"
"""The sampler of a ``sampling`` block that names none (checkpoints written before samplers
were named); :data:`cfx.models.samplers.DEFAULT_SAMPLER` (a test keeps them equal)."""
_PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin")


class CheckpointError(ValueError):
    """A checkpoint cannot be read: missing, not a checkpoint folder, a pickle, or corrupt."""


def has_training_state(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds what a resume needs."""
    folder = Path(folder)
    return (folder / STATE_TENSORS).is_file() and (folder / STATE_JSON).is_file()


def _check_folder(folder: Path) -> None:
    if folder.is_file() and folder.suffix.lower() in _PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{folder}: a {folder.suffix} file is a pickle, which can run arbitrary code when "
            "loaded; cfx reads only checkpoint folders (config.json + model.safetensors)")
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a checkpoint folder (config.json + "
                              "model.safetensors)")
    if not (folder / WEIGHTS_FILE).is_file():
        pickles = sorted(p.name for p in folder.iterdir()
                         if p.suffix.lower() in _PICKLE_SUFFIXES)
        if pickles:
            raise CheckpointError(
                f"{folder}: holds {pickles[0]}, a pickle, and no {WEIGHTS_FILE}; cfx never "
                "unpickles weights: save the state dict with safetensors instead")
        raise CheckpointError(f"{folder}: no {WEIGHTS_FILE}; not a cfx checkpoint folder")
    if not (folder / CONFIG_FILE).is_file():
        raise CheckpointError(f"{folder}: no {CONFIG_FILE}; not a cfx checkpoint folder")


def read_config(folder: str | os.PathLike) -> dict:
    """The decoded ``config.json`` of a checkpoint folder.

    Raises
    ------
    CheckpointError
        Not a checkpoint folder, a pickle, unreadable JSON or an unknown format.
    """
    folder = Path(folder)
    _check_folder(folder)
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{folder / CONFIG_FILE}: cannot read it ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise CheckpointError(f"{folder / CONFIG_FILE}: format {found!r}, expected {FORMAT!r}")
    if config.get("architecture") not in checkpoint_names():
        raise CheckpointError(f"{folder / CONFIG_FILE}: unknown architecture "
                              f"{config.get('architecture')!r}; known: "
                              f"{', '.join(checkpoint_names())}")
    return config


def sampling_block(config: dict) -> dict | None:
    """The ``sampling`` block of a decoded ``config.json`` with its sampler named (``"sampler"``
    first, :data:`DEFAULT_SAMPLER` where the block names none); None for a model that does not
    sample (a GAN). The other keys are ``steps``, ``guidance`` and the sampler's own options
    (``eta`` for DDIM)."""
    block = config.get("sampling")
    if block is None:
        return None
    return {"sampler": block.get("sampler", DEFAULT_SAMPLER),
            **{k: v for k, v in block.items() if k != "sampler"}}


def content_hash(folder: str | os.PathLike) -> str:
    """``"sha256:<hex>"`` of ``model.safetensors`` followed by ``config.json``."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        with open(folder / name, "rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()
