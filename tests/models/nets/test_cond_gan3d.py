"""The conditional generator and its fusion blocks (tiny configs, CPU)."""

import re

import pytest
import torch

from cfx.models.nets.cond_gan3d import CondGAN3DGenerator, TextCondition
from cfx.models.nets.fusion import AffineFusion, CrossAttentionFusion
from tests.models.conftest import (
    FIELD_DIMS,
    FIELDS,
    PHRASES,
    RECORDS,
    conditions,
    encode_record,
    fit_text,
    tiny_generator,
)

_SLICES = {"age": slice(0, 2), "smoking": slice(2, 3), "diagnosis": slice(3, 4)}  # of pooled


def _inputs(seed=0, n=1, size=16):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.nn.functional.one_hot(torch.randint(0, 4, (n, size, size, size),
                                                       generator=gen), 4)
    labels = labels.permute(0, 4, 1, 2, 3).float()
    return labels, torch.randn(n, 1, size, size, size, generator=gen), \
        torch.randn(n, 2, generator=gen)


def _without(record, *fields):
    return {k: v for k, v in record.items() if k not in fields}


def test_shape_and_determinism(fitted, encoder):
    labels, noise, vector = _inputs()
    condition = conditions(fitted, encoder, RECORDS[:1])
    a = fitted(labels, noise, condition, vector)
    b = fitted(labels, noise, condition, vector)
    assert a.shape == (1, 1, 16, 16, 16)
    assert torch.equal(a, b)


def test_different_records_give_different_outputs(fitted, encoder):
    labels, noise, vector = _inputs()
    assert RECORDS[0] == {**RECORDS[2], "smoking": "yes"} and RECORDS[2]["smoking"] == "no"
    yes = fitted(labels, noise, conditions(fitted, encoder, [RECORDS[0]]), vector)
    no = fitted(labels, noise, conditions(fitted, encoder, [RECORDS[2]]), vector)
    assert (yes - no).abs().mean() > 1e-3


def test_other_noise_gives_another_output(fitted, encoder):
    labels, noise, vector = _inputs()
    condition = conditions(fitted, encoder, RECORDS[:1])
    assert not torch.equal(fitted(labels, noise, condition, vector),
                           fitted(labels, torch.randn_like(noise), condition, vector))


def test_new_generator_ignores_text_until_trained(encoder):
    """Fusion starts as the identity: a fresh network's output does not depend on the text."""
    generator = fit_text(tiny_generator(activate=False), encoder)
    labels, noise, vector = _inputs()
    outputs = [generator(labels, noise, conditions(generator, encoder, [r]), vector)
               for r in (RECORDS[0], RECORDS[2], {})]
    assert torch.equal(outputs[0], outputs[1]) and torch.equal(outputs[0], outputs[2])


def test_rows_are_independent(fitted, encoder):
    """A row's output does not depend on what it is batched with."""
    labels, noise, vector = _inputs(n=2)
    condition = conditions(fitted, encoder, [RECORDS[0], _without(RECORDS[1], "age")])
    both = fitted(labels, noise, condition, vector)
    one = fitted(labels[1:], noise[1:], condition.select([1]), vector[1:])
    torch.testing.assert_close(both[1:], one, atol=1e-5, rtol=1e-5)


# -- per-field text ---------------------------------------------------------------------------

def test_text_dims_is_the_sum_of_the_field_dims():
    generator = tiny_generator()
    assert generator.fields == FIELDS and generator.text_dims == sum(FIELD_DIMS) == 4
    assert [w.dims for w in generator.text] == list(FIELD_DIMS)
    assert "text_dims" not in generator.config
    assert generator.config["fields"] == list(FIELDS)
    assert generator.config["field_dims"] == list(FIELD_DIMS)
    assert generator.fuse[0].project.in_features == 4 + generator.noise_dims


def test_each_field_has_its_own_whitening(fitted, encoder):
    """Each field's whitener is fitted on that field's phrases: over them, its vectors are
    centred with unit variance along every kept axis."""
    for field, whitener in zip(FIELDS, fitted.text, strict=True):
        whitened = whitener(encoder.encode(PHRASES[field]).pooled)
        torch.testing.assert_close(whitened.mean(0), torch.zeros(whitener.dims), atol=1e-4,
                                   rtol=0)
        torch.testing.assert_close(whitened.var(0), torch.ones(whitener.dims), atol=1e-4,
                                   rtol=0)


