"""Fixtures shared by the command-line tests."""

import pytest

from tests.models.conftest import save_tiny_bert


@pytest.fixture(scope="session")
def bert(tmp_path_factory):
    """Folder of a 2-layer, 32-wide random BERT with the MiniLM tokenizer: a text encoder that
    loads in milliseconds, for ``cfx train --text-encoder``."""
    return str(save_tiny_bert(tmp_path_factory.mktemp("bert")))
