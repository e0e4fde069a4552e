"""The embedded tokenizer and tiny base-model architecture (built offline, nothing downloaded)."""

from __future__ import annotations

from trapo_lab.models.config import tiny_config
from trapo_lab.models.tokenizer import (
    CHAT_TEMPLATE,
    EOS_TOKEN,
    MULTI_CHAR_TOKENS,
    PAD_TOKEN,
    ROLE_TOKENS,
    SPECIAL_TOKENS,
    build_tokenizer,
)

__all__ = [
    "CHAT_TEMPLATE",
    "EOS_TOKEN",
    "MULTI_CHAR_TOKENS",
    "PAD_TOKEN",
    "ROLE_TOKENS",
    "SPECIAL_TOKENS",
    "build_tokenizer",
    "tiny_config",
]
