"""Training state as flat tensors (for safetensors) and JSON: what ``cfx train --resume`` reads.

Each trainer keeps its modules' weights, its optimisers' per-parameter state and its random
generators; these helpers name them ``<prefix>.<key>`` so both trainers save and restore them
the same way.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from torch import nn

__all__ = ["module_tensors", "load_module", "optimizer_tensors", "load_optimizer", "rng_json"]


def module_tensors(prefix: str, module: nn.Module) -> dict[str, torch.Tensor]:
    """``{"<prefix>.<state key>": tensor}`` of a module's state dict."""
    return {f"{prefix}.{k}": v for k, v in module.state_dict().items()}


def load_module(prefix: str, module: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Load the ``<prefix>.*`` tensors of :func:`module_tensors` into ``module``."""
    module.load_state_dict({k[len(prefix) + 1:]: v for k, v in tensors.items()
                            if k.startswith(prefix + ".")})


def optimizer_tensors(name: str, optimizer: torch.optim.Optimizer
                      ) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """The optimiser's per-parameter state as ``{"<name>.<index>.<field>": tensor}``, and its
    parameter groups (JSON)."""
    state = optimizer.state_dict()
    tensors = {f"{name}.{index}.{key}": torch.as_tensor(value)
               for index, entry in state["state"].items() for key, value in entry.items()}
    return tensors, state["param_groups"]


def load_optimizer(name: str, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                   param_groups: list[dict], device: torch.device) -> None:
    """Restore :func:`optimizer_tensors` (moments on ``device``, step counters where torch keeps
    them)."""
    entries: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith(name + "."):
            _, index, field = key.split(".", 2)
            entries.setdefault(int(index), {})[field] = value.to(device) \
                if field != "step" else value
    optimizer.load_state_dict({"state": entries, "param_groups": param_groups})


def rng_json(rng: np.random.Generator) -> dict:
    """A numpy generator's bit-generator state with plain ints, as JSON keeps it."""
    return json.loads(json.dumps(rng.bit_generator.state, default=int))
