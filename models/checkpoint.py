"""Checkpoint folders: ``config.json`` + ``model.safetensors`` + ``README.md``, never pickle.
Writing folders and loading weights (torch) live here; reading a folder's layout, config and hash
without torch lives in :mod:`cfx.models.checkpoint_files`, re-exported here.

``architecture`` names the network class through the architecture registry
(:mod:`cfx.models.architectures`, :func:`network_class`): ``cond_gan3d`` (the GAN's generator) or
``cond_diffusion3d`` (the diffusion model's noise-predicting UNet, whose kwargs include its noise
schedule).

Loading reads JSON and safetensors only. A ``.pt``/``.pth`` (or any pickle) is refused with a
message saying why. :func:`content_hash` (sha256 of ``model.safetensors`` then ``config.json``)
identifies the served model in run manifests. ``config.json`` records ``weights_sha256``, the
sha256 of ``model.safetensors`` as saved: weights that differ from it (changed, damaged or
swapped), or generator settings that describe more weights than the file holds, are refused
before any network is built.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from cfx.models.architectures import by_checkpoint, implementation
from cfx.models.checkpoint_files import (
    CARD_FILE,
    CONFIG_FILE,
    FORMAT,
    STATE_JSON,
    STATE_TENSORS,
    WEIGHTS_FILE,
    CheckpointError,
    content_hash,
    has_training_state,
    read_config,
    sampling_block,
)

__all__ = ["CheckpointError", "LoadedGenerator", "save_checkpoint", "save_training_state",
           "load_generator", "load_training_state", "read_config", "content_hash",
           "has_training_state", "sampling_block", "network_class",
           "FORMAT", "CONFIG_FILE", "WEIGHTS_FILE", "CARD_FILE", "WEIGHTS_HASH",
           "weights_sha256"]

WEIGHTS_HASH = "weights_sha256"
"""The ``config.json`` key holding the hex sha256 of ``model.safetensors`` as saved."""


def network_class(architecture: str) -> type[torch.nn.Module]:
    """The network class of a checkpoint's ``architecture`` (its ``config.json`` name).

    Raises
    ------
    ValueError
        No registered architecture writes it.
    """
    return implementation(by_checkpoint(architecture)).NETWORK


@dataclass(frozen=True, eq=False)
class LoadedGenerator:
    """A generator read from a checkpoint folder.

    Attributes
    ----------
    generator : torch.nn.Module
        The network of the checkpoint's architecture (:func:`network_class`), in eval mode,
        gradients off.
    config : dict
        The decoded ``config.json``.
    content_hash : str
        ``"sha256:<hex>"`` of weights and config.
    folder : Path
    """

    generator: torch.nn.Module
    config: dict
    content_hash: str
    folder: Path


def _readable(tmp: str) -> None:
    """Give a temporary file the permissions an ordinary new file would have."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)


def _write_atomic(path: Path, data: bytes) -> None:
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    _readable(tmp)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict | None = None) -> None:
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp,
                  metadata=meta)
        _readable(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_bytes(data: dict) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=False) + "\n").encode()


