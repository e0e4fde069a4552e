"""The test suite's one tiny-model factory: a small offline tokenizer and a tiny random Qwen2, built from code (no
download, no import of the lab), for the library's tests and the lab's alike.

The tokenizer is a byte-level BPE of ``transformers``' own ``Qwen2Tokenizer`` class: token id ``b`` is byte ``b``
(any text encodes; there is no unknown token), ``"\\n\\n"`` is one token (the paragraph boundary that prefix cuts
look for, :func:`trapo.data.boundary_token_ids`), and special tokens end and pad sequences and mark chat roles.
Being a ``Qwen2Tokenizer`` it reloads with the same ids from a directory next to a ``qwen2`` model config, as the
CLI loads it: transformers 5 reloads any tokenizer found there as ``Qwen2Tokenizer``, rebuilding the pipeline from
the vocabulary, and a tokenizer of another kind (a character-level one, say) comes back with other ids.

Imported by name (pytest puts ``tests/`` on ``sys.path`` for ``tests/conftest.py``); ``tests/conftest.py``
serves it as fixtures.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2Tokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

EOS, PAD = "<|endoftext|>", "<|pad|>"
ROLES = ("<|system|>", "<|user|>", "<|assistant|>")
CHAT_TEMPLATE = (  # an unknown role is an error, as many models' templates make it
    "{% for m in messages %}"
    "{% if m['role'] not in ['system', 'user', 'assistant'] %}{{ raise_exception('unknown role ' + m['role']) }}"
    "{% endif %}<|{{ m['role'] }}|>{{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}<|endoftext|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def tiny_tokenizer() -> Qwen2Tokenizer:
    """256 byte tokens (id = byte), ``"\\n\\n"`` as one token (id 256), then EOS, PAD and the three role tokens."""
    byte_chars = bytes_to_unicode()
    vocab = {byte_chars[b]: b for b in range(256)}
    newline = byte_chars[ord("\n")]
    vocab[newline * 2] = len(vocab)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=[(newline, newline)],
        unk_token=None,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=list(ROLES),
        model_max_length=512,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_qwen2_config(
    vocab_size: int,
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    num_kv_heads: int | None = None,
    intermediate_size: int | None = None,
    **overrides,
) -> Qwen2Config:
    """A tiny Qwen2 config (about 10k parameters a layer at the defaults): full attention, tied embeddings, 512
    positions; ``num_kv_heads`` defaults to ``num_heads``, ``intermediate_size`` to twice the hidden size;
    ``overrides`` are any other ``Qwen2Config`` fields (``eos_token_id``, ``attn_implementation`` ...)."""
    settings = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads or num_heads,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        use_sliding_window=False,
        rope_theta=10000.0,
        bos_token_id=None,
    )
    return Qwen2Config(**{**settings, **overrides})


def tiny_qwen2(tokenizer, seed: int = 0, **sizes) -> Qwen2ForCausalLM:
    """A random Qwen2 (``torch.manual_seed(seed)`` first) for ``tokenizer``'s vocabulary, EOS and PAD;
    ``sizes``: :func:`tiny_qwen2_config`'s."""
    torch.manual_seed(seed)
    config = tiny_qwen2_config(
        len(tokenizer), eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **sizes
    )
    return Qwen2ForCausalLM(config)


def save_tiny_model(directory: Path, seed: int = 0, tokenizer=None, **sizes) -> Path:
    """:func:`tiny_qwen2` and its tokenizer (default :func:`tiny_tokenizer`) saved to ``directory`` like a
    checkpoint directory (vLLM's CPU attention needs a head size of 32 or more: ``hidden_size=64, num_heads=2``)."""
    tokenizer = tokenizer if tokenizer is not None else tiny_tokenizer()
    directory.mkdir(parents=True, exist_ok=True)
    tiny_qwen2(tokenizer, seed, **sizes).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
