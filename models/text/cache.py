"""Encode each distinct prompt once per run and answer every request from memory; read each
distinct clinical record once per network."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from cfx.models.text.interface import TextEncoder, TextEncoding, check_prompts

__all__ = ["EmbeddingCache", "RecordConditions"]


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


class RecordConditions:
    """What a network reads for each clinical record, computed once per distinct record.

    A record arrives as per-field phrases (field -> that field's text alone); each phrase is
    encoded on its own (so its embedding never depends on what it was batched with) and the
    network whitens the record with ``network.condition``.

    Parameters
    ----------
    network : module
        Has ``fields`` (the fields it reads, in order) and ``condition(encodings)`` taking one
        1-row ``TextEncoding`` or None per field; its whitening must not change afterwards.
    encoder : TextEncoder
    """

    def __init__(self, network, encoder: TextEncoder):
        self.network = network
        self.embeddings = EmbeddingCache(encoder)
        self._rows: dict[tuple, object] = {}

    def __call__(self, phrases: Mapping[str, str]):
        """The network's condition of one record (one row)."""
        key = tuple(phrases.get(field) for field in self.network.fields)
        if key not in self._rows:
            with torch.no_grad():
                self._rows[key] = self.network.condition(
                    [None if p is None else self.embeddings.encode([p]) for p in key])
        return self._rows[key]

    def clear(self) -> None:
        """Forget the conditions (after the network's whitening changed)."""
        self._rows.clear()
