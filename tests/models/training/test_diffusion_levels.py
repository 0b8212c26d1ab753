"""A diffusion model with label levels: each label's level a linear map of the record, fitted
once by least squares and fixed; the network trained and sampled on the residual."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from cfx.models.samplers import DEFAULT_SAMPLER, make_sampler
from cfx.models.sampling import count_passes, draw_diffusion_noise, sample_volumes
from cfx.models.training.diffusion import DiffusionSettings, DiffusionTrainer
from tests.models.conftest import FIELDS, PHRASES, RECORDS, tiny_diffusion
from tests.models.test_sampling import SHAPE, _context, _ct, _labels
from tests.models.training.test_gan import source


def _trainer(encoder, lr=3e-3, seed=0, rows=512):
    settings = DiffusionSettings(batch_size=4, lr=lr, ema_decay=0.9, seed=seed)
    trainer = DiffusionTrainer(tiny_diffusion(activate=False, label_levels=True), encoder,
                               source, settings)
    trainer.fit_text([PHRASES[field] for field in FIELDS])
    trainer.fit_levels(rows)
    return trainer


def _fitted(encoder, levels):
    """An activated tiny model with label levels: random levels, or all zero."""
    model = tiny_diffusion(label_levels=True)
    model.fit_text([encoder.encode(PHRASES[field]).pooled for field in FIELDS])
    with torch.no_grad():
        if levels:
            generator = torch.Generator().manual_seed(3)
            model.levels.weight.copy_(torch.randn(model.levels.weight.shape, generator=generator)
                                      * 0.05)
            model.levels.bias.copy_(torch.tensor([0.02, -0.03, 0.05, 0.01]))
        else:
            model.levels.weight.zero_()
            model.levels.bias.zero_()
    return model


def test_the_level_map_is_each_labels_linear_map_of_the_record_where_the_label_is(encoder):
    model = _fitted(encoder, levels=True)
    labels, context = _labels(), _context(model, encoder, RECORDS[0], RECORDS[5])
    with torch.no_grad():
        levels = model.level_map(labels, context)
    weight, bias = model.levels.weight.detach().numpy(), model.levels.bias.detach().numpy()
    which = labels[0].argmax(0).numpy()  # the label of each voxel
    for row in range(2):
        flat = context[row].flatten().numpy()
        expected = (weight @ flat + bias)[which]  # by hand, per voxel
        np.testing.assert_allclose(levels[row, 0].numpy(), expected, rtol=1e-5, atol=1e-6)
    plain = tiny_diffusion()
    assert plain.levels is None and not plain.level_map(labels, context).any()


def test_the_fit_is_the_voxelwise_least_squares_of_the_level_map(encoder):
    """Each label's level: the least-squares fit of its voxels' CT (window units) on the
    flattened record context, over the rows the fit drew (numpy, voxel by voxel)."""
    trainer = _trainer(encoder, rows=16)
    model, rng = trainer.network, np.random.default_rng(1)  # seed + 1, as the docstring says
    noise = torch.Generator().manual_seed(1)
    design, target, which = [], [], []
    for _ in range(4):
        batch = source(rng, 4)
        context = trainer._context(batch.phrases)
        dropped = torch.rand(4, generator=noise) < 0.1
        context = torch.where(dropped[:, None, None], model.null_condition(4), context)
        window = np.clip((batch.ct + 1024.0) / 1024.0 - 1.0, -1, 1)  # as served
        for row in range(4):
            design.append(np.repeat(context[row].flatten().numpy()[None], window[row].size, 0))
            target.append(window[row].ravel())
            which.append(batch.labels[row].ravel())
    design, target, which = np.concatenate(design), np.concatenate(target), np.concatenate(which)
    design = np.hstack([design, np.ones((len(design), 1))]).astype(np.float64)
    for label in range(4):
        voxels = which == label
        fit = np.linalg.lstsq(design[voxels], target[voxels], rcond=None)[0]
        for network in (model, trainer.ema):
            weights = torch.cat([network.levels.weight, network.levels.bias[:, None]], 1)
            np.testing.assert_allclose(design[voxels] @ weights[label].double().numpy(),
                                       design[voxels] @ fit, rtol=0, atol=2e-5)
    assert trainer.rng.bit_generator.state == np.random.default_rng(0).bit_generator.state


def test_the_levels_are_fixed_and_the_network_learns_the_ct_less_their_map(encoder,
                                                                           monkeypatch):
    trainer = _trainer(encoder)
    fitted = {k: v.clone() for k, v in trainer.network.levels.state_dict().items()}
    with torch.no_grad():  # levels that ignore the record, to write the map by hand
        trainer.network.levels.weight.zero_()
        trainer.network.levels.bias.copy_(torch.tensor([-0.9, 0.1, -0.2, 0.3]))
    seen = []
    add_noise = trainer.scheduler.add_noise
    monkeypatch.setattr(trainer.scheduler, "add_noise",
                        lambda original, noise, t: seen.append(original) or add_noise(
                            original, noise, t))
    batch = source(np.random.default_rng(0), 4)  # the first batch the step draws
    first = [p.detach().clone() for p in trainer.network.unet.parameters()]
    losses = trainer.train_step()
    assert set(losses) == {"mse", "grad_norm", "level_mse"}
    labels = F.one_hot(torch.from_numpy(batch.labels).long(), 4).permute(0, 4, 1, 2, 3).float()
    clean = ((torch.from_numpy(batch.ct)[:, None] + 1024.0) / 1024.0 - 1.0).clamp(-1, 1)
    levels = torch.einsum("l,nlxyz->nxyz", torch.tensor([-0.9, 0.1, -0.2, 0.3]), labels)[:, None]
    torch.testing.assert_close(seen[0], clean - levels, rtol=0, atol=1e-5)
    assert losses["level_mse"] == pytest.approx(F.mse_loss(levels, clean).item(), rel=1e-4)
    trainer.network.levels.load_state_dict(fitted)
    for _ in range(2):
        trainer.train_step()
    for name, value in trainer.network.levels.state_dict().items():
        assert torch.equal(value, fitted[name])  # no step moves them
    assert not all(torch.equal(p, q) for p, q in zip(trainer.network.unet.parameters(), first,
                                                    strict=True))  # the network learns


def test_the_levels_hold_the_planted_shift_inside_the_labels_and_none_outside(encoder):
    """The toy source plants +20 HU inside the labels for smokers and nothing in the background
    (noise SD 10 HU). The fitted smoker - non-smoker difference of each label's level (measured
    over seeds 0-2: +19.8..20.1 HU inside, 0.0 HU outside) is the planted one."""
    trainer = _trainer(encoder)
    for network in (trainer.network, trainer.ema):
        context = _context(network, encoder, RECORDS[0], RECORDS[2])  # smoking yes, no
        with torch.no_grad():
            yes, no = network.levels(context.flatten(1))
        shift = ((yes - no) * 1024.0).tolist()  # HU per label
        assert abs(shift[0]) < 1.0
        assert all(18.5 < s < 21.5 for s in shift[1:])


def test_a_sample_is_the_residual_drawn_plus_each_rows_level_map(encoder):
    """The network never reads the levels, so from the same noise a model with levels draws
    the same residual as with zero levels, plus its level map (guided as the prediction)."""
    levelled, plain = _fitted(encoder, True), _fitted(encoder, False)
    labels, context = _labels(), _context(levelled, encoder, RECORDS[0], RECORDS[2])
    null = levelled.null_condition(2)
    for guidance in (1.0, 2.5):
        outputs = [sample_volumes(model, labels, context, draw_diffusion_noise(SHAPE, 0),
                                  steps=4, guidance=guidance) for model in (levelled, plain)]
        with torch.no_grad():
            conditional = levelled.level_map(labels, context)[:, 0]
            unconditional = levelled.level_map(labels, null)[:, 0]
        expected = (unconditional + guidance * (conditional - unconditional)) * 1024.0
        inside = (outputs[0].abs() < 1023.0) & (outputs[1].abs() < 1023.0)  # not clipped
        assert inside.float().mean() > 0.2
        torch.testing.assert_close((outputs[0] - outputs[1])[inside], expected[inside],
                                   rtol=0, atol=0.05)


def test_held_voxels_stay_the_ct_with_levels(encoder):
    model = _fitted(encoder, True)
    labels, context = _labels(), _context(model, encoder, RECORDS[0], RECORDS[2])
    keep = torch.zeros(1, 1, *SHAPE, dtype=torch.bool)
    keep[..., :8] = True
    out = sample_volumes(model, labels, context, draw_diffusion_noise(SHAPE, 0), steps=6,
                         ct=_ct(), strength=1.0, keep=keep, source=context[1:])
    ct = model.to_hu(model.from_hu(_ct()))[0, 0]
    held = keep[0, 0]
    for row in out:
        torch.testing.assert_close(row[held], ct[held], rtol=0, atol=0.01)
    assert (out[0] - out[1])[~held].abs().mean() > 1.0  # the records differ where not held


@pytest.mark.parametrize("strength", [0.3, 1.0])
def test_from_a_ct_the_residual_is_the_ct_less_the_level_map_of_the_record_it_shows(encoder,
                                                                                    strength):
    """By hand: the levelled model edits the CT less its source record's level map (in HU) as
    the same network with zero levels would, then adds each row's map; so the record the CT
    shows gets its own levels back and another moves each label by the levels' difference."""
    levelled, plain = _fitted(encoder, True), _fitted(encoder, False)
    labels, ct = _labels(), _ct()
    context = _context(levelled, encoder, RECORDS[0], RECORDS[2])
    source = context[1:]  # the CT shows the second record
    noise = draw_diffusion_noise(SHAPE, 0)
    with torch.no_grad():
        maps = levelled.level_map(labels, context)[:, 0] * 1024.0  # (2, X, Y, Z) in HU
    out = sample_volumes(levelled, labels, context, noise, steps=4, ct=ct, strength=strength,
                         source=source)
    residual = sample_volumes(plain, labels, context, noise, steps=4, ct=ct - maps[1],
                              strength=strength)
    inside = (out.abs() < 1023.0).all(0) & (residual.abs() < 1023.0).all(0)  # not clipped
    assert inside.float().mean() > 0.2
    torch.testing.assert_close(out[:, inside], (residual + maps)[:, inside], rtol=0, atol=0.05)
    with pytest.raises(ValueError, match="source: expected the record of a ct"):
        sample_volumes(levelled, labels, context, noise, steps=4, source=source)


