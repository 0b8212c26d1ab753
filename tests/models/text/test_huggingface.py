import pickle
import shutil
import socket

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from cfx.models.text import HFTextEncoder, TextEncoderLoadError, resolve_encoder_path

SHORT = "Lung CT scan: Smoker: yes."
LONGER = ("Lung CT scan: Patient age: 68. Gender: Female. Smoker: yes. Pack-years: 42.5. "
          "One-year status: alive. Diagnosis: CTD-ILD. CTD type: undifferentiated CTD.")


@pytest.fixture(scope="module")
def tiny(tiny_bert):
    return HFTextEncoder(str(tiny_bert), max_length=64, batch_size=2)


def _reference_pooled(folder, prompt, max_length):
    """Mean of the last hidden state of one unpadded prompt, straight from transformers."""
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    batch = tokenizer([prompt], truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).last_hidden_state.mean(dim=1)[0]


def test_shapes_dtypes_mask_and_zero_padding(tiny):
    out = tiny.encode([SHORT, LONGER, ""])
    assert out.tokens.shape == (3, 64, 32) and out.tokens.dtype == torch.float32
    assert out.mask.shape == (3, 64) and out.mask.dtype == torch.bool
    assert out.pooled.shape == (3, 32) and out.pooled.dtype == torch.float32
    lengths = [len(ids) for ids in tiny.tokenizer([SHORT, LONGER, ""])["input_ids"]]
    assert out.mask.sum(dim=1).tolist() == lengths
    assert out.mask[2].sum() == 2  # [CLS] [SEP]
    assert torch.all(out.tokens[~out.mask] == 0)
    assert not out.truncated.any()


def test_pooled_is_the_mean_over_real_tokens_alone_or_batched(tiny, tiny_bert):
    alone = tiny.encode([SHORT]).pooled[0]
    batched = tiny.encode([LONGER, LONGER + " " + LONGER, SHORT, "x " * 200]).pooled[2]
    torch.testing.assert_close(alone, batched, atol=1e-6, rtol=0)
    torch.testing.assert_close(alone, _reference_pooled(tiny_bert, SHORT, 64), atol=1e-5,
                               rtol=0)


def test_truncation_is_flagged(tiny, tiny_bert):
    out = tiny.encode([SHORT, "word " * 100])
    assert out.truncated.tolist() == [False, True]
    assert out.mask[1].all()
    torch.testing.assert_close(out.pooled[1], _reference_pooled(tiny_bert, "word " * 100, 64),
                               atol=1e-5, rtol=0)


def test_outputs_are_plain_tensors_a_projection_can_train_on(tiny):
    out = tiny.encode([SHORT, LONGER])
    assert not out.pooled.is_inference() and not out.tokens.is_inference()
    projection = torch.nn.Linear(tiny.width, 4)
    projection(out.pooled).square().sum().backward()
    assert projection.weight.grad is not None and projection.weight.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in tiny.model.parameters())
    assert not tiny.model.training


def test_empty_request(tiny):
    out = tiny.encode([])
    assert out.tokens.shape == (0, 64, 32) and out.pooled.shape == (0, 32) and len(out) == 0


def test_identifier_is_stable_and_follows_the_weights(tiny, tiny_bert, other_tiny_bert):
    again = HFTextEncoder(str(tiny_bert), max_length=64)
    assert again.identifier == tiny.identifier
    assert tiny.identifier.startswith(f"{tiny_bert.name}-") and tiny.identifier.endswith("-L64")
    assert HFTextEncoder(str(other_tiny_bert), max_length=64).identifier.split("-")[-2] != \
        tiny.identifier.split("-")[-2]
    assert HFTextEncoder(str(tiny_bert), max_length=16).identifier.endswith("-L16")


def test_a_name_that_is_not_a_local_folder_never_downloads(no_network, tmp_path):
    with pytest.raises(TextEncoderLoadError, match=r"'emilyalsentzer/Bio_ClinicalBERT' is not a "
                                                   r"local folder; cfx never downloads models"):
        HFTextEncoder("emilyalsentzer/Bio_ClinicalBERT")
    assert issubclass(TextEncoderLoadError, ValueError)
    with pytest.raises(TextEncoderLoadError, match=r"has no config\.json; give a Hugging Face "
                                                   r"model folder"):
        resolve_encoder_path(str(tmp_path))


def test_a_folder_that_does_not_load(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(TextEncoderLoadError, match=r"cannot load .*"):
        HFTextEncoder(str(tmp_path))


class _Unpickled:
    """A pickle that stops the test process if anything unpickles it."""

    def __reduce__(self):
        return (exec, ("raise SystemExit('unpickled!')",))


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt"])
def test_pickle_weights_are_refused_before_anything_reads_them(tiny_bert, tmp_path, name):
    folder = tmp_path / "encoder"
    shutil.copytree(tiny_bert, folder)
    (folder / "model.safetensors").unlink()
    (folder / name).write_bytes(pickle.dumps(_Unpickled()))
    with pytest.raises(TextEncoderLoadError, match=rf"holds {name}, pickle weights, and no "
                                                   r"\*.safetensors weights; cfx loads text "
                                                   "encoders from safetensors only"):
        HFTextEncoder(str(folder))


def test_parameters_are_checked(tiny_bert):
    with pytest.raises(ValueError, match=r"max_length: must be from 2 to 128 tokens .* got 500"):
        HFTextEncoder(str(tiny_bert), max_length=500)
    with pytest.raises(ValueError, match=r"batch_size: must be at least 1, got 0"):
        HFTextEncoder(str(tiny_bert), batch_size=0)


def test_prompts_must_be_a_sequence_of_str(tiny):
    with pytest.raises(TypeError, match=r"got str \(wrap a single prompt in a list\)"):
        tiny.encode(SHORT)
    with pytest.raises(TypeError, match=r"got items of type int"):
        tiny.encode([SHORT, 3])


def test_minilm_loads_offline_and_tells_prompts_apart(no_network):
    with pytest.raises(AssertionError, match="network access attempted"):
        socket.create_connection(("127.0.0.1", 9), timeout=1)
    encoder = HFTextEncoder("minilm")
    assert (encoder.name, encoder.width, encoder.max_length) == ("minilm", 384, 77)
    assert encoder.identifier.startswith("minilm-") and encoder.identifier.endswith("-L77")
    out = encoder.encode(["Lung CT scan: Smoker: yes.", "Lung CT scan: Smoker: no.",
                          "Lung CT scan: Smoker: yes."])
    assert torch.equal(out.pooled[0], out.pooled[2])
    assert (out.pooled[0] - out.pooled[1]).abs().max() > 1e-3
    cosine = torch.nn.functional.cosine_similarity(out.pooled[0], out.pooled[1], dim=0)
    assert 0.9 < cosine < 0.9999


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(tiny, tiny_bert):
    on_gpu = HFTextEncoder(str(tiny_bert), max_length=64, device="cuda")
    out = on_gpu.encode([SHORT, LONGER])
    assert out.pooled.device.type == "cuda"
    torch.testing.assert_close(out.pooled.cpu(), tiny.encode([SHORT, LONGER]).pooled,
                               atol=1e-4, rtol=0)
