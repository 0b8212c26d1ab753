"""The generator architectures cfx knows, by name, without importing torch.

Each :class:`Architecture` names what ``cfx train --arch`` calls it, what a checkpoint's
``config.json`` calls it (``architecture``), its training defaults and the options only it
accepts, and the module that implements it (imported on first use by :func:`implementation`).
That module (e.g. :mod:`cfx.models.architectures.gan`) defines:

``NETWORK``, ``TRAINER``
    The network class (constructor kwargs = the checkpoint's ``generator`` block) and its
    trainer class (``network``, ``ema``, ``step``, ``settings``, ``train_step``, the guard's
    methods).
``given_options(options)``, ``check_new(options, channels, levels)``
    Its own options checked (``ValueError`` starting with the flag when one is bad).
``new_arguments(common, options, given, out, steps)``, ``resumed_arguments(saved, given, out,
steps)``
    The run's ``training.arguments``.
``new_trainer(arguments, phrases, field_dims, label_channels, encoder, source, device,
values)``,
``resumed_trainer(arguments, generator, folder, encoder, source, device)``
``normalisation(network)``, ``served(arguments)``, ``card(config, generator)``
    What ``config.json`` and the model card add for this architecture.
``Runner``
    Runs a served network over whole volumes for the sweep (``conditions``, ``run``).

Adding an architecture is one such module plus one :func:`register` call.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from types import ModuleType

__all__ = ["Architecture", "ARCHITECTURES", "register", "look_up", "by_checkpoint",
           "checkpoint_names", "implementation", "check_kept_levels"]


@dataclass(frozen=True)
class Architecture:
    """One generator architecture, as the torch-free parts of cfx see it.

    Attributes
    ----------
    name : str
        ``cfx train --arch`` name, e.g. ``"gan"``.
    checkpoint : str
        ``config.json`` ``architecture``, e.g. ``"cond_gan3d"``.
    module : str
        Dotted name of the module implementing it (imports torch).
    channels : str
        Default ``--channels``, finest level first.
    lr : float
        Default ``--lr``.
    options : dict of str to str
        ``run_training`` keyword -> its ``cfx train`` flag, for the options only this
        architecture accepts.
    summary : str
        One line for ``--help`` and listings.
    body : bool
        Whether a new run reads the body outline (``--body``) unless told otherwise.
    """

    name: str
    checkpoint: str
    module: str
    channels: str
    lr: float
    options: dict[str, str] = field(default_factory=dict)
    summary: str = ""
    body: bool = False


ARCHITECTURES: dict[str, Architecture] = {}
"""``--arch`` name -> :class:`Architecture`, in registration order."""


def register(architecture: Architecture) -> Architecture:
    """Add ``architecture`` (replacing one of the same name); returns it."""
    ARCHITECTURES[architecture.name] = architecture
    return architecture


def look_up(name: str) -> Architecture:
    """The architecture called ``name`` (a ``--arch`` value).

    Raises
    ------
    ValueError
        Unknown name: the message names the nearest spelling and every known name.
    """
    if name in ARCHITECTURES:
        return ARCHITECTURES[name]
    near = difflib.get_close_matches(name, list(ARCHITECTURES), n=1)
    hint = f"did you mean {near[0]!r}? " if near else ""
    raise ValueError(f"unknown architecture {name!r}; {hint}known: {', '.join(ARCHITECTURES)}")


def by_checkpoint(checkpoint: str) -> Architecture:
    """The architecture a checkpoint's ``config.json`` names (its ``architecture``).

    Raises
    ------
    ValueError
        No registered architecture writes ``checkpoint``.
    """
    for architecture in ARCHITECTURES.values():
        if architecture.checkpoint == checkpoint:
            return architecture
    raise ValueError(f"unknown architecture {checkpoint!r}; known: "
                     f"{', '.join(checkpoint_names())}")


def checkpoint_names() -> tuple[str, ...]:
    """The ``config.json`` names of every registered architecture."""
    return tuple(a.checkpoint for a in ARCHITECTURES.values())


def implementation(architecture: Architecture) -> ModuleType:
    """The module implementing ``architecture`` (imported now: it needs torch)."""
    return importlib.import_module(architecture.module)


def check_kept_levels(saved: dict, given: dict, out) -> None:
    """A resumed run keeps the label levels it was trained with or without (``saved``: its
    ``training.arguments``; ``given``: the options given now; ``out``: its folder).

    Raises
    ------
    ValueError
        ``--label-levels`` (``--no-label-levels``) for a run trained without (with) them: the
        network cannot gain or lose them.
    """
    saved_levels = saved.get("label_levels", False)
    if given.get("label_levels", saved_levels) != saved_levels:
        flag, trained = (("--label-levels", "without") if given["label_levels"]
                         else ("--no-label-levels", "with"))
        raise ValueError(f"{flag}: {out} was trained {trained} label levels and cannot change "
                         "that on resume; start a new run")


def check_level_rows(options: dict, default_levels: bool) -> None:
    """A new run's ``--level-rows`` (``options``: None where not given; ``default_levels``: the
    architecture's label levels when ``--label-levels`` is not given).

    Raises
    ------
    ValueError
        Below 1, or given for a run without label levels.
    """
    level_rows, levelled = options.get("level_rows"), options.get("label_levels")
    if level_rows is not None and level_rows < 1:
        raise ValueError(f"--level-rows: got {level_rows}; give at least 1")
    if level_rows is not None and not (default_levels if levelled is None else levelled):
        raise ValueError("--level-rows: this run has no label levels to fit; add "
                         "--label-levels or leave --level-rows out")


register(Architecture(
    "gan", "cond_gan3d", "cfx.models.architectures.gan", channels="16,32,64,64", lr=5e-4,
    options={"fusion": "--fusion", "l1_weight": "--l1-weight", "edit_weight": "--edit-weight",
             "region_weight": "--region-weight", "gate_decay": "--gate-decay",
             "film_decay": "--film-decay", "label_levels": "--label-levels",
             "level_rows": "--level-rows", "adversarial_weight": "--adversarial-weight"},
    summary="mask + text conditional 3D GAN", body=True))
register(Architecture(
    "diffusion", "cond_diffusion3d", "cfx.models.architectures.diffusion", channels="16,32,32",
    lr=2e-4, options={"p_uncond": "--p-uncond", "sampling_steps": "--sampling-steps",
                      "label_levels": "--label-levels", "level_rows": "--level-rows",
                      "edit_weight": "--edit-weight"},
    summary="mask + text conditional 3D diffusion model", body=True))