def _unclipped(monkeypatch, model):
    """``model.to_hu`` without the clip to the window, so label means are exact."""
    low, high = model.hu_window
    monkeypatch.setattr(model, "to_hu", lambda output: (output + 1) * ((high - low) / 2) + low)


def _label_means(volume, labels, free):
    """Mean of ``volume`` (X, Y, Z) over each label's voxels in ``free`` (X, Y, Z), numpy."""
    which = labels[0].argmax(0).numpy()
    return np.array([volume.numpy()[(which == label) & free].mean()
                     for label in range(labels.shape[1])])


@pytest.mark.parametrize("guidance, from_ct", [(1.0, False), (2.5, False), (1.0, True)])
def test_the_record_moves_each_labels_mean_only_through_its_level(encoder, monkeypatch,
                                                                  guidance, from_ct):
    """By hand: each row is the network's own residual (the same weights without levels)
    shifted, label by label over the voxels not held, to the label means of the residual drawn
    under the record-free condition, plus its level map; so two rows' label means differ by
    exactly their levels' difference, which the network's residual alone does not."""
    levelled = _fitted(encoder, True)
    plain = tiny_diffusion(label_levels=False)
    plain.load_state_dict({k: v for k, v in levelled.state_dict().items()
                           if not k.startswith("levels.")})
    for model in (levelled, plain):
        _unclipped(monkeypatch, model)
    labels = _labels()
    context = torch.cat([_context(levelled, encoder, RECORDS[0], RECORDS[2]),
                         levelled.null_condition()])
    keep = torch.zeros(1, 1, *SHAPE, dtype=torch.bool)
    keep[..., :4] = True
    extra = dict(ct=_ct(), keep=keep, source=context[1:2]) if from_ct else {}
    free = ~keep[0, 0].numpy() if from_ct else np.ones(SHAPE, dtype=bool)
    noise = draw_diffusion_noise(SHAPE, 0)
    with torch.no_grad():
        levels = levelled.level_map(labels, context)[:, 0]
        unconditional = levelled.level_map(labels, context[2:])[:, 0]
    levels = (unconditional + guidance * (levels - unconditional)) * 1024.0  # HU, guided
    source = extra and levelled.level_map(labels, context[1:2])[0, 0].detach() * 1024.0
    out = sample_volumes(levelled, labels, context, noise, steps=4, guidance=guidance,
                         **extra)
    shown = {**extra, "ct": _ct() - source} if from_ct else {}
    shown.pop("source", None)
    residual = sample_volumes(plain, labels, context, noise, steps=4, guidance=guidance,
                              **shown)  # rows 0-1 under guidance, row 2 record-free
    which = labels[0].argmax(0).numpy()
    anchor = _label_means(residual[2], labels, free)
    for row in range(3):
        shift = (anchor - _label_means(residual[row], labels, free))[which] * free
        expected = residual[row].numpy() + shift + levels[row].numpy()
        if from_ct:
            expected[~free] = _ct()[0, 0].numpy()[~free]
        np.testing.assert_allclose(out[row].numpy(), expected, rtol=0, atol=0.02)
    moved = _label_means(out[1] - out[0], labels, free)
    np.testing.assert_allclose(moved, _label_means(levels[1] - levels[0], labels, free),
                               atol=1e-3)  # HU
    alone = _label_means(residual[1] - residual[0], labels, free)
    assert np.abs(alone).max() > 0.5  # HU: what the lock takes off


def test_a_levelled_model_runs_the_passes_it_counts(encoder, monkeypatch):
    model = _fitted(encoder, True)
    labels, context = _labels(), _context(model, encoder, RECORDS[0], RECORDS[2])
    calls = []
    forward = type(model).forward

    def counting(self, *args, **kwargs):
        calls.append(args[0].shape[0])
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "forward", counting)
    sampler = make_sampler(DEFAULT_SAMPLER, model.noise_schedule)
    sampler.set_timesteps(3, 1.0)
    timesteps = len(sampler.timesteps)
    for guidance in (1.0, 2.5):
        calls.clear()
        sample_volumes(model, labels, context, draw_diffusion_noise(SHAPE, 0), steps=3,
                       guidance=guidance)
        _, passes = count_passes(model, SHAPE, None, timesteps, guidance, rows=2)
        # two rows (two branches each under guidance) and the record-free run, one window
        assert sum(calls) == passes == timesteps * (2 * (1 if guidance == 1 else 2) + 1)
