"""The models the sweep knows by name: the built-in phantom oracle and the checkpoints shipped
under ``models/bundled/``. Reads folders only (no torch), so ``cfx models list`` starts fast."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["BUNDLED_DIR", "KNOWN_MODELS", "DEFAULT_MODEL", "bundled_models", "find_checkpoint"]

BUNDLED_DIR = Path(__file__).resolve().parents[2] / "models" / "bundled"
KNOWN_MODELS = ("phantom-oracle",)  # plus the bundled checkpoints (models/bundled/)
DEFAULT_MODEL = "phantom-gan-64"  # the bundled GAN (models/bundled/phantom-gan-64)


def bundled_models() -> dict[str, Path]:
    """Name -> folder of every checkpoint shipped under ``models/bundled/``."""
    if not BUNDLED_DIR.is_dir():
        return {}
    return {p.name: p for p in sorted(BUNDLED_DIR.iterdir()) if (p / "config.json").is_file()}


def find_checkpoint(name: str | os.PathLike) -> Path | None:
    """The folder of a bundled model called ``name``, or ``name`` itself if it is a path that
    exists; None otherwise."""
    bundled = bundled_models()
    if str(name) in bundled:
        return bundled[str(name)]
    path = Path(name).expanduser()
    return path if path.exists() else None
