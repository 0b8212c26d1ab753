"""The conditional generator and its fusion blocks (tiny configs, CPU)."""

import pytest
import torch

from models.nets.cond_gan3d import CondGAN3DGenerator, TextCondition
from models.nets.fusion import AffineFusion, CrossAttentionFusion
from tests.models.conftest import PROMPTS, tiny_generator


def _inputs(seed=0, n=1, size=16):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.nn.functional.one_hot(torch.randint(0, 4, (n, size, size, size),
                                                       generator=gen), 4)
    labels = labels.permute(0, 4, 1, 2, 3).float()
    return labels, torch.randn(n, 1, size, size, size, generator=gen), \
        torch.randn(n, 2, generator=gen)


def _condition(generator, encoder, prompts):
    encoding = encoder.encode(prompts)
    return generator.condition(encoding.pooled, encoding.tokens, encoding.mask)


def test_shape_and_determinism(fitted, encoder):
    labels, noise, vector = _inputs()
    condition = _condition(fitted, encoder, PROMPTS[:1])
    a = fitted(labels, noise, condition, vector)
    b = fitted(labels, noise, condition, vector)
    assert a.shape == (1, 1, 16, 16, 16)
    assert torch.equal(a, b)


def test_different_prompts_give_different_outputs(fitted, encoder):
    labels, noise, vector = _inputs()
    yes = fitted(labels, noise, _condition(fitted, encoder, [PROMPTS[0]]), vector)
    no = fitted(labels, noise, _condition(fitted, encoder, [PROMPTS[2]]), vector)
    assert (yes - no).abs().mean() > 1e-3


def test_other_noise_gives_another_output(fitted, encoder):
    labels, noise, vector = _inputs()
    condition = _condition(fitted, encoder, PROMPTS[:1])
    assert not torch.equal(fitted(labels, noise, condition, vector),
                           fitted(labels, torch.randn_like(noise), condition, vector))


def test_new_generator_ignores_text_until_trained(encoder):
    """Fusion starts as the identity: a fresh network's output does not depend on the text."""
    generator = tiny_generator(activate=False)
    encoding = encoder.encode(PROMPTS)
    generator.fit_text(encoding.pooled)
    labels, noise, vector = _inputs()
    outputs = [generator(labels, noise, _condition(generator, encoder, [p]), vector)
               for p in PROMPTS[:3]]
    assert torch.equal(outputs[0], outputs[1]) and torch.equal(outputs[0], outputs[2])


def test_rows_are_independent(fitted, encoder):
    """A row's output does not depend on what it is batched with."""
    labels, noise, vector = _inputs(n=2)
    condition = _condition(fitted, encoder, PROMPTS[:2])
    both = fitted(labels, noise, condition, vector)
    one = fitted(labels[1:], noise[1:], condition.select([1]), vector[1:])
    torch.testing.assert_close(both[1:], one, atol=1e-5, rtol=1e-5)


def test_hu_window_round_trip():
    generator = CondGAN3DGenerator(channels=(4, 8), text_width=8, text_dims=2, noise_dims=1,
                                   hu_window=(-1000, 500))
    hu = torch.tensor([-1000.0, -850.0, 0.0, 500.0])
    torch.testing.assert_close(generator.from_hu(hu), torch.tensor([-1.0, -0.8, 1 / 3, 1.0]))
    torch.testing.assert_close(generator.to_hu(generator.from_hu(hu)), hu)
    assert generator.to_hu(torch.tensor([3.0])).item() == 500.0  # clipped to the window


def test_affine_fusion_is_film():
    fusion = AffineFusion(3, 2)
    with torch.no_grad():
        fusion.project.weight.copy_(torch.arange(12.0).reshape(6, 2) / 10)
        fusion.project.bias.fill_(0.5)
    h = torch.randn(1, 3, 2, 2, 2)
    condition = torch.tensor([[1.0, -2.0]])
    gamma_beta = condition @ fusion.project.weight.T + 0.5
    gamma, beta = gamma_beta[0, :3], gamma_beta[0, 3:]
    expected = h * (1 + gamma[None, :, None, None, None]) + beta[None, :, None, None, None]
    torch.testing.assert_close(fusion(h, condition), expected)


def test_cross_attention_equals_hand_computed_attention():
    torch.manual_seed(0)
    fusion = CrossAttentionFusion(channels=4, token_dims=3, heads=2)
    torch.nn.init.normal_(fusion.out.weight)
    h = torch.randn(1, 4, 2, 1, 1)
    tokens = torch.randn(1, 5, 3)
    mask = torch.tensor([[True, True, True, False, False]])
    attention = fusion.attention
    q = fusion.norm(h.flatten(2).transpose(1, 2)) @ attention.q_proj_weight.T \
        + attention.in_proj_bias[:4]
    k = tokens @ attention.k_proj_weight.T + attention.in_proj_bias[4:8]
    v = tokens @ attention.v_proj_weight.T + attention.in_proj_bias[8:]
    heads = []
    for head in range(2):
        part = slice(2 * head, 2 * head + 2)
        scores = q[0, :, part] @ k[0, :, part].T / 2 ** 0.5
        scores[:, ~mask[0]] = float("-inf")
        heads.append(torch.softmax(scores, dim=-1) @ v[0, :, part])
    attended = torch.cat(heads, dim=-1) @ attention.out_proj.weight.T + attention.out_proj.bias
    expected = h + fusion.out(attended).T.reshape(1, 4, 2, 1, 1)
    torch.testing.assert_close(fusion(h, tokens, mask), expected, atol=1e-5, rtol=1e-5)


def test_cross_attention_ignores_padding_tokens(encoder):
    generator = tiny_generator("cross-attention")
    encoding = encoder.encode(PROMPTS)
    generator.fit_text(encoding.pooled, encoding.tokens, encoding.mask)
    condition = generator.condition(encoding.pooled[:1], encoding.tokens[:1], encoding.mask[:1])
    poked = condition.tokens.clone()
    poked[~condition.token_mask] = 99.0
    labels, noise, _ = _inputs()
    a = generator(labels, noise, condition)
    b = generator(labels, noise, TextCondition(condition.pooled, poked, condition.token_mask))
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kwargs, match", [
    ({"label_channels": 1}, "label_channels: need background plus at least one label, got 1"),
    ({"channels": (8,)}, r"channels: need at least two positive levels, got \(8,\)"),
    ({"fusion": "concat"}, "fusion: must be one of affine, cross-attention, got 'concat'"),
    ({"noise_dims": -1}, "noise_dims: must be >= 0, got -1"),
    ({"fusion": "cross-attention", "channels": (6, 8), "heads": 4},
     r"heads: must divide every level's channels \(6, 8\), got 4"),
    ({"hu_window": (100, -100)}, r"hu_window: need low < high, got \(100.0, -100.0\)"),
    ({"text_dims": 40, "text_width": 32}, "dims: must be from 1 to width=32, got 40"),
])
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CondGAN3DGenerator(**{"text_width": 32, "text_dims": 4, "token_dims": 8, **kwargs})