@pytest.mark.parametrize("missing", FIELDS)
def test_a_missing_field_reads_as_zeros_and_leaves_the_others_unchanged(fitted, encoder,
                                                                         missing):
    full = conditions(fitted, encoder, [RECORDS[0]]).pooled
    partial = conditions(fitted, encoder, [_without(RECORDS[0], missing)]).pooled
    assert partial.shape == full.shape == (1, 4)
    assert torch.equal(partial[:, _SLICES[missing]], torch.zeros(1, FIELD_DIMS[
        FIELDS.index(missing)]))
    assert (full[:, _SLICES[missing]] != 0).all()  # so the zeros are the absence, not chance
    for other in FIELDS:
        if other != missing:
            assert torch.equal(partial[:, _SLICES[other]], full[:, _SLICES[other]]), other


def test_a_field_vector_does_not_depend_on_the_other_fields(fitted, encoder):
    """``Smoker: yes`` gives one smoking vector whatever the age and diagnosis (and whether they
    are given), and another than ``Smoker: no``."""
    smokers = [r for r in RECORDS if r["smoking"] == "yes"] + [{"smoking": "yes"}]
    pooled = conditions(fitted, encoder, smokers).pooled[:, _SLICES["smoking"]]
    assert torch.equal(pooled, pooled[:1].expand_as(pooled))
    no = conditions(fitted, encoder, [{"smoking": "no"}]).pooled[:, _SLICES["smoking"]]
    assert (no - pooled[:1]).abs().min() > 0.5  # two phrases, whitened to unit variance
    ages = conditions(fitted, encoder, [RECORDS[0], RECORDS[4], RECORDS[8]]).pooled
    assert len({tuple(row[_SLICES["age"]].tolist()) for row in ages}) == 3


def test_cross_attention_reads_the_present_fields_tokens_in_field_order(encoder):
    generator = fit_text(tiny_generator("cross-attention"), encoder)
    encodings = encode_record(generator, encoder, RECORDS[0])
    whitened = [generator.tokens(e.tokens[0, e.mask[0]]) for e in encodings]
    full = generator.condition(encodings)
    assert full.token_mask.shape == (1, sum(w.shape[0] for w in whitened))
    assert full.token_mask.all()
    torch.testing.assert_close(full.tokens[0], torch.cat(whitened))  # age, smoking, diagnosis
    smoking = generator.condition([None, encodings[1], None])
    assert smoking.token_mask.shape == (1, whitened[1].shape[0]) and smoking.token_mask.all()
    start = whitened[0].shape[0]
    assert torch.equal(smoking.tokens[0], full.tokens[0, start:start + whitened[1].shape[0]])


def test_no_field_present_runs_and_is_finite(fitted, encoder):
    condition = fitted.condition([None] * len(FIELDS))
    assert torch.equal(condition.pooled, torch.zeros(1, 4))
    if fitted.fusion == "cross-attention":  # one zero token: the training mean
        assert torch.equal(condition.tokens, torch.zeros(1, 1, 8))
        assert condition.token_mask.tolist() == [[True]]
    else:
        assert condition.tokens is None
    labels, noise, vector = _inputs()
    out = fitted(labels, noise, condition, vector)
    assert out.shape == (1, 1, 16, 16, 16) and torch.isfinite(out).all()
    # and batched beside a full record (its row padded to the longer one) it is the same
    both = conditions(fitted, encoder, [RECORDS[0], {}])
    labels2, noise2, vector2 = (t.expand(2, *t.shape[1:]) for t in (labels, noise, vector))
    torch.testing.assert_close(fitted(labels2, noise2, both, vector2)[1:], out, atol=1e-5,
                               rtol=1e-5)


def test_stack_pads_tokens_with_a_false_mask_and_keeps_rows_in_order():
    long = TextCondition(torch.tensor([[1.0, 2.0]]), torch.arange(6.0).reshape(1, 3, 2),
                         torch.ones(1, 3, dtype=torch.bool))
    short = TextCondition(torch.tensor([[3.0, 4.0]]), torch.full((1, 1, 2), 7.0),
                          torch.ones(1, 1, dtype=torch.bool))
    stacked = TextCondition.stack([short, long, short])
    assert stacked.pooled.tolist() == [[3.0, 4.0], [1.0, 2.0], [3.0, 4.0]]
    assert stacked.token_mask.tolist() == [[True, False, False], [True, True, True],
                                           [True, False, False]]
    assert stacked.tokens.shape == (3, 3, 2)
    assert torch.equal(stacked.tokens[1], long.tokens[0])
    assert torch.equal(stacked.tokens[0, :1], short.tokens[0])
    assert torch.equal(stacked.tokens[2], stacked.tokens[0])
    assert not stacked.tokens[[0, 2], 1:].any()  # padding is zeros
    pooled_only = TextCondition.stack([TextCondition(long.pooled), TextCondition(short.pooled)])
    assert pooled_only.tokens is None and pooled_only.token_mask is None
    assert pooled_only.pooled.tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_fit_text_needs_one_tensor_per_field(encoder):
    generator = tiny_generator()
    pooled = [encoder.encode(PHRASES[field]).pooled for field in FIELDS[:2]]
    with pytest.raises(ValueError, match=r"pooled: need one tensor per field \(3\), got 2"):
        generator.fit_text(pooled)


