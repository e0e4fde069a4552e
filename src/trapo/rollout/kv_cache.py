"""The KV cache of :class:`~trapo.rollout.HFEngine`: buffers allocated ahead, rows that come and go.

A decode step writes its keys and values into buffers allocated ahead (:class:`PreallocatedLayer`), where a
``DynamicCache`` copies the whole cache with ``torch.cat`` every step: on CPU that copy was most of a decode
step's time. Continuous batching needs three more operations on the same buffers: put a new row's prefill into
a free row slot (``put_rows``, right-aligned with the running rows: every row writes its next token at the same
position), make room (``reserve``: more rows or positions, or the filled positions moved right when a new
prompt is wider than what is filled), and drop finished rows and the leading positions no kept row uses
(``batch_select_indices``).
"""

from __future__ import annotations

import torch

try:  # transformers >= 5: a cache is a list of per-layer objects
    from transformers.cache_utils import DynamicCache, DynamicLayer
except ImportError:  # pragma: no cover - older transformers: plain DynamicCache behaviour
    DynamicCache = DynamicLayer = None

_BUFFERS = ("_key_buffer", "_value_buffer")

if DynamicLayer is not None:

    class PreallocatedLayer(DynamicLayer):
        """A full-attention cache layer whose keys and values live in buffers of ``capacity`` positions (and at
        least ``rows`` rows), allocated on the first write: each update copies only the new positions in, and
        ``keys``/``values`` are views of the live rows' filled part (what ``DynamicLayer`` returns, without its
        per-step ``torch.cat``)."""

        def __init__(self, capacity: int, rows: int = 0):
            super().__init__()
            self.capacity, self.row_capacity = capacity, rows

        def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
            self.device = key_states.device
            b, h, _, d = key_states.shape
            rows = max(b, self.row_capacity)
            self._key_buffer = key_states.new_empty((rows, h, self.capacity, d))
            self._value_buffer = value_states.new_empty((rows, h, self.capacity, value_states.shape[-1]))
            self._view(b, 0)
            self.is_initialized = True

        def _view(self, rows: int, length: int) -> None:
            self.keys = self._key_buffer[:rows, :, :length]
            self.values = self._value_buffer[:rows, :, :length]

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            rows, start = key_states.shape[0], self.keys.shape[-2]
            stop = start + key_states.shape[-2]
            if stop > self._key_buffer.shape[-2]:  # more than announced: grow (HFEngine reserves ahead)
                self.reserve(rows, max(stop, 2 * self._key_buffer.shape[-2]))
            self._key_buffer[:rows, :, start:stop].copy_(key_states)
            self._value_buffer[:rows, :, start:stop].copy_(value_states)
            self._view(rows, stop)
            return self.keys, self.values

        def reserve(self, rows: int, capacity: int, shift: int = 0) -> None:
            """Room for ``rows`` rows and ``capacity`` positions, with the filled positions moved ``shift`` to
            the right (zeros before them, which the caller masks): one copy, only when something changes."""
            b, length = self.keys.shape[0], self.keys.shape[-2]
            old = self._key_buffer
            if rows <= old.shape[0] and capacity <= old.shape[2] and shift == 0:
                return
            for name in _BUFFERS:
                old = getattr(self, name)
                new = old.new_empty((max(rows, old.shape[0]), old.shape[1], max(capacity, old.shape[2]), old.shape[3]))
                new[:b, :, :shift].zero_()
                new[:b, :, shift : shift + length].copy_(old[:b, :, :length])
                setattr(self, name, new)
            self._view(b, length + shift)

        def put_rows(self, slots: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> None:
            """Write rows (``keys``/``values``: rows, heads, width, dim) into row ``slots`` (free rows or the ones
            right after the live rows; ``reserve`` first), ending at the filled length; their positions before
            ``width`` are zeros, for the caller to mask."""
            if not self.is_initialized:
                self.lazy_initialization(keys[:0], values[:0])
            b, length, width = self.keys.shape[0], self.keys.shape[-2], keys.shape[-2]
            if width > length:
                raise ValueError(f"rows of {width} positions do not fit before position {length}")
            for name, new in zip(_BUFFERS, (keys, values), strict=True):
                buffer = getattr(self, name)
                buffer[slots, :, : length - width] = 0
                buffer[slots, :, length - width : length] = new
            self._view(max(b, int(slots.max()) + 1), length)

        def batch_select_indices(self, indices: torch.Tensor, start: int = 0) -> None:
            """Keep the rows ``indices`` (ascending, as the engine drops finished rows, or repeating a row, as
            it expands a shared prefill) and their positions from ``start`` on: gathered to the front of the
            buffer, in place when there are no more rows than it holds (a new buffer is memory touched for the
            first time, which on CPU cost more than the copy)."""
            if not self.is_initialized:
                return
            length, rows = self.keys.shape[-2], len(indices)
            for name in _BUFFERS:
                buffer = getattr(self, name)
                # index_select (a copy: safe to write back over the rows it came from) is several times faster
                # than advanced indexing on this strided view
                selected = torch.index_select(buffer[:, :, start:length], 0, indices)
                if rows > buffer.shape[0]:
                    buffer = buffer.new_empty((rows, *buffer.shape[1:]))
                buffer[:rows, :, : length - start] = selected
                setattr(self, name, buffer)
            self._view(rows, length - start)
else:  # pragma: no cover
    PreallocatedLayer = None


def new_cache(model: torch.nn.Module, capacity: int, rows: int = 0):
    """A ``DynamicCache`` for ``model`` whose full-attention layers are preallocated for ``capacity`` positions
    and ``rows`` rows (sliding-window and other layer kinds keep their own behaviour); None where that is not
    available."""
    if DynamicCache is None:
        return None
    try:
        cache = DynamicCache(config=model.config)
    except Exception:  # a model whose config the cache cannot read: let the model build its own
        return None
    layers = getattr(cache, "layers", None)
    if not layers:  # a lazily filled cache: the model's layers are not known up front
        return None
    for i, layer in enumerate(layers):
        if type(layer) is DynamicLayer:
            layers[i] = PreallocatedLayer(capacity, rows)
    return cache


def all_preallocated(cache) -> bool:
    """Whether every layer of ``cache`` is a :class:`PreallocatedLayer` (rows can join a running batch)."""
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(isinstance(layer, PreallocatedLayer) for layer in layers)
