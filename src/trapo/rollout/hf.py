"""Rollout engines on a ``transformers`` causal LM, sharing the training model's weights.

:class:`HFEngine` is the default: a batched sampling loop over the model's forward pass with a KV cache
and left padding. It supports what guided rollouts need and ``model.generate`` does not give directly:
a token budget per prompt (a guided trajectory's continuation may be shorter than an unguided one's) and
an explicit ``torch.Generator``, so every sample has its own reproducible random stream.

A decode step writes its keys, values and mask column into buffers allocated once per batch
(:class:`_PreallocatedLayer`), where a ``DynamicCache`` copies the whole cache with ``torch.cat`` every step:
on CPU that copy was most of a decode step's time (benchmarks/vs_trl.py measures the engine against
``model.generate``). Finished rows are dropped from the batch as they accumulate. On a plain float32 Qwen2 model
the decode steps run :class:`~trapo.rollout.qwen2_decode.Qwen2Decoder`, the same step in fewer tensor ops.
:class:`HFGenerateEngine` wraps ``model.generate`` itself; tests check that the two agree under greedy
decoding.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch

from trapo.rollout.base import RolloutEngine, SamplingParams, is_full_attention
from trapo.rollout.qwen2_decode import qwen2_decoder

try:  # transformers >= 5: a cache is a list of per-layer objects
    from transformers.cache_utils import DynamicCache, DynamicLayer
except ImportError:  # pragma: no cover - older transformers: plain DynamicCache behaviour
    DynamicCache = DynamicLayer = None


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


def sample_next(logits: torch.Tensor, sampling: SamplingParams, generator: torch.Generator | None) -> torch.Tensor:
    """Draw one token per row from ``logits`` (rows, vocab) with temperature, top-k and top-p."""
    if sampling.temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / sampling.temperature
    if sampling.top_k > 0:
        kth = torch.topk(logits, min(sampling.top_k, logits.size(-1)), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if sampling.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        sorted_probs = sorted_logits.softmax(dim=-1)
        drop = sorted_probs.cumsum(dim=-1) - sorted_probs >= sampling.top_p  # the smallest set reaching top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    # Inverse-CDF sampling: one uniform draw per row (torch.multinomial draws one per vocabulary entry, a
    # visible share of a small model's decode step). Tokens of probability 0 have empty intervals.
    cdf = logits.softmax(dim=-1).cumsum(dim=-1)
    # Drawn on the generator's device (a CPU generator may drive a GPU model), then moved.
    device = generator.device if generator is not None else cdf.device
    u = torch.rand((*cdf.shape[:-1], 1), generator=generator, device=device, dtype=cdf.dtype).to(cdf.device)
    token = torch.searchsorted(cdf, u * cdf[..., -1:], right=True).squeeze(-1)
    return token.clamp(max=cdf.size(-1) - 1)


if DynamicLayer is not None:

    class _PreallocatedLayer(DynamicLayer):
        """A full-attention cache layer whose keys and values live in a buffer of ``capacity`` positions,
        allocated on the first write: each update copies only the new positions in, and ``keys``/``values`` are
        views of the filled part (what ``DynamicLayer`` returns, without its per-step ``torch.cat``)."""

        def __init__(self, capacity: int):
            super().__init__()
            self.capacity = capacity

        def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
            self.device = key_states.device
            b, h, _, d = key_states.shape
            self._key_buffer = key_states.new_empty((b, h, self.capacity, d))
            self._value_buffer = value_states.new_empty((b, h, self.capacity, value_states.shape[-1]))
            self.keys, self.values = self._key_buffer[:, :, :0], self._value_buffer[:, :, :0]
            self.is_initialized = True

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            start, stop = self.keys.shape[-2], self.keys.shape[-2] + key_states.shape[-2]
            if stop > self._key_buffer.shape[-2]:  # more than announced: grow (not reached by HFEngine)
                grow = max(stop, 2 * self._key_buffer.shape[-2]) - self._key_buffer.shape[-2]
                self._key_buffer = torch.cat(
                    [
                        self._key_buffer,
                        self._key_buffer.new_empty((*self._key_buffer.shape[:2], grow, self._key_buffer.shape[-1])),
                    ],
                    dim=-2,
                )
                self._value_buffer = torch.cat(
                    [
                        self._value_buffer,
                        self._value_buffer.new_empty(
                            (*self._value_buffer.shape[:2], grow, self._value_buffer.shape[-1])
                        ),
                    ],
                    dim=-2,
                )
            self._key_buffer[:, :, start:stop].copy_(key_states)
            self._value_buffer[:, :, start:stop].copy_(value_states)
            self.keys, self.values = self._key_buffer[:, :, :stop], self._value_buffer[:, :, :stop]
            return self.keys, self.values

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            """Keep the rows ``indices`` (ascending, as the engine drops finished rows, or repeating a row, as
            it expands a shared prefill): their filled positions are gathered to the front of the buffer, in
            place when there are no more rows than before (a new buffer is memory touched for the first time,
            which on CPU cost more than the copy)."""
            if not self.is_initialized:
                return
            length, rows = self.keys.shape[-2], len(indices)
            for name in ("_key_buffer", "_value_buffer"):
                buffer = getattr(self, name)
                # index_select (a copy: safe to write back over the rows it came from) is several times faster
                # than advanced indexing on this strided view
                selected = torch.index_select(buffer[:, :, :length], 0, indices)
                if rows > buffer.shape[0]:
                    buffer = buffer.new_empty((rows, *buffer.shape[1:]))
                buffer = buffer[:rows]
                buffer[:, :, :length] = selected
                setattr(self, name, buffer)
            self.keys, self.values = self._key_buffer[:, :, :length], self._value_buffer[:, :, :length]


def _new_cache(model: torch.nn.Module, capacity: int):
    """A ``DynamicCache`` for ``model`` whose full-attention layers are preallocated for ``capacity`` positions
    (sliding-window and other layer kinds keep their own behaviour); None where that is not available."""
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
            layers[i] = _PreallocatedLayer(capacity)
    return cache


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
    """Batched sampling with a KV cache on a ``transformers`` causal LM.

    Args:
        model: the (training) model; generation runs under ``torch.inference_mode`` in eval mode and the
            model's train/eval mode is restored afterwards.
        eos_token_id: stops a continuation (kept as its last token). ``pad_token_id`` fills left padding.
        max_batch_size: prompts per forward pass; larger inputs are processed in chunks.
    """

    def __init__(self, model: torch.nn.Module, eos_token_id: int, pad_token_id: int, max_batch_size: int = 256):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.model = model
        self.eos_token_id = int(eos_token_id)
        self.pad_token_id = int(pad_token_id)
        self.max_batch_size = max_batch_size

    @classmethod
    def from_tokenizer(cls, model: torch.nn.Module, tokenizer, max_batch_size: int = 256) -> HFEngine:
        """Take EOS and PAD from a ``transformers`` tokenizer (PAD falls back to EOS)."""
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos_token_id; set one before rollouts")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        return cls(model, tokenizer.eos_token_id, pad, max_batch_size)

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int | Sequence[int],
        sampling: SamplingParams | None = None,
        generator: torch.Generator | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[list[int]]:
        """See :meth:`RolloutEngine.generate`. ``progress(finished, tokens)``, when given, is called after every
        decode step with the number of continuations that finished in it and the tokens it sampled."""
        budgets = _budgets(prompts, max_new_tokens)
        sampling = sampling or SamplingParams()
        out: list[list[int]] = []
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                for start in range(0, len(prompts), self.max_batch_size):
                    stop = start + self.max_batch_size
                    out.extend(
                        self._generate_chunk(prompts[start:stop], budgets[start:stop], sampling, generator, progress)
                    )
        finally:
            self.model.train(was_training)
        return out

    def _generate_chunk(  # noqa: C901 (split on the pipelined-rollouts branch, issue 22)
        self,
        prompts: Sequence[Sequence[int]],
        budgets: list[int],
        sampling: SamplingParams,
        generator: torch.Generator | None,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[list[int]]:
        device = next(self.model.parameters()).device
        outputs: list[list[int]] = [[] for _ in prompts]
        live_rows = [i for i, b in enumerate(budgets) if b > 0]  # a budget of 0 is an empty continuation
        if progress is not None and len(live_rows) < len(prompts):
            progress(len(prompts) - len(live_rows), 0)
        if not live_rows:
            return outputs
        steps = max(budgets)
        # Identical prompts (a GRPO group: one prompt, several samples) share one prefill; the cache and the
        # last logits are then copied to every row.
        first: dict[tuple[int, ...], int] = {}
        distinct = [first.setdefault(tuple(prompts[i]), len(first)) for i in live_rows]
        unique = [list(key) for key in first]
        prompt_ids, prompt_mask = _left_pad(unique, self.pad_token_id, device)
        width = prompt_ids.shape[1]
        expand = torch.tensor(distinct, device=device)
        # The attention mask of every position this chunk can reach, filled as decoding goes; the KV cache
        # likewise (_PreallocatedLayer): no per-step concatenation.
        mask = torch.zeros((len(live_rows), width + steps), dtype=torch.bool, device=device)
        mask[:, :width] = prompt_mask[expand].bool()
        mask_4d = _full_attention_sdpa(self.model)
        cache = _new_cache(self.model, width + steps)
        # Decode steps without transformers' per-op overhead where that computes the same (qwen2_decode)
        decoder = qwen2_decoder(self.model, width + steps) if mask_4d and cache is not None else None
        extra = {"logits_to_keep": 1} if _accepts(self.model, "logits_to_keep") else {}
        cache_arg = _cache_argument(self.model)
        positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
        result = self.model(
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            position_ids=positions,
            use_cache=True,
            **{cache_arg: cache},
            **extra,
        )
        if cache is None:
            cache = getattr(result, "past_key_values", None) or getattr(result, "cache", None)
        logits = result.logits[:, -1, :]
        if len(unique) < len(live_rows):
            cache.batch_select_indices(expand)
            logits = logits[expand]
        positions = positions[expand, -1:]
        rows = torch.tensor(live_rows, device=device)  # original row of each batch row
        budget = torch.tensor([budgets[i] for i in live_rows], device=device)
        live = torch.ones(len(live_rows), dtype=torch.bool, device=device)
        length = width  # filled positions of mask and cache
        ids: torch.Tensor | None = None  # the tokens the next decode step feeds in
        for step in range(steps):
            if step > 0 and decoder is not None:
                logits = decoder.step(ids, positions, mask[:, None, None, :length], cache)
            elif step > 0:
                step_mask = mask[:, None, None, :length] if mask_4d else mask[:, :length]
                result = self.model(
                    input_ids=ids,
                    attention_mask=step_mask,
                    position_ids=positions,
                    use_cache=True,
                    **{cache_arg: cache},
                    **extra,
                )
                logits = result.logits[:, -1, :]
            tokens = sample_next(logits, sampling, generator)
            done_rows, done_tokens = rows[live].tolist(), tokens[live].tolist()
            for row, token in zip(done_rows, done_tokens, strict=True):
                outputs[row].append(token)
            still = live & (tokens != self.eos_token_id) & (budget > step + 1)
            if progress is not None:
                progress(int((live & ~still).sum()), len(done_tokens))
            live = still
            if not bool(live.any()):
                break
            ids = torch.where(live, tokens, self.pad_token_id).unsqueeze(-1)
            mask[:, length] = True
            length += 1
            positions = positions + 1
            # Drop finished rows (and their KV cache) once a quarter of the batch is done: rows stop at
            # different lengths, and computing finished rows is wasted work.
            if (~live).sum() * 4 >= live.numel():
                keep = live.nonzero().flatten()
                rows, ids, mask, positions = rows[keep], ids[keep], mask[keep], positions[keep]
                budget, live = budget[keep], live[keep]
                cache.batch_select_indices(keep)
        return outputs


def _accepts(model: torch.nn.Module, name: str) -> bool:
    """Whether ``model``'s forward (that of the model a peft wrapper holds) takes ``name``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return name in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False