@pytest.mark.parametrize("count", [2, 4])
def test_condition_needs_one_entry_per_field(fitted, encoder, count):
    encodings = (encode_record(fitted, encoder, RECORDS[0]) + [None])[:count]
    with pytest.raises(ValueError,
                       match=rf"fields: need one entry per field \(3\), got {count}"):
        fitted.condition(encodings)


def test_cross_attention_fit_needs_tokens(encoder):
    generator = tiny_generator("cross-attention")
    pooled = [encoder.encode(PHRASES[field]).pooled for field in FIELDS]
    with pytest.raises(ValueError, match="tokens: cross-attention needs the phrases' token"):
        generator.fit_text(pooled)


def test_condition_takes_one_phrase_per_field(fitted, encoder):
    encodings = encode_record(fitted, encoder, RECORDS[0])
    two = encoder.encode([PHRASES["age"][0], PHRASES["age"][1]])
    with pytest.raises(ValueError, match=r"fields: each encoding must hold one phrase"):
        fitted.condition([two, *encodings[1:]])


def test_hu_window_round_trip():
    generator = CondGAN3DGenerator(["smoking"], [1], channels=(4, 8), text_width=8,
                                   noise_dims=1, hu_window=(-1000, 500))
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


def test_gated_affine_fusion_scales_the_film_by_the_labels_share_weighted_gate():
    fusion = AffineFusion(3, 2, gate_labels=2)
    with torch.no_grad():
        fusion.project.weight.normal_()
        fusion.project.bias.normal_()
        fusion.gate.copy_(torch.tensor([[0.0, 0.5, 1.0], [2.0, 1.0, 0.0]]))
    h, condition = torch.randn(1, 3, 2, 2, 2), torch.randn(1, 2)
    share = torch.rand(1, 1, 2, 2, 2)
    shares = torch.cat([share, 1 - share], dim=1)
    gamma, beta = (condition @ fusion.project.weight.T + fusion.project.bias)[0].chunk(2)
    out = fusion(h, condition, shares)
    for c in range(3):  # by hand, channel by channel
        gate = shares[0, 0] * fusion.gate[0, c] + shares[0, 1] * fusion.gate[1, c]
        torch.testing.assert_close(out[0, c], h[0, c] * (1 + gate * gamma[c]) + gate * beta[c])
    # a label whose gate is closed in a channel keeps that channel where it fills the voxel
    closed = torch.cat([torch.ones_like(share), torch.zeros_like(share)], dim=1)
    torch.testing.assert_close(fusion(h, condition, closed)[0, 0], h[0, 0])


def test_a_new_gated_generator_equals_the_ungated_one(encoder):
    """The gate starts at 1 for every label: the same weights give the same volume."""
    fitted = fit_text(tiny_generator("affine"), encoder)
    gated = fit_text(CondGAN3DGenerator(FIELDS, FIELD_DIMS, channels=(4, 8, 8), text_width=32,
                                        token_dims=8, noise_dims=2, gate=True), encoder)
    missing = gated.load_state_dict(fitted.state_dict(), strict=False)
    assert sorted(missing.missing_keys) == ["fuse.0.gate", "fuse.1.gate", "fuse.2.gate"]
    assert gated.config["gate"] and not fitted.config["gate"]
    assert [tuple(g.shape) for g in gated.gates()] == [(4, 8), (4, 8), (4, 4)] \
        and fitted.gates() == []
    labels, noise, vector = _inputs()
    condition = conditions(fitted, encoder, RECORDS[:1])
    torch.testing.assert_close(gated.eval()(labels, noise, condition, vector),
                               fitted(labels, noise, condition, vector))


def test_closed_gates_make_the_record_change_nothing(encoder):
    fitted = fit_text(tiny_generator("affine"), encoder)
    gated = fit_text(CondGAN3DGenerator(FIELDS, FIELD_DIMS, channels=(4, 8, 8), text_width=32,
                                        token_dims=8, noise_dims=2, gate=True), encoder)
    gated.load_state_dict(fitted.state_dict(), strict=False)
    labels, noise, vector = _inputs()
    a, b = (conditions(fitted, encoder, [r]) for r in (RECORDS[0], RECORDS[2]))
    assert (gated(labels, noise, a, vector) - gated(labels, noise, b, vector)).abs().max() > 1e-3
    with torch.no_grad():
        for gate in gated.gates():
            gate.zero_()
    torch.testing.assert_close(gated(labels, noise, a, vector), gated(labels, noise, b, vector))


