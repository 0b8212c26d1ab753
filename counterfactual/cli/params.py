"""Option callbacks shared by the commands: they reject a bad value as a usage error (exit 2)."""

from __future__ import annotations

from collections.abc import Callable

import typer

__all__ = ["choice", "at_least"]


def choice(allowed: tuple[str, ...]) -> Callable[[str], str]:
    """A callback accepting only the strings in ``allowed``."""
    def check(value: str) -> str:
        if value not in allowed:
            raise typer.BadParameter(f"got {value!r}; choose one of {', '.join(allowed)}")
        return value
    return check


def at_least(minimum: int) -> Callable[[int], int]:
    """A callback accepting only integers >= ``minimum``."""
    def check(value: int) -> int:
        if value < minimum:
            raise typer.BadParameter(f"got {value}; give an integer >= {minimum}")
        return value
    return check
