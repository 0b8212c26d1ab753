"""Text fusion blocks: how a generator's feature maps read the text.

Two mechanisms, chosen per generator:

- :class:`AffineFusion` (DF-GAN style): a per-channel scale and shift predicted *linearly* from
  the whitened pooled prompt vector and a noise vector. Linear on purpose: a hidden MLP lets
  the network treat every field combination as a new code, and attribute swaps that never
  occur in training then move the whole volume.
- :class:`CrossAttentionFusion`: multi-head attention with queries from the voxels and keys and
  values from the whitened token embeddings (padding tokens masked out).

Both start as the identity (their last layer is zero-initialised), so a new generator first
learns the anatomy and the text then moves it only as far as the data asks. Neither uses
statistics over the volume, so a sliding window sees the same function everywhere.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["AffineFusion", "CrossAttentionFusion"]


class AffineFusion(nn.Module):
    """``h * (1 + gamma) + beta`` with ``(gamma, beta) = W [text, noise] + b``.

    Parameters
    ----------
    channels : int
        ``C`` of the feature map.
    condition_dims : int
        Length of the conditioning vector (whitened text dims + noise vector dims).
    """

    def __init__(self, channels: int, condition_dims: int):
        super().__init__()
        self.project = nn.Linear(condition_dims, 2 * channels)
        nn.init.zeros_(self.project.weight)
        nn.init.zeros_(self.project.bias)

    def forward(self, h: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """
        Parameters
        ----------
        h : Tensor, shape (N, C, X, Y, Z)
        condition : Tensor, shape (N, condition_dims)

        Returns
        -------
        Tensor, shape (N, C, X, Y, Z)
        """
        gamma, beta = self.project(condition)[:, :, None, None, None].chunk(2, dim=1)
        return h * (1 + gamma) + beta


class CrossAttentionFusion(nn.Module):
    """``h + W_o MultiHeadAttention(q = LayerNorm(h), k = v = tokens)`` at every voxel.

    Parameters
    ----------
    channels : int
        ``C`` of the feature map; divisible by ``heads``.
    token_dims : int
        Width of the (whitened) token embeddings.
    heads : int
        Attention heads.
    """

    def __init__(self, channels: int, token_dims: int, heads: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.attention = nn.MultiheadAttention(channels, heads, kdim=token_dims,
                                               vdim=token_dims, batch_first=True)
        self.out = nn.Linear(channels, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, h: torch.Tensor, tokens: torch.Tensor,
                token_mask: torch.Tensor) -> torch.Tensor:
        """
        Parameters
        ----------
        h : Tensor, shape (N, C, X, Y, Z)
        tokens : Tensor, shape (N, L, token_dims)
        token_mask : Tensor of bool, shape (N, L)
            True at real tokens.

        Returns
        -------
        Tensor, shape (N, C, X, Y, Z)
        """
        n, c, *spatial = h.shape
        queries = self.norm(h.flatten(2).transpose(1, 2))  # (N, X*Y*Z, C)
        attended, _ = self.attention(queries, tokens, tokens, key_padding_mask=~token_mask,
                                     need_weights=False)
        return h + self.out(attended).transpose(1, 2).reshape(n, c, *spatial)
