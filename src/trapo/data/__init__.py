"""Data: the :class:`Example` record, token encoding, loaders for verl parquet / JSONL, validation."""

from trapo.data.encoding import boundary_token_ids, encode_prompt, encode_response
from trapo.data.loaders import LoadResult, SkippedRow, load_examples, write_examples
from trapo.data.schema import Example

__all__ = [
    "Example",
    "LoadResult",
    "SkippedRow",
    "boundary_token_ids",
    "encode_prompt",
    "encode_response",
    "load_examples",
    "write_examples",
]
