"""The update's forward with each distinct prompt computed once, not once per trajectory.

The trajectories of a group share their prompt, and in one padded batch every one of them carries it: a
GRPO step of 8 prompts x 8 completions computes each prompt 8 times, forward and backward. Here the distinct
prompts go through the model once, and their keys and values (the KV cache) serve every trajectory of the
prompt; each mini-batch row then holds only ``last prompt token + response``. The last prompt token is fed
again with the response because its logits predict the first response token; the cache holds the tokens
before it (the prompt's *head*).

Gradients reach the prompt's tokens through the cache. Mini-batches are backpropagated one at a time while
the prompt pass is shared by all of them, so they read a detached copy of the cache (:meth:`PromptCache.detached`): each
mini-batch reads a detached copy that requires grad and accumulates its gradient there, and once every
mini-batch is done :meth:`PromptCache.backward` sends the summed gradient through the prompt pass, once.
The loss and the gradient are those of the full sequences (tests/library/trainer/test_shared_prompts.py);
only the floating-point order of the sums differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from trapo.rollout.base import distinct_sequences, is_full_attention
from trapo.rollout.hf import DynamicCache, _accepts, _cache_argument, _left_pad
from trapo.trainer.rollouts import Trajectory


def supports_shared_prompts(model: torch.nn.Module) -> bool:
    """Whether ``model`` can take the prompts' KV cache as ``past_key_values`` in training: a transformers
    model whose layers are all full attention (a sliding window would drop prompt positions), without
    gradient checkpointing (which turns the cache off in training)."""
    if DynamicCache is None or getattr(model, "config", None) is None:
        return False
    return not _checkpointing(model) and is_full_attention(model)


def distinct_prompts(trajectories: Sequence[Trajectory]) -> tuple[list[list[int]], list[int]]:
    """The distinct prompts of ``trajectories`` (first-seen order) and each trajectory's index among them."""
    return distinct_sequences([t.prompt_ids for t in trajectories])


@dataclass
class PromptCache:
    """The keys and values of every distinct prompt's head (all its tokens but the last), left-padded.

    ``layers``: per layer ``(keys, values)``, each ``(prompts, heads, width, head_dim)``; ``mask``:
    ``(prompts, width)``, 1 on real tokens; ``lengths``: ``(prompts,)``, the real tokens of each head (the
    position of the prompt's last token).
    """

    layers: list[tuple[torch.Tensor, torch.Tensor]]
    mask: torch.Tensor
    lengths: torch.Tensor

    @classmethod
    def encode(
        cls, model: torch.nn.Module, prompts: Sequence[Sequence[int]], pad_id: int, device: torch.device
    ) -> PromptCache:
        """One forward pass over the heads of ``prompts`` (with the gradient graph unless under no_grad)."""
        heads = [list(p[:-1]) for p in prompts]
        width = max(map(len, heads))
        if width == 0:  # one-token prompts: nothing to cache
            empty = torch.zeros((len(prompts), 0), dtype=torch.long, device=device)
            return cls([], empty, torch.zeros(len(prompts), dtype=torch.long, device=device))
        ids, mask = _left_pad(heads, pad_id, device)  # a one-token prompt's empty head: padding only
        cache = DynamicCache(config=model.config)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        extra = {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}
        model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **{_cache_argument(model): cache},
            **extra,
        )
        layers = [(layer.keys, layer.values) for layer in cache.layers]
        return cls(layers, mask, mask.sum(-1))

    def detached(self) -> PromptCache:
        """A copy whose keys and values are leaves that require grad: mini-batches accumulate their gradient
        there, and :meth:`backward` carries it into the prompt pass."""
        leaves = [tuple(t.detach().requires_grad_(t.requires_grad) for t in layer) for layer in self.layers]
        return PromptCache(leaves, self.mask, self.lengths)

    def backward(self, detached: PromptCache) -> None:
        """Backpropagate the gradient the mini-batches left on ``detached``'s leaves through this cache's pass (keys
        and values that need no gradient, e.g. from frozen layers under LoRA, have none)."""
        pairs = [
            (t, leaf.grad)
            for layer, leaves in zip(self.layers, detached.layers, strict=True)
            for t, leaf in zip(layer, leaves, strict=True)
            if leaf.grad is not None
        ]
        if pairs:
            torch.autograd.backward([t for t, _ in pairs], [g for _, g in pairs])

    def logits(
        self, model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompts: torch.Tensor
    ) -> torch.Tensor:
        """The model's logits on right-padded ``last prompt token + response`` rows, each row continuing the
        cached head of prompt ``prompts[row]``; ``(rows, T, vocab)`` as on the full sequences' last T positions."""
        if not self.layers:
            return model(input_ids=input_ids, attention_mask=attention_mask).logits
        cache = DynamicCache(config=model.config)
        for i, (keys, values) in enumerate(self.layers):
            cache.update(keys[prompts], values[prompts], i)
        mask = torch.cat([self.mask[prompts], attention_mask], dim=1)
        steps = torch.arange(input_ids.shape[1], device=input_ids.device)
        positions = self.lengths[prompts, None] + steps
        return model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **{_cache_argument(model): cache},
        ).logits


def _checkpointing(model: torch.nn.Module) -> bool:
    """Whether activation (gradient) checkpointing is on (transformers >= 5.20 renamed the flag)."""
    if hasattr(model, "is_activation_checkpointing"):
        return bool(model.is_activation_checkpointing)
    return bool(getattr(model, "is_gradient_checkpointing", False))
