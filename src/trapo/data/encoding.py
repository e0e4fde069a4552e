"""Turning records into token ids the same way everywhere (training, evaluation, pre-training)."""

from __future__ import annotations

from trapo.data.schema import Example


def encode_prompt(tokenizer, example: Example) -> list[int]:
    """Token ids of the prompt, rendered with the tokenizer's chat template and the generation prompt.

    Tokenizers without a chat template get the last user message as plain text.
    """
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(example.prompt, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):  # transformers 5 may return a BatchEncoding
            ids = ids["input_ids"]
        return list(ids)
    return list(tokenizer(example.prompt_text, add_special_tokens=False)["input_ids"])


def encode_response(tokenizer, text: str, add_eos: bool = True) -> list[int]:
    """Token ids of a response text (an expert solution), followed by EOS."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if add_eos:
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos_token_id")
        ids.append(tokenizer.eos_token_id)
    return ids


def boundary_token_ids(tokenizer, marker: str = "\n\n") -> set[int]:
    """Ids of vocabulary tokens whose text ends with ``marker`` (paragraph boundaries for prefix cuts).

    Works for byte-level BPE vocabularies (``"ĊĊ"``, ``".ĊĊ"`` ...) and plain ones alike, by decoding
    every token once.
    """
    special = set(tokenizer.all_special_ids)
    found = set()
    for token_id in range(len(tokenizer)):
        if token_id in special:
            continue
        if tokenizer.decode([token_id]).endswith(marker):
            found.add(token_id)
    return found
