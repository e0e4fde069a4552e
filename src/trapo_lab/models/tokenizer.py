"""The embedded tokenizer: byte-level, one token per character, built offline with ``tokenizers``.

Design (every choice is there for a reason the tests check):

- The base vocabulary is the 256 byte-level symbols of GPT-2-style tokenizers, in byte order, so token id
  ``b`` is byte ``b`` (``"7"`` is id 55) and any text can be encoded: there is no unknown token.
- Every digit is its own token (the pre-tokenizer isolates digits), which arithmetic needs.
- A handful of merges add multi-character tokens: ``"\\n\\n"`` is ONE token, so the prefix-cut rule
  (:func:`trapo.data.boundary_token_ids`) finds paragraph boundaries, and ``\\boxed`` is one token.
- Special tokens: ``<|endoftext|>`` (EOS), ``<|pad|>`` and chat role tokens ``<|system|>``,
  ``<|user|>``, ``<|assistant|>``, with a compact chat template::

      <|user|>4*5*9-28<|assistant|>            (add_generation_prompt=True)
      ... <|assistant|>4*5=20 ... \\boxed{152}<|endoftext|>   (assistant turns end with EOS)

- Normaliser, pre-tokenizer and decoder are exactly those of the Qwen2 tokenizer. ``transformers`` 5
  reloads a tokenizer saved next to a ``qwen2`` model config as its own ``Qwen2Tokenizer`` class, which
  rebuilds the pipeline from vocabulary and merges; because ours already *is* that pipeline, the reloaded
  tokenizer gives the same ids (tested), instead of silently changing them.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
SPECIAL_TOKENS = (EOS_TOKEN, PAD_TOKEN, *ROLE_TOKENS.values())

# Multi-character tokens, each spelled as the merges that build it from single bytes.
MULTI_CHAR_TOKENS = ("\n\n", "\\boxed")

# The Qwen2 pre-tokenization regex: digits one by one, letter runs, punctuation runs, newline runs.
PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown chat role: ' + message['role']) }}"
    "{% endif %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}"
    "{% if message['role'] == 'assistant' %}<|endoftext|>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def bytes_to_unicode() -> dict[int, str]:
    """The byte-level alphabet: each byte maps to a printable unicode character.

    Printable Latin-1 bytes map to themselves; the 68 others (controls, space, ...) are shifted to
    code points 256 and up, in byte order, so ``"\\n"`` (byte 10) is ``"Ċ"`` as in GPT-2 and Qwen2.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping: dict[int, str] = {}
    shifted = 0
    for byte in range(256):
        if byte in printable:
            mapping[byte] = chr(byte)
        else:
            mapping[byte] = chr(256 + shifted)
            shifted += 1
    return mapping


def _merges_for(text: str, byte_chars: dict[int, str]) -> list[tuple[str, str]]:
    """Left-to-right merges that assemble ``text`` (its byte-level spelling) into one token."""
    symbols = [byte_chars[b] for b in text.encode("utf-8")]
    merges = []
    current = symbols[0]
    for symbol in symbols[1:]:
        merges.append((current, symbol))
        current += symbol
    return merges


def build_tokenizer(
    multi_char_tokens: tuple[str, ...] = MULTI_CHAR_TOKENS, model_max_length: int = 512
) -> PreTrainedTokenizerFast:
    """Build the embedded tokenizer offline (no download): byte-level BPE whose only merges form
    ``multi_char_tokens``; special tokens and chat template as described in the module docstring.

    Deterministic: the same arguments always give the same vocabulary and ids.
    """
    if "\n\n" not in multi_char_tokens:
        raise ValueError('multi_char_tokens must contain "\\n\\n" (the paragraph boundary of prefix cuts)')
    byte_chars = bytes_to_unicode()
    vocab = {byte_chars[b]: b for b in range(256)}
    merges: list[tuple[str, str]] = []
    for text in multi_char_tokens:
        if len(text) < 2:
            raise ValueError(f"multi_char_tokens entries need two or more characters, got {text!r}")
        for left, right in _merges_for(text, byte_chars):
            if left + right not in vocab:
                vocab[left + right] = len(vocab)
                merges.append((left, right))
    backend = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=merges,
            dropout=None,
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=None,
        chat_template=CHAT_TEMPLATE,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )
