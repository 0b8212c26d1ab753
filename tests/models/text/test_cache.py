import pytest
import torch

from cfx.models.text import EmbeddingCache, HFTextEncoder


class _Counting:
    """Wraps an encoder and records every batch it is asked to encode."""

    def __init__(self, encoder):
        self.inner = encoder
        self.calls = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode(self, prompts):
        self.calls.append(list(prompts))
        return self.inner.encode(prompts)


@pytest.fixture(scope="module")
def encoder(tiny_bert):
    return HFTextEncoder(str(tiny_bert), max_length=24)


def _sweep(n_subjects):
    """Prompts of a sweep over subjects of 3 ages, each with smoking = yes and = no."""
    return [f"Lung CT scan: Patient age: {60 + s % 3}. Smoker: {value}."
            for s in range(n_subjects) for value in ("yes", "no")]


def test_each_distinct_prompt_is_encoded_once_and_answers_keep_request_order(encoder):
    counting = _Counting(encoder)
    cache = EmbeddingCache(counting)
    prompts = _sweep(1000)
    out = cache.encode(prompts)
    assert len(counting.calls) == 1 and sorted(counting.calls[0]) == sorted(set(prompts))
    assert len(cache) == 6 and len(out) == 2000
    direct = encoder.encode(prompts[:12])
    for name in ("tokens", "mask", "pooled", "truncated"):
        torch.testing.assert_close(getattr(out, name)[:12], getattr(direct, name), atol=1e-6,
                                   rtol=0)
    assert torch.equal(out.pooled[0], out.pooled[6]) and not torch.equal(out.pooled[0],
                                                                          out.pooled[1])


def test_later_requests_encode_only_new_prompts(encoder):
    counting = _Counting(encoder)
    cache = EmbeddingCache(counting)
    cache.encode(["a", "b"])
    cache.encode(["b", "a", "b"])
    cache.encode(["c", "a"])
    assert counting.calls == [["a", "b"], ["c"]]
    assert "c" in cache and "d" not in cache
    assert cache.encode([]).pooled.shape == (0, encoder.width)


def test_a_bare_string_is_refused(encoder):
    with pytest.raises(TypeError, match="wrap a single prompt in a list"):
        EmbeddingCache(encoder).encode("abc")