class HFGenerateEngine(RolloutEngine):
    """``model.generate`` behind the engine interface (uses the global RNG; ``generator`` seeds it)."""

    def __init__(self, model: torch.nn.Module, eos_token_id: int, pad_token_id: int):
        self.model = model
        self.eos_token_id = int(eos_token_id)
        self.pad_token_id = int(pad_token_id)

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int | Sequence[int],
        sampling: SamplingParams | None = None,
        generator: torch.Generator | None = None,
    ) -> list[list[int]]:
        budgets = _budgets(prompts, max_new_tokens)
        sampling = sampling or SamplingParams()
        device = next(self.model.parameters()).device
        ids, mask = _left_pad(prompts, self.pad_token_id, device)
        if generator is not None:
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        kwargs: dict = {"do_sample": False}
        if sampling.temperature > 0:
            kwargs = {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p}
            kwargs["top_k"] = sampling.top_k
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                seqs = self.model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    max_new_tokens=max(max(budgets), 1),
                    eos_token_id=self.eos_token_id,
                    pad_token_id=self.pad_token_id,
                    **kwargs,
                )
        finally:
            self.model.train(was_training)
        out = []
        for row, budget in enumerate(budgets):
            new = seqs[row, ids.shape[1] :].tolist()[:budget]
            if self.eos_token_id in new:
                new = new[: new.index(self.eos_token_id) + 1]
            out.append(new)
        return out
