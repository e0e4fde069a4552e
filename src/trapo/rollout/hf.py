"""Rollout engines on a ``transformers`` causal LM, sharing the training model's weights.

:class:`HFEngine` is the default: a batched sampling loop over the model's forward pass with a KV cache
and left padding. It supports what guided rollouts need and ``model.generate`` does not give directly:
a token budget per prompt (a guided trajectory's continuation may be shorter than an unguided one's) and
an explicit ``torch.Generator``, so every sample has its own reproducible random stream.
:class:`HFGenerateEngine` wraps ``model.generate`` itself; tests check that the two agree under greedy
decoding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from trapo.rollout.base import RolloutEngine, SamplingParams


def _budgets(prompts: Sequence[Sequence[int]], max_new_tokens: int | Sequence[int]) -> list[int]:
    if isinstance(max_new_tokens, int):
        budgets = [max_new_tokens] * len(prompts)
    else:
        budgets = [int(b) for b in max_new_tokens]
        if len(budgets) != len(prompts):
            raise ValueError(
                f"max_new_tokens has {len(budgets)} entries but there are {len(prompts)} prompts"
            )
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
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cum - sorted_logits.softmax(dim=-1) >= sampling.top_p  # keep the smallest set reaching top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


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
    ) -> list[list[int]]:
        budgets = _budgets(prompts, max_new_tokens)
        sampling = sampling or SamplingParams()
        out: list[list[int]] = []
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                for start in range(0, len(prompts), self.max_batch_size):
                    stop = start + self.max_batch_size
                    out.extend(self._generate_chunk(prompts[start:stop], budgets[start:stop], sampling, generator))
        finally:
            self.model.train(was_training)
        return out

    def _generate_chunk(
        self,
        prompts: Sequence[Sequence[int]],
        budgets: list[int],
        sampling: SamplingParams,
        generator: torch.Generator | None,
    ) -> list[list[int]]:
        device = next(self.model.parameters()).device
        ids, mask = _left_pad(prompts, self.pad_token_id, device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        budget = torch.tensor(budgets, device=device)
        outputs: list[list[int]] = [[] for _ in prompts]
        rows = torch.arange(len(prompts), device=device)  # original row of each live batch row
        live = budget > 0
        past = None
        for step in range(max(budgets)):
            # Drop finished rows (and their KV cache) once a quarter of the batch is done: rows stop at
            # different lengths, and computing finished rows is wasted work.
            if not bool(live.all()) and (step == 0 or (~live).sum() * 4 >= live.numel()):
                keep = live.nonzero().flatten()
                rows, ids, mask, positions = rows[keep], ids[keep], mask[keep], positions[keep]
                budget, live = budget[keep], live[keep]
                if past is not None:
                    past.batch_select_indices(keep)
                if rows.numel() == 0:
                    break
            result = self.model(
                input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=past, use_cache=True
            )
            past = result.past_key_values
            tokens = sample_next(result.logits[:, -1, :], sampling, generator)
            for row, token in zip(rows[live].tolist(), tokens[live].tolist(), strict=True):
                outputs[row].append(token)
            live = live & (tokens != self.eos_token_id) & (budget > step + 1)
            if not bool(live.any()):
                break
            ids = torch.where(live, tokens, self.pad_token_id).unsqueeze(-1)
            mask = torch.cat([mask, torch.ones_like(ids)], dim=-1)
            positions = positions[:, -1:] + 1
        return outputs


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
                    input_ids=ids, attention_mask=mask, max_new_tokens=max(max(budgets), 1),
                    eos_token_id=self.eos_token_id, pad_token_id=self.pad_token_id, **kwargs,
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
