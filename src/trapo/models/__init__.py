"""The embedded tokenizer and tiny base-model architecture (built offline, nothing downloaded)."""

from __future__ import annotations

import os

from trapo.models.config import tiny_config
from trapo.models.tokenizer import (
    CHAT_TEMPLATE,
    EOS_TOKEN,
    MULTI_CHAR_TOKENS,
    PAD_TOKEN,
    ROLE_TOKENS,
    SPECIAL_TOKENS,
    build_tokenizer,
)


def load_model_and_tokenizer(path: str | os.PathLike):
    """``AutoModelForCausalLM`` and ``AutoTokenizer`` from a model directory (e.g. ``trapo base``'s output)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


__all__ = [
    "CHAT_TEMPLATE",
    "EOS_TOKEN",
    "MULTI_CHAR_TOKENS",
    "PAD_TOKEN",
    "ROLE_TOKENS",
    "SPECIAL_TOKENS",
    "build_tokenizer",
    "load_model_and_tokenizer",
    "tiny_config",
]
