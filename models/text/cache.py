"""Encode each distinct prompt once per run and answer every request from memory."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from models.text.interface import TextEncoder, TextEncoding, check_prompts

__all__ = ["EmbeddingCache"]


class EmbeddingCache:
    """Embeddings of the prompts seen so far, keyed by their exact text.

    A sweep over 1000 subjects x 2 values asks for 2000 prompts but encodes only the distinct
    ones. Entries live as long as the cache (one run); nothing is written to disk.

    Parameters
    ----------
    encoder : TextEncoder
        Does the encoding; its tensors (and so the cache's) stay on ``encoder.device``.
    """

    def __init__(self, encoder: TextEncoder):
        self.encoder = encoder
        self._rows: dict[str, tuple[torch.Tensor, ...]] = {}

    def __len__(self) -> int:
        """Distinct prompts encoded so far."""
        return len(self._rows)

    def __contains__(self, prompt: str) -> bool:
        return prompt in self._rows

    def encode(self, prompts: Sequence[str]) -> TextEncoding:
        """Encodings of ``prompts`` in request order, encoding only prompts not seen before.

        Parameters
        ----------
        prompts : sequence of str, length N
            May repeat.

        Returns
        -------
        TextEncoding
            As :meth:`TextEncoder.encode` would return for ``prompts``.
        """
        prompts = check_prompts(prompts)
        new = [p for p in dict.fromkeys(prompts) if p not in self._rows]
        if new:
            encoded = self.encoder.encode(new)
            for i, prompt in enumerate(new):
                self._rows[prompt] = (encoded.tokens[i], encoded.mask[i], encoded.pooled[i],
                                      encoded.truncated[i])
        if not prompts:
            return self.encoder.encode([])
        return TextEncoding(*(torch.stack(column) for column in
                              zip(*(self._rows[p] for p in prompts), strict=True)))