def _levelled(fitted, encoder):
    levelled = fit_text(CondGAN3DGenerator(FIELDS, FIELD_DIMS, channels=(4, 8, 8),
                                           text_width=32, token_dims=8, noise_dims=2,
                                           label_levels=True), encoder)
    missing = levelled.load_state_dict(fitted.state_dict(), strict=False)
    assert sorted(missing.missing_keys) == ["label_levels.bias", "label_levels.weight"]
    return levelled.eval()


def test_a_new_levelled_generator_equals_the_plain_one(encoder):
    """The label levels start at 0: the same weights give the same volume."""
    fitted = fit_text(tiny_generator("affine"), encoder)
    levelled = _levelled(fitted, encoder)
    assert levelled.config["label_levels"] and not fitted.config["label_levels"]
    labels, noise, vector = _inputs()
    condition = conditions(fitted, encoder, RECORDS[:1])
    torch.testing.assert_close(levelled(labels, noise, condition, vector),
                               fitted(labels, noise, condition, vector))


def test_label_levels_add_each_labels_linear_level_where_the_label_is(encoder):
    """Output gain = ``A pooled + b`` of the voxel's label, by hand, per row."""
    fitted = fit_text(tiny_generator("affine"), encoder)
    levelled = _levelled(fitted, encoder)
    torch.manual_seed(3)
    with torch.no_grad():
        levelled.label_levels.weight.normal_()
        levelled.label_levels.bias.normal_()
    labels, noise, vector = _inputs(n=2)
    condition = conditions(fitted, encoder, RECORDS[:2])
    gain = levelled(labels, noise, condition, vector) - fitted(labels, noise, condition, vector)
    weight, bias = levelled.label_levels.weight, levelled.label_levels.bias
    index = labels.argmax(dim=1)
    for n in range(2):
        level = weight @ condition.pooled[n] + bias  # one per label channel
        torch.testing.assert_close(gain[n, 0], level[index[n]])
    # the level follows the record: two records differ by A (pooled_0 - pooled_1) per label
    assert not torch.allclose(condition.pooled[0], condition.pooled[1])


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
    """A short row stacked under a long one is padded; the padding is masked out."""
    generator = fit_text(tiny_generator("cross-attention"), encoder)
    records = [RECORDS[0], {"smoking": "yes"}]
    condition = conditions(generator, encoder, records)
    assert condition.token_mask[0].all() and not condition.token_mask[1].all()
    poked = condition.tokens.clone()
    poked[~condition.token_mask] = 99.0
    labels, noise, _ = _inputs(n=2)
    a = generator(labels, noise, condition)
    b = generator(labels, noise, TextCondition(condition.pooled, poked, condition.token_mask))
    torch.testing.assert_close(a, b)
    alone = generator(labels[1:], noise[1:], conditions(generator, encoder, records[1:]))
    torch.testing.assert_close(a[1:], alone, atol=1e-5, rtol=1e-5)


def _fields_error(fields, field_dims):
    return re.escape(f"fields: need distinct names with one field_dims entry each, got "
                     f"{fields} and {field_dims}")


@pytest.mark.parametrize("kwargs, match", [
    ({"label_channels": 1}, "label_channels: need background plus at least one label, got 1"),
    ({"channels": (8,)}, r"channels: need at least two positive levels, got \(8,\)"),
    ({"fusion": "concat"}, "fusion: must be one of affine, cross-attention, got 'concat'"),
    ({"noise_dims": -1}, "noise_dims: must be >= 0, got -1"),
    ({"fusion": "cross-attention", "channels": (6, 8), "heads": 4},
     r"heads: must divide every level's channels \(6, 8\), got 4"),
    ({"hu_window": (100, -100)}, r"hu_window: need low < high, got \(100.0, -100.0\)"),
    ({"fusion": "cross-attention", "gate": True},
     "gate: applies to the affine fusion only, got 'cross-attention'"),
    ({"field_dims": (40, 1, 1), "text_width": 32}, "dims: must be from 1 to width=32, got 40"),
    ({"field_dims": (2, 0, 1)}, "dims: must be from 1 to width=32, got 0"),
    ({"fields": ("age", "smoking", "age")},
     _fields_error(["age", "smoking", "age"], [2, 1, 1])),
    ({"field_dims": (2, 1)}, _fields_error(["age", "smoking", "diagnosis"], [2, 1])),
    ({"field_dims": (2, 1, 1, 1)}, _fields_error(["age", "smoking", "diagnosis"], [2, 1, 1, 1])),
    ({"fields": (), "field_dims": ()}, _fields_error([], [])),
])
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CondGAN3DGenerator(**{"fields": FIELDS, "field_dims": FIELD_DIMS, "text_width": 32,
                              "token_dims": 8, **kwargs})
