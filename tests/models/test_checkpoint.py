"""Checkpoint folders: exact round trip, content hash, pickles refused, one-line errors."""

import json
import pickle

import pytest
import torch

from cfx.models.checkpoint import (
    CheckpointError,
    content_hash,
    load_generator,
    load_training_state,
    read_config,
    save_checkpoint,
    save_training_state,
)
from tests.models.conftest import FIELDS, RECORDS, encode_record, tiny_generator


@pytest.fixture
def saved(tmp_path, fitted):
    folder = save_checkpoint(tmp_path / "ckpt", "cond_gan3d", fitted, {"name": "ckpt"},
                             "# card\n")
    return folder, fitted


def test_round_trip_is_exact(saved, encoder):
    folder, generator = saved
    loaded = load_generator(folder)
    original, restored = generator.state_dict(), loaded.generator.state_dict()
    assert original.keys() == restored.keys()
    assert all(torch.equal(original[k], restored[k]) for k in original)
    assert loaded.config["generator"] == generator.config
    assert loaded.config["name"] == "ckpt" and loaded.config["format"] == "cfx-checkpoint/1"
    labels = torch.zeros(1, 4, 16, 16, 16)
    labels[:, 1] = 1
    noise = torch.randn(1, 1, 16, 16, 16)
    assert loaded.generator.fields == generator.fields == FIELDS
    with torch.no_grad():
        a = generator(labels, noise, generator.condition(
            encode_record(generator, encoder, RECORDS[0])))
        b = loaded.generator(labels, noise, loaded.generator.condition(
            encode_record(loaded.generator, encoder, RECORDS[0])))
    assert torch.equal(a, b)
    assert (folder / "README.md").read_text() == "# card\n"


def test_whitening_statistics_travel_with_the_weights(saved):
    """Every field's whitener (and the tokens' one) is restored, fitted, in field order."""
    folder, generator = saved
    loaded = load_generator(folder).generator
    assert len(loaded.text) == len(FIELDS)
    for original, restored in zip(generator.text, loaded.text, strict=True):
        for name in ("mean", "components", "scale"):
            assert torch.equal(getattr(restored, name), getattr(original, name)), name
        assert restored.mean.abs().sum() > 0  # fitted, not the unfitted zeros
    assert not torch.equal(loaded.text[0].mean, loaded.text[1].mean)  # each its own phrases
    if generator.tokens is not None:
        assert torch.equal(loaded.tokens.mean, generator.tokens.mean)
        assert loaded.tokens.mean.abs().sum() > 0


def test_content_hash_follows_weights_and_config(saved):
    folder, generator = saved
    first = content_hash(folder)
    assert first == load_generator(folder).content_hash and first.startswith("sha256:")
    config = json.loads((folder / "config.json").read_text())
    config["name"] = "renamed"
    (folder / "config.json").write_text(json.dumps(config))
    second = content_hash(folder)
    assert second != first
    with torch.no_grad():
        generator.head.bias.add_(1)
    save_checkpoint(folder, "cond_gan3d", generator, {"name": "renamed"}, "")
    assert content_hash(folder) not in (first, second)


def test_training_state_round_trip(tmp_path):
    tensors = {"a.b": torch.arange(5), "rng": torch.tensor([1, 2], dtype=torch.uint8)}
    save_training_state(tmp_path, tensors, {"step": 3})
    loaded, meta = load_training_state(tmp_path)
    assert meta == {"step": 3} and all(torch.equal(tensors[k], loaded[k]) for k in tensors)


class _Boom:
    def __reduce__(self):
        return (exec, ("raise SystemExit('unpickled!')",))


@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_a_pickle_file_is_refused_without_unpickling(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(CheckpointError, match=rf"model\{suffix}: a \{suffix} file is a pickle"):
        load_generator(path)


def test_a_folder_with_only_a_pickle_is_refused(tmp_path):
    (tmp_path / "weights.pth").write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(CheckpointError, match="holds weights.pth, a pickle, and no "
                                              "model.safetensors; cfx never unpickles"):
        load_generator(tmp_path)


def test_errors(tmp_path, saved):
    folder, _ = saved
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        load_generator(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no model.safetensors; not a cfx checkpoint"):
        load_generator(tmp_path / "empty")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "format": "other/9"}))
    with pytest.raises(CheckpointError, match="format 'other/9', expected 'cfx-checkpoint/1'"):
        read_config(folder)
    (folder / "config.json").write_text(json.dumps({**config, "architecture": "vae"}))
    with pytest.raises(CheckpointError, match="unknown architecture 'vae'; known: cond_gan3d"):
        read_config(folder)
    (folder / "config.json").write_text(json.dumps(
        {**config, "generator": {**config["generator"], "channels": [4, 16, 8]}}))
    with pytest.raises(CheckpointError, match=r"config.json: the generator settings describe "
                                              r"[\d.]+ MB of weights but model.safetensors holds"):
        load_generator(folder)
    (folder / "config.json").write_text(json.dumps(  # whitener shapes no longer match
        {**config, "generator": {**config["generator"], "field_dims": [1, 1, 1]}}))
    with pytest.raises(CheckpointError, match="model.safetensors: cannot load the weights"):
        load_generator(folder)
    (folder / "config.json").write_text(json.dumps(
        {**config, "generator": {**config["generator"], "fields": ["age", "age", "smoking"]}}))
    with pytest.raises(CheckpointError, match="config.json: bad generator settings "
                                              r"\(fields: need distinct names"):
        load_generator(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json: cannot read it"):
        read_config(folder)
    with pytest.raises(CheckpointError, match="no training_state.safetensors"):
        load_training_state(folder)


def test_weights_are_safetensors(saved):
    folder, _ = saved
    from safetensors import safe_open

    with safe_open(folder / "model.safetensors", "pt") as handle:
        keys = set(handle.keys())
    assert {f"text.{i}.{b}" for i in range(len(FIELDS)) for b in ("mean", "components")} <= keys
    assert tiny_generator().config["channels"] == [4, 8, 8]


def test_files_are_readable_by_others(saved):
    import os
    import stat

    folder, _ = saved
    umask = os.umask(0)
    os.umask(umask)
    for name in ("config.json", "model.safetensors", "README.md"):
        mode = stat.S_IMODE((folder / name).stat().st_mode)
        assert mode == 0o666 & ~umask, name


def test_diffusion_round_trip_is_exact(tmp_path, encoder):
    from cfx.models.nets.cond_diffusion3d import CondDiffusion3D
    from cfx.models.sampling import draw_diffusion_noise, sample_volumes
    from tests.models.conftest import PHRASES, tiny_diffusion

    model = tiny_diffusion()
    model.fit_text([encoder.encode(PHRASES[field]).pooled for field in FIELDS])
    folder = save_checkpoint(tmp_path / "diffusion", "cond_diffusion3d", model, {"name": "d"},
                             "# card\n")
    loaded = load_generator(folder)
    assert isinstance(loaded.generator, CondDiffusion3D)
    assert loaded.config["architecture"] == "cond_diffusion3d"
    assert loaded.config["generator"] == model.config
    original, restored = model.state_dict(), loaded.generator.state_dict()
    assert original.keys() == restored.keys()
    assert all(torch.equal(original[k], restored[k]) for k in original)
    labels = torch.zeros(1, 4, 16, 16, 16)
    labels[:, 1] = 1
    noise = draw_diffusion_noise((16, 16, 16), 0)
    a, b = (sample_volumes(m, labels, m.condition(encode_record(m, encoder, RECORDS[0])), noise,
                           steps=2) for m in (model, loaded.generator))
    assert torch.equal(a, b)
