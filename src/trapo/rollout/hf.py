"""Rollout engines on a ``transformers`` causal LM, sharing the training model's weights.

:class:`HFEngine` is the default: a sampling loop over the model's forward pass with a KV cache and left
padding, and continuous batching (:class:`HFStream`): requests join the running batch while it decodes, and
finished rows leave it. It supports what guided rollouts need and ``model.generate`` does not give directly: a
token budget per prompt (a guided trajectory's continuation may be shorter than an unguided one's), an explicit
``torch.Generator`` or a random stream per row (:mod:`trapo.rollout.sampling`), so every sample is reproducible.

The KV cache lives in buffers allocated ahead (:mod:`trapo.rollout.kv_cache`; a ``DynamicCache`` copies the
whole cache with ``torch.cat`` every step, on CPU most of a decode step's time; benchmarks/vs_trl.py measures
the engine against ``model.generate``). On a plain Qwen2 model the decode steps run
:class:`~trapo.rollout.qwen2_decode.Qwen2Decoder`, the same step in fewer tensor ops.
:class:`~trapo.rollout.hf_generate.HFGenerateEngine` wraps ``model.generate`` itself; tests check that the two
agree under greedy decoding.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Hashable, Sequence
from typing import NamedTuple

import torch

from trapo.rollout.base import RolloutEngine, RolloutStream, SamplingParams, distinct_sequences, is_full_attention
from trapo.rollout.kv_cache import DynamicCache, DynamicLayer, PreallocatedLayer, all_preallocated
from trapo.rollout.kv_cache import new_cache as _new_cache
from trapo.rollout.qwen2_decode import qwen2_decoder
from trapo.rollout.sampling import sample_next, stream_uniforms

_PreallocatedLayer = PreallocatedLayer  # the former name
__all__ = ["DynamicCache", "DynamicLayer", "HFEngine", "HFStream", "sample_next"]


def _budgets(prompts: Sequence[Sequence[int]], max_new_tokens: int | Sequence[int]) -> list[int]:
    if isinstance(max_new_tokens, int):
        budgets = [max_new_tokens] * len(prompts)
    else:
        budgets = [int(b) for b in max_new_tokens]
        if len(budgets) != len(prompts):
            raise ValueError(f"max_new_tokens has {len(budgets)} entries but there are {len(prompts)} prompts")
    if any(b < 0 for b in budgets):
        raise ValueError("max_new_tokens must be >= 0")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    return budgets


def _left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, width - len(p) :] = torch.as_tensor(list(p), dtype=torch.long)
        mask[row, width - len(p) :] = 1
    return ids.to(device), mask.to(device)


def _full_attention_sdpa(model: torch.nn.Module) -> bool:
    """Whether every attention layer of ``model`` is full (causal) attention run by ``sdpa``: then a decode
    step's mask is the key-padding mask as it stands, ``(rows, 1, 1, keys)`` booleans, and building it in
    place spares transformers a ``create_causal_mask`` per step (which returns a 4D mask as given)."""
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None) == "sdpa" and is_full_attention(model)


def _cache_argument(model: torch.nn.Module) -> str:
    """The forward's name for the KV cache: ``cache`` (newer transformers 5 releases) or ``past_key_values``."""
    return "cache" if _accepts(model, "cache") else "past_key_values"


