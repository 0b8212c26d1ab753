"""Frozen text encoders for prompt conditioning, and a per-run embedding cache."""

from cfx.models.text.cache import EmbeddingCache, RecordConditions
from cfx.models.text.huggingface import (
    BUNDLED_NAMES,
    DEFAULT_ENCODER,
    HFTextEncoder,
    TextEncoderLoadError,
    resolve_encoder_path,
)
from cfx.models.text.interface import TextEncoder, TextEncoding, check_prompts, masked_mean

__all__ = [
    "BUNDLED_NAMES",
    "DEFAULT_ENCODER",
    "EmbeddingCache",
    "HFTextEncoder",
    "RecordConditions",
    "TextEncoder",
    "TextEncoderLoadError",
    "TextEncoding",
    "check_prompts",
    "masked_mean",
    "resolve_encoder_path",
]
