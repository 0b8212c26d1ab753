"""The conditional diffusion model: its per-field context tokens, forward pass and config."""

import re

import pytest
import torch

from cfx.models.nets.cond_diffusion3d import CondDiffusion3D, RecordModulation
from tests.models.conftest import (
    FIELD_DIMS,
    FIELDS,
    PHRASES,
    RECORDS,
    encode_record,
    tiny_diffusion,
)


@pytest.fixture
def model(encoder):
    model = tiny_diffusion()
    model.fit_text([encoder.encode(PHRASES[field]).pooled for field in FIELDS])
    return model


def _context(model, encoder, *records):
    return torch.cat([model.condition(encode_record(model, encoder, r)) for r in records])


def _inputs(n=1, size=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.nn.functional.one_hot(torch.randint(0, 4, (n, size, size, size),
                                                       generator=gen), 4)
    return (torch.randn(n, 1, size, size, size, generator=gen),
            labels.permute(0, 4, 1, 2, 3).float(), torch.randint(0, 1000, (n,), generator=gen))


def test_one_token_per_field_with_its_whitened_vector_position_and_presence(model, encoder):
    """Token f = [field f's whitened vector zero-padded to max(field_dims), one-hot(f),
    present]."""
    assert model.context_dims == max(FIELD_DIMS) + len(FIELDS) + 1 == 6
    context = _context(model, encoder, RECORDS[0])
    assert context.shape == (1, 3, 6)
    encodings = encode_record(model, encoder, RECORDS[0])
    for f, (whitener, encoding) in enumerate(zip(model.text, encodings, strict=True)):
        vector = whitener(encoding.pooled)[0]
        assert torch.equal(context[0, f, :whitener.dims], vector) and vector.abs().min() > 0
        assert not context[0, f, whitener.dims:2].any()  # padding
        assert context[0, f, 2:5].tolist() == [float(f == g) for g in range(3)]
        assert context[0, f, 5] == 1


def test_a_missing_field_is_a_zero_vector_with_its_position_and_no_presence(model, encoder):
    full = _context(model, encoder, RECORDS[0])
    partial = _context(model, encoder, {k: v for k, v in RECORDS[0].items() if k != "smoking"})
    assert not partial[0, 1, :2].any() and partial[0, 1, 5] == 0
    assert torch.equal(partial[0, 1, 2:5], full[0, 1, 2:5])
    assert torch.equal(partial[0, [0, 2]], full[0, [0, 2]])  # the other fields unchanged
    null = model.null_condition(2)
    assert null.shape == (2, 3, 6)
    assert torch.equal(null[0], _context(model, encoder, {})[0])
    assert not null[..., :2].any() and not null[..., 5].any()
    assert torch.equal(null[0, :, 2:5], torch.eye(3))


def test_a_field_token_does_not_depend_on_the_other_fields(model, encoder):
    smokers = [r for r in RECORDS if r["smoking"] == "yes"] + [{"smoking": "yes"}]
    tokens = _context(model, encoder, *smokers)[:, 1]
    assert torch.equal(tokens, tokens[:1].expand_as(tokens))
    no = _context(model, encoder, {"smoking": "no"})[0, 1]
    assert (no[:1] - tokens[0, :1]).abs().item() > 0.5  # two phrases, unit variance


def test_forward_shape_determinism_and_text_dependence(model, encoder):
    sample, labels, t = _inputs()
    yes, no = _context(model, encoder, RECORDS[0]), _context(model, encoder, RECORDS[2])
    with torch.no_grad():
        a = model(sample, labels, t, yes)
        assert a.shape == (1, 1, 16, 16, 16)
        assert torch.equal(a, model(sample, labels, t, yes))
        assert (a - model(sample, labels, t, no)).abs().mean() > 1e-3
        assert (a - model(sample, labels, t + 100, yes)).abs().mean() > 1e-3


def test_rows_are_independent(model, encoder):
    sample, labels, t = _inputs(n=2)
    context = _context(model, encoder, RECORDS[0], {"age": 40})
    with torch.no_grad():
        both = model(sample, labels, t, context)
        one = model(sample[1:], labels[1:], t[1:], context[1:])
    torch.testing.assert_close(both[1:], one, atol=1e-4, rtol=1e-4)


def test_a_new_model_predicts_zero_noise_and_ignores_the_text(encoder):
    model = tiny_diffusion(activate=False)
    sample, labels, t = _inputs()
    with torch.no_grad():
        out = model(sample, labels, t, model.null_condition())
    assert not out.any()


def test_config_rebuilds_the_same_model():
    model = tiny_diffusion(activate=False)
    config = model.config
    assert config["attention_levels"] == [False, True]  # only the coarsest level by default
    assert config["schedule"] == "scaled_linear_beta" and config["train_timesteps"] == 1000
    assert config["prediction"] == "v_prediction"
    rebuilt = CondDiffusion3D(**config)
    assert rebuilt.config == config
    assert rebuilt.state_dict().keys() == model.state_dict().keys()
    assert model.noise_schedule == {"num_train_timesteps": 1000, "schedule": "scaled_linear_beta",
                                    "beta_start": 0.0005, "beta_end": 0.0195,
                                    "prediction_type": "v_prediction"}


def test_hu_window_round_trip():
    model = CondDiffusion3D(["smoking"], [1], channels=(8, 8), norm_num_groups=4, text_width=8,
                            hu_window=(-1000, 500))
    hu = torch.tensor([-1000.0, -850.0, 0.0, 500.0])
    torch.testing.assert_close(model.from_hu(hu), torch.tensor([-1.0, -0.8, 1 / 3, 1.0]))
    torch.testing.assert_close(model.to_hu(model.from_hu(hu)), hu)
    assert model.to_hu(torch.tensor([3.0])).item() == 500.0


def test_condition_needs_one_phrase_per_field(model, encoder):
    encodings = encode_record(model, encoder, RECORDS[0])
    with pytest.raises(ValueError, match=r"fields: need one entry per field \(3\), got 2"):
        model.condition(encodings[:2])
    two = encoder.encode(PHRASES["age"][:2])
    with pytest.raises(ValueError, match="fields: each encoding must hold one phrase"):
        model.condition([two, *encodings[1:]])


@pytest.mark.parametrize("kwargs, match", [
    ({"fields": ("age", "age", "smoking")}, re.escape(
        "fields: need distinct names with one field_dims entry each, got ['age', 'age', "
        "'smoking'] and [2, 1, 1]")),
    ({"label_channels": 1}, "label_channels: need background plus at least one label, got 1"),
    ({"channels": (8, 10)}, r"channels: need at least two levels, each a positive multiple of "
                            r"norm_num_groups=4, got \(8, 10\)"),
    ({"attention_levels": (True,)}, r"attention_levels: need one entry per level \(2\), got "
                                    r"\[True\]"),
    ({"num_res_blocks": 0}, "num_res_blocks: must be >= 1, got 0"),
    ({"num_head_channels": 3}, "num_head_channels: must divide the channels of every attention "
                               "level and the last one 8, got 3"),
    ({"hu_window": (100, -100)}, r"hu_window: need low < high, got \(100.0, -100.0\)"),
    ({"train_timesteps": 1}, "train_timesteps: must be >= 2, got 1"),
    ({"schedule": "cosine"}, "schedule: must be one of linear_beta, scaled_linear_beta, got "
                             "'cosine'"),
    ({"beta_start": 0.02, "beta_end": 0.01}, "beta_start, beta_end: need 0 < beta_start < "
                                             "beta_end < 1, got 0.02 and 0.01"),
    ({"field_dims": (40, 1, 1)}, "dims: must be from 1 to width=32, got 40"),
])
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CondDiffusion3D(**{"fields": FIELDS, "field_dims": FIELD_DIMS, "channels": (8, 8),
                           "norm_num_groups": 4, "text_width": 32, **kwargs})


def test_record_modulation_is_film_after_the_norm():
    torch.manual_seed(0)
    norm = torch.nn.GroupNorm(2, 4)
    modulation = RecordModulation(norm, width=3, channels=4)
    h, record = torch.randn(2, 4, 3, 3, 3), torch.randn(2, 3)
    modulation.record = record
    torch.testing.assert_close(modulation(h), norm(h))  # zero at initialisation
    with torch.no_grad():
        modulation.film.weight.normal_()
        modulation.film.bias.normal_()
    film = record @ modulation.film.weight.T + modulation.film.bias
    gamma, beta = film[:, :4, None, None, None], film[:, 4:, None, None, None]
    torch.testing.assert_close(modulation(h), norm(h) * (1 + gamma) + beta)
    modulation.record = None
    with pytest.raises(RuntimeError, match="no record set"):
        modulation(h)


def test_every_residual_block_reads_the_record_and_forgets_it(model, encoder):
    """Each residual block's second norm is modulated by the batch's flattened context, which is
    cleared after the pass; a row's output depends only on its own record."""
    assert len(model.modulations) == sum(
        1 for name, _ in model.named_modules() if name.endswith("norm2.film"))
    assert len(model.modulations) >= 4
    seen = []
    hook = model.modulations[0].film.register_forward_hook(
        lambda module, args, out: seen.append(args[0].clone()))
    sample, labels, timesteps = _inputs(n=2)
    context = _context(model, encoder, RECORDS[0], RECORDS[2])
    both = model(sample, labels, timesteps, context)
    hook.remove()
    torch.testing.assert_close(seen[0], context.flatten(1))
    assert all(m.record is None for m in model.modulations)
    alone = model(sample[1:], labels[1:], timesteps[1:], context[1:])
    torch.testing.assert_close(both[1:], alone, atol=1e-5, rtol=1e-5)
