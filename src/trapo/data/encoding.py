"""Turning records into token ids the same way everywhere (training, evaluation, pre-training)."""

from __future__ import annotations

import re
from pathlib import Path

from trapo.data.schema import Example

# The TRAPO authors' prompt (luffy/verl/verl/trapo_src/rl_dataset_with_target.py, ``our_get_prompt_text``):
# a Qwen chat frame written out as text around the last user message, tokenized without special handling.
AUTHORS_TEMPLATE = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{problem}\n"
    "Please reason step by step, and put your final answer within \\boxed{{}}.<|im_end|>\n<|im_start|>assistant\n"
)
PROMPT_TEMPLATES = {"chat": None, "none": None, "trapo": AUTHORS_TEMPLATE}
_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL | re.MULTILINE)


def prompt_template_text(template: str) -> str | None:
    """The format string of ``template`` (``{problem}`` is the last user message), or None for ``chat`` /
    ``none``. A name not in :data:`PROMPT_TEMPLATES` is read as a file holding the format string."""
    if template in PROMPT_TEMPLATES:
        return PROMPT_TEMPLATES[template]
    path = Path(template)
    if not path.is_file():
        raise ValueError(f"prompt_template {template!r}: not one of {', '.join(PROMPT_TEMPLATES)} and not a file")
    text = path.read_text(encoding="utf-8")
    if "{problem}" not in text:
        raise ValueError(
            f"prompt_template file {template}: has no {{problem}} placeholder (the last user message "
            "goes there; write literal braces as {{ and }})"
        )
    return text


def encode_prompt(tokenizer, example: Example, template: str = "chat") -> list[int]:
    """Token ids of the prompt.

    ``template``: ``"chat"`` (default) renders the messages with the tokenizer's chat template and the
    generation prompt (tokenizers without one get the last user message as plain text); ``"none"``: the
    last user message as plain text; ``"trapo"``: the authors' prompt (:data:`AUTHORS_TEMPLATE`); any other
    value is a file with a format string around ``{problem}`` (the last user message).
    """
    text = prompt_template_text(template)
    if text is not None:
        rendered = text.format(problem=example.prompt_text)
        return list(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    if template == "chat" and getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(example.prompt, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):  # transformers 5 may return a BatchEncoding
            ids = ids["input_ids"]
        return list(ids)
    return list(tokenizer(example.prompt_text, add_special_tokens=False)["input_ids"])


def expert_text(solution: str, think: str = "keep") -> str:
    """The part of an expert solution that is trained on: ``"keep"`` the whole text; ``"extract"`` the text
    inside ``<think>…</think>``, stripped (the whole text, stripped, where there is no such block), as the
    authors' code does."""
    if think == "keep":
        return solution
    if think != "extract":
        raise ValueError(f"expert_think must be 'keep' or 'extract', got {think!r}")
    match = _THINK.search(solution)
    return (match.group(1) if match else solution).strip()


def encode_response(tokenizer, text: str, add_eos: bool = True) -> list[int]:
    """Token ids of a response text (an expert solution), followed by EOS."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if add_eos:
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos_token_id")
        ids.append(tokenizer.eos_token_id)
    return ids


def boundary_token_ids(tokenizer, marker: str = "\n\n", match: str = "ends_with") -> set[int]:
    """Ids of vocabulary tokens whose text ends with (``match="ends_with"``, ours) or contains
    (``"contains"``, the authors' rule) ``marker``: paragraph boundaries for prefix cuts.

    Works for byte-level BPE vocabularies (``"ĊĊ"``, ``".ĊĊ"`` ...) and plain ones alike, by decoding
    every token once.
    """
    if match not in ("ends_with", "contains"):
        raise ValueError(f"boundary match must be 'ends_with' or 'contains', got {match!r}")
    special = set(tokenizer.all_special_ids)
    found = set()
    for token_id in range(len(tokenizer)):
        if token_id in special:
            continue
        text = tokenizer.decode([token_id])
        if text.endswith(marker) if match == "ends_with" else marker in text:
            found.add(token_id)
    return found
