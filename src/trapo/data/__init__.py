"""Data: the :class:`Example` record, token encoding, loaders for verl parquet / JSONL, validation."""

from trapo.data.encoding import (
    AUTHORS_TEMPLATE,
    PROMPT_TEMPLATES,
    boundary_token_ids,
    encode_prompt,
    encode_response,
    expert_text,
)
from trapo.data.loaders import LoadResult, SkippedRow, examples_from_rows, load_examples, write_examples
from trapo.data.schema import Example

__all__ = [
    "AUTHORS_TEMPLATE",
    "PROMPT_TEMPLATES",
    "Example",
    "LoadResult",
    "SkippedRow",
    "boundary_token_ids",
    "encode_prompt",
    "encode_response",
    "examples_from_rows",
    "expert_text",
    "load_examples",
    "write_examples",
]
