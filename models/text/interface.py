"""What every text encoder gives: token embeddings, their mask and a mask-aware pooled vector."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

__all__ = ["TextEncoding", "TextEncoder", "masked_mean", "check_prompts"]


@dataclass(frozen=True, eq=False)
class TextEncoding:
    """Encoded prompts.

    Attributes
    ----------
    tokens : Tensor of float32, shape (N, L, D)
        Last hidden state per token, for cross-attention; rows past a prompt's end are zero.
        ``L`` is the encoder's fixed ``max_length``.
    mask : Tensor of bool, shape (N, L)
        True at real tokens (special tokens included), False at padding.
    pooled : Tensor of float32, shape (N, D)
        Mean of ``tokens`` over real tokens only, so a prompt's vector does not depend on what
        it is batched with. Not normalised.
    truncated : Tensor of bool, shape (N,)
        True where a prompt was longer than ``L`` tokens and lost its end.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor
    truncated: torch.Tensor

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def to(self, device: str | torch.device) -> TextEncoding:
        """The same encoding on ``device``."""
        return TextEncoding(self.tokens.to(device), self.mask.to(device),
                            self.pooled.to(device), self.truncated.to(device))


class TextEncoder(Protocol):
    """A frozen text encoder.

    Attributes
    ----------
    name : str
        What the user called it (``"minilm"``, a folder).
    identifier : str
        Stable across runs and machines for the same weights, tokenizer and ``max_length``;
        written to manifests.
    width : int
        ``D``, the embedding size.
    max_length : int
        ``L``, tokens per prompt after padding or truncation.
    device : torch.device
        Where the returned tensors live.
    """

    name: str
    identifier: str
    width: int
    max_length: int
    device: torch.device

    def encode(self, prompts: Sequence[str]) -> TextEncoding:
        """Encode ``N`` prompts, in order."""


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the real tokens of each row.

    Parameters
    ----------
    tokens : Tensor of float, shape (N, L, D)
    mask : Tensor of bool, shape (N, L)
        At least one True per row.

    Returns
    -------
    Tensor, shape (N, D)
    """
    weights = mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * weights).sum(dim=1) / weights.sum(dim=1)


def check_prompts(prompts: Sequence[str]) -> list[str]:
    """``prompts`` as a list; a bare string or a non-string item raises ``TypeError``."""
    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise TypeError(f"prompts: expected a sequence of str, got {type(prompts).__name__}"
                        + (" (wrap a single prompt in a list)" if isinstance(prompts, str) else ""))
    wrong = [type(p).__name__ for p in prompts if not isinstance(p, str)]
    if wrong:
        raise TypeError(f"prompts: expected a sequence of str, got items of type "
                        f"{', '.join(dict.fromkeys(wrong))}")
    return list(prompts)