class HFEngine(RolloutEngine):
    """Batched sampling with a KV cache on a ``transformers`` causal LM, with continuous batching.

    Args:
        model: the (training) model; generation runs under ``torch.inference_mode`` in eval mode and the
            model's train/eval mode is restored afterwards.
        eos_token_id: stops a continuation (kept as its last token). ``pad_token_id`` fills left padding.
        max_batch_size: rows per forward pass; further requests wait and join as rows finish.
        dtype: compute dtype of generation (``torch.bfloat16`` for ``--bf16``): forward passes under autocast,
            decode steps with copies of the matrix weights in that dtype; None computes in the weights' dtype.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        eos_token_id: int,
        pad_token_id: int,
        max_batch_size: int = 256,
        dtype: torch.dtype | None = None,
    ):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.model, self.dtype = model, dtype
        self.eos_token_id = int(eos_token_id)
        self.pad_token_id = int(pad_token_id)
        self.max_batch_size = max_batch_size

    @classmethod
    def from_tokenizer(
        cls, model: torch.nn.Module, tokenizer, max_batch_size: int = 256, dtype: torch.dtype | None = None
    ) -> HFEngine:
        """Take EOS and PAD from a ``transformers`` tokenizer (PAD falls back to EOS)."""
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos_token_id; set one before rollouts")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        return cls(model, tokenizer.eos_token_id, pad, max_batch_size, dtype)

    def open_stream(
        self,
        sampling: SamplingParams | None = None,
        generator: torch.Generator | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> HFStream:
        """A :class:`HFStream`: requests join the running batch while it decodes."""
        return HFStream(self, sampling or SamplingParams(), generator, progress)

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int | Sequence[int],
        sampling: SamplingParams | None = None,
        generator: torch.Generator | None = None,
        seeds: Sequence[int] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[list[int]]:
        """See :meth:`RolloutEngine.generate`. ``progress(finished, tokens)``, when given, is called after every
        decode step with the number of continuations that finished in it and the tokens it sampled."""
        budgets = _budgets(prompts, max_new_tokens)
        if seeds is not None and len(seeds) != len(prompts):
            raise ValueError(f"seeds has {len(seeds)} entries but there are {len(prompts)} prompts")
        stream = self.open_stream(sampling, generator, progress)
        for i, (prompt, budget) in enumerate(zip(prompts, budgets, strict=True)):
            stream.submit(i, prompt, budget, None if seeds is None else seeds[i])
        out: list[list[int]] = [[] for _ in prompts]
        while stream.busy:
            for i, ids, _ in stream.step():
                out[i] = ids
        return out


class _Request(NamedTuple):
    key: Hashable
    prompt: list[int]
    budget: int
    seed: int


class HFStream(RolloutStream):
    """An :class:`HFEngine`'s running batch (:class:`~trapo.rollout.base.RolloutStream`).

    Each :meth:`step` runs one decode pass over the running rows, then admits queued requests while there
    is room: their prompts are prefilled together (identical prompts once) and their keys and values written
    into free row slots of the running cache, right-aligned with it (:mod:`trapo.rollout.kv_cache`); their
    first token is sampled at once and they join the next pass. Finished rows free their slots; the batch is
    compacted (finished rows dropped, positions no row uses trimmed) when a quarter of it is finished or
    unused. On a model whose cache cannot be preallocated, requests are admitted only into an empty batch.
    Rows sample from their own streams where ``seed`` is given (:mod:`trapo.rollout.sampling`), else from
    ``generator``.
    """

    _ROW_FIELDS = ("ids", "positions", "budget", "drawn", "seeds", "live")

    def __init__(self, engine: HFEngine, sampling: SamplingParams, generator=None, progress=None):
        self.engine, self.model, self.sampling = engine, engine.model, sampling
        self.generator, self.progress = generator, progress
        self.device = next(self.model.parameters()).device
        self.mask_4d = _full_attention_sdpa(self.model)
        self.extra = {"logits_to_keep": 1} if _accepts(self.model, "logits_to_keep") else {}
        self.cache_arg = _cache_argument(self.model)
        self.queue: list[_Request] = []
        self.finished: list[tuple[Hashable, list[int], None]] = []  # no log-probs: the trainer computes them
        self.seeded: bool | None = None
        self._reset()

    def _reset(self) -> None:
        """An empty batch: no rows, no cache."""
        self.keys: list[Hashable | None] = []  # the request in each row slot (None: free)
        self.outputs: dict[Hashable, list[int]] = {}
        self.cache, self.decoder, self.mergeable, self.length = None, None, False, 0
        self.mask = torch.zeros((0, 0), dtype=torch.bool, device=self.device)
        for name in self._ROW_FIELDS:
            setattr(self, name, torch.zeros(0, dtype=torch.bool if name == "live" else torch.long, device=self.device))

    @property
    def running(self) -> int:
        return len(self.outputs)

    @property
    def busy(self) -> bool:
        return bool(self.queue or self.finished or self.outputs)

    def submit(self, key: Hashable, prompt: Sequence[int], max_new_tokens: int, seed: int | None = None) -> None:
        """See :meth:`RolloutStream.submit`; ``seed`` None samples from the stream's ``generator`` instead
        (all requests of a stream alike)."""
        if self.seeded is None:
            self.seeded = seed is not None
        if self.seeded != (seed is not None):
            raise ValueError("give every request of a stream a seed, or none")
        if not prompt:
            raise ValueError("every prompt needs at least one token")
        if max_new_tokens < 0:
            raise ValueError("max_new_tokens must be >= 0")
        if max_new_tokens == 0:  # an empty continuation
            self.finished.append((key, [], None))
            if self.progress is not None:
                self.progress(1, 0)
            return
        self.queue.append(_Request(key, list(prompt), int(max_new_tokens), int(seed or 0)))

    def step(self) -> list[tuple[Hashable, list[int], None]]:
        """See :meth:`RolloutStream.step`."""
        was_training = self.model.training
        if was_training:
            self.model.eval()
        try:
            with torch.inference_mode(), self._autocast():
                if self.running:
                    self._decode()
                self._compact()
                self._admit()
        finally:
            if was_training:
                self.model.train()
        done, self.finished = self.finished, []
        return done

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.engine.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.engine.dtype)

    # ------------------------------------------------------------------ one pass
    def _forward(self) -> torch.Tensor:
        """Logits of the next token of every row slot, from the tokens in ``ids``."""
        self.mask[:, self.length] = True
        self.length += 1
        ids, positions, mask = self.ids[:, None], self.positions[:, None], self.mask[:, : self.length]
        if self.decoder is not None:
            return self.decoder.step(ids, positions, mask[:, None, None, :], self.cache)
        result = self.model(
            input_ids=ids,
            attention_mask=mask[:, None, None, :] if self.mask_4d else mask,
            position_ids=positions,
            use_cache=True,
            **{self.cache_arg: self.cache},
            **self.extra,
        )
        return result.logits[:, -1, :]

    def _decode(self) -> None:
        logits = self._forward()
        self.positions += self.live  # finished rows (until compacted) stay within the rotary table
        slots = self.live.nonzero().flatten()
        self._sample_and_record(slots, logits[slots])

    def _sample_and_record(self, slots: torch.Tensor, logits: torch.Tensor) -> None:
        """Sample a token for each row of ``slots``, append it, and move rows that stop out of the batch."""
        uniforms = stream_uniforms(self.seeds[slots], self.drawn[slots]) if self.seeded else None
        tokens = sample_next(logits, self.sampling, self.generator, uniforms)
        self.drawn[slots] += 1
        done = (tokens == self.engine.eos_token_id) | (self.drawn[slots] >= self.budget[slots])
        self.live[slots] = ~done
        self.ids[slots] = torch.where(done, self.engine.pad_token_id, tokens)
        for slot, token in zip(slots.tolist(), tokens.tolist(), strict=True):
            self.outputs[self.keys[slot]].append(token)
        for slot in slots[done].tolist():
            key, self.keys[slot] = self.keys[slot], None
            self.finished.append((key, self.outputs.pop(key), None))
        if self.progress is not None:
            self.progress(int(done.sum()), len(slots))

    # ------------------------------------------------------------------ rows in and out
    def _compact(self) -> None:
        """Drop finished rows once they are a quarter of the batch, and the leading positions no live row
        uses once they are a quarter of the filled length (one gather of the cache for both)."""
        if not self.running:
            if self.keys:
                self._reset()
            return
        start = int(self.mask[self.live, : self.length].any(0).int().argmax()) if self.mergeable else 0
        if (len(self.keys) - self.running) * 4 < len(self.keys) and start * 4 < max(self.length, 1):
            return
        keep = self.live.nonzero().flatten()
        if self.mergeable:
            for layer in self.cache.layers:
                layer.batch_select_indices(keep, start)
        else:
            self.cache.batch_select_indices(keep)
        for name in self._ROW_FIELDS:
            setattr(self, name, getattr(self, name)[keep])
        self.mask = self.mask[keep, start:]
        self.keys = [self.keys[i] for i in keep.tolist()]
        self.length -= start

    def _prefill(self, prompts: list[list[int]], capacity: int):
        """The model over the new rows' (left-padded) prompts, identical prompts once: (last logits per row,
        cache, index of each row's prompt in the cache, prompt mask per row)."""
        unique, index = distinct_sequences(prompts)
        expand = torch.tensor(index, device=self.device)
        ids, mask = _left_pad(unique, self.engine.pad_token_id, self.device)
        cache = _new_cache(self.model, capacity)
        result = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
            use_cache=True,
            **{self.cache_arg: cache},
            **self.extra,
        )
        if cache is None:
            cache = getattr(result, "past_key_values", None) or getattr(result, "cache", None)
        return result.logits[:, -1, :][expand], cache, expand, mask[expand].bool()

    def _admit(self) -> None:
        room = self.engine.max_batch_size - self.running
        if not self.queue or room <= 0 or (self.running and not self.mergeable):
            return
        new, self.queue = self.queue[:room], self.queue[room:]
        width = max(len(r.prompt) for r in new)
        remaining = max(r.budget for r in new)
        if self.running:
            remaining = max(remaining, int((self.budget - self.drawn)[self.live].max()))
        length = max(self.length, width)
        logits, cache, expand, prompt_mask = self._prefill([r.prompt for r in new], length + remaining)
        if not self.running:  # an empty batch takes the prefill as its cache
            self.cache, self.length, self.mergeable = cache, width, all_preallocated(cache)
            if len(expand) > int(expand.max()) + 1:
                cache.batch_select_indices(expand)
            slots = self._add_slots(len(new), width + remaining)
            self.mask[slots, :width] = prompt_mask
        else:
            slots = self._merge(cache, expand, prompt_mask, length + remaining)
        self._start_rows(new, slots)
        positions = int((self.positions[slots] + self.budget[slots]).max())  # the rotary table's reach
        if self.decoder is None and self.mask_4d and self.mergeable:
            self.decoder = qwen2_decoder(self.model, positions, self.engine.dtype)
        elif self.decoder is not None:
            self.decoder.reach(positions)
        self._sample_and_record(slots, logits)

    def _add_slots(self, n: int, capacity: int) -> torch.Tensor:
        """Row slots for ``n`` new rows: free ones first, then new ones after the last; the mask and the row
        fields grow to hold them and ``capacity`` positions."""
        free = [i for i, key in enumerate(self.keys) if key is None][:n]
        extra = n - len(free)
        rows, columns = len(self.keys) + extra, max(capacity, self.mask.shape[1])
        mask = torch.zeros((rows, columns), dtype=torch.bool, device=self.device)
        mask[: self.mask.shape[0], : self.mask.shape[1]] = self.mask
        self.mask = mask
        for name in self._ROW_FIELDS:
            field = getattr(self, name)
            setattr(self, name, torch.cat([field, field.new_zeros(extra)]))
        self.keys.extend([None] * extra)
        return torch.tensor(free + list(range(rows - extra, rows)), dtype=torch.long, device=self.device)

    def _merge(self, cache, expand: torch.Tensor, prompt_mask: torch.Tensor, capacity: int) -> torch.Tensor:
        """Put the prefilled rows into the running cache, right-aligned with it (the running rows move right
        where the new prompts are wider than what is filled)."""
        width = prompt_mask.shape[1]
        shift = max(width - self.length, 0)
        slots = self._add_slots(len(expand), capacity + shift)
        if shift:
            self.mask = torch.cat([self.mask.new_zeros((self.mask.shape[0], shift)), self.mask[:, :-shift]], dim=1)
            self.length += shift
        for layer, new in zip(self.cache.layers, cache.layers, strict=True):
            layer.reserve(len(self.keys), self.mask.shape[1], shift)
            layer.put_rows(slots, new.keys[expand], new.values[expand])
        self.mask[slots] = False
        self.mask[slots, self.length - width : self.length] = prompt_mask
        return slots

    def _start_rows(self, new: list[_Request], slots: torch.Tensor) -> None:
        """Set the row fields of the requests ``new`` in ``slots`` (before their first token is sampled)."""
        values = {
            "positions": [len(r.prompt) for r in new],  # of the token each row feeds next
            "budget": [r.budget for r in new],
            "drawn": [0] * len(new),
            "seeds": [r.seed for r in new],
        }
        for name, column in values.items():
            getattr(self, name)[slots] = torch.tensor(column, dtype=torch.long, device=self.device)
        self.live[slots] = True
        for slot, r in zip(slots.tolist(), new, strict=True):
            self.keys[slot] = r.key
            self.outputs[r.key] = []


def _accepts(model: torch.nn.Module, name: str) -> bool:
    """Whether ``model``'s forward (that of the model a peft wrapper holds) takes ``name``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return name in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False
