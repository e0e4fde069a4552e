"""Shared test settings, and the tiny model of tests/tiny_factory.py served as fixtures."""

from pathlib import Path

import pytest
import torch
from tiny_factory import save_tiny_model, tiny_tokenizer


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread: on a shared 2-core machine two threads spin against other jobs and run
    these small models several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny random Qwen2 and its tokenizer saved like a checkpoint directory, once per session."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()