def save_checkpoint(folder: str | os.PathLike, architecture: str,
                    generator: torch.nn.Module, metadata: dict,
                    card: str) -> Path:
    """Write (or overwrite) the served part of a checkpoint.

    Parameters
    ----------
    folder : path
        Created if missing.
    architecture : str
        A registered architecture's checkpoint name (:func:`network_class`).
    generator : torch.nn.Module
        The weights to serve (the EMA average during training); its ``config`` holds its
        constructor kwargs.
    metadata : dict
        JSON-serialisable; merged into ``config.json`` after ``format``, ``architecture`` and
        ``generator`` (its constructor kwargs).
    card : str
        Markdown model card.

    Returns
    -------
    Path
        ``folder``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _save_tensors(folder / WEIGHTS_FILE, generator.state_dict())
    config = {"format": FORMAT, "architecture": architecture,
              "generator": generator.config, WEIGHTS_HASH: weights_sha256(folder), **metadata}
    _write_atomic(folder / CONFIG_FILE, _json_bytes(config))
    _write_atomic(folder / CARD_FILE, card.encode())
    return folder


def save_training_state(folder: str | os.PathLike, tensors: dict[str, torch.Tensor],
                        meta: dict) -> None:
    """Write what a resume needs next to the served weights (tensors, then JSON)."""
    folder = Path(folder)
    _save_tensors(folder / STATE_TENSORS, tensors)
    _write_atomic(folder / STATE_JSON, _json_bytes(meta))


def weights_sha256(folder: str | os.PathLike) -> str:
    """Hex sha256 of a checkpoint folder's ``model.safetensors`` as stored."""
    with open(Path(folder) / WEIGHTS_FILE, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def _check_weights(folder: Path, config: dict) -> None:
    """Refuse weights other than those saved, and settings describing more weights than the
    file holds (an absurd size would otherwise be allocated before loading fails)."""
    recorded = config.get(WEIGHTS_HASH)
    where = folder / CONFIG_FILE
    if not isinstance(recorded, str):
        raise CheckpointError(f"{where}: records no {WEIGHTS_HASH} (the sha256 of "
                              f"{WEIGHTS_FILE} as saved); save the checkpoint again with cfx")
    if weights_sha256(folder) != recorded:
        raise CheckpointError(f"{folder / WEIGHTS_FILE}: its sha256 differs from the "
                              f"{WEIGHTS_HASH} config.json recorded when it was saved; the weights "
                              "were changed or damaged: use the checkpoint as saved")
    try:
        with torch.device("meta"):  # shapes only: nothing is allocated
            probe = network_class(config["architecture"])(**config["generator"])
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{where}: bad generator settings ({exc})") from None
    need = sum(t.numel() * t.element_size() for t in probe.state_dict().values())
    have = (folder / WEIGHTS_FILE).stat().st_size
    if need > have:
        raise CheckpointError(f"{where}: the generator settings describe {need / 1e6:.4g} MB of "
                              f"weights but {WEIGHTS_FILE} holds {have / 1e6:.4g} MB; config.json "
                              "does not describe these weights")


def load_generator(folder: str | os.PathLike,
                   device: str | torch.device = "cpu") -> LoadedGenerator:
    """Build the generator of a checkpoint folder and load its weights (no pickle).

    Raises
    ------
    CheckpointError
        Not a checkpoint, a pickle, bad config, weights other than those saved (their sha256
        differs from ``config.json``'s ``weights_sha256``), or weights that do not fit the
        architecture.
    """
    folder = Path(folder)
    config = read_config(folder)
    _check_weights(folder, config)
    try:
        generator = network_class(config["architecture"])(**config["generator"])
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{folder / CONFIG_FILE}: bad generator settings ({exc})") from None
    try:
        weights = load_file(folder / WEIGHTS_FILE)
        generator.load_state_dict(weights)
    except (SafetensorError, RuntimeError, OSError) as exc:
        reason = " ".join(str(exc).split())[:300]
        raise CheckpointError(f"{folder / WEIGHTS_FILE}: cannot load the weights "
                              f"({reason})") from None
    generator = generator.to(device).eval().requires_grad_(False)
    return LoadedGenerator(generator, config, content_hash(folder), folder)


def load_training_state(folder: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors and JSON written by :func:`save_training_state`.

    Raises
    ------
    CheckpointError
        Missing or unreadable.
    """
    folder = Path(folder)
    if not has_training_state(folder):
        raise CheckpointError(f"{folder}: no {STATE_TENSORS} and {STATE_JSON} to resume from")
    try:
        tensors = load_file(folder / STATE_TENSORS)
        meta = json.loads((folder / STATE_JSON).read_text(encoding="utf-8"))
    except (SafetensorError, OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{folder}: cannot read the training state ({exc})") from None
    return tensors, meta
