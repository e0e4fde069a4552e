"""Data: the :class:`Example` record, loaders for verl parquet / JSONL, validation."""

from trapo.data.schema import Example

__all__ = ["Example"]
