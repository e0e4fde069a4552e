"""``model.generate`` behind the engine interface: the reference :class:`~trapo.rollout.HFEngine` is tested against."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from trapo.rollout.base import RolloutEngine, SamplingParams
from trapo.rollout.hf import _budgets, _left_pad
from trapo.rollout.sampling import row_seed


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
        seeds: Sequence[int] | None = None,
    ) -> list[list[int]]:
        """``seeds`` seed the global RNG once for the batch (reproducible, but not a stream per row)."""
        budgets = _budgets(prompts, max_new_tokens)
        sampling = sampling or SamplingParams()
        device = next(self.model.parameters()).device
        ids, mask = _left_pad(prompts, self.pad_token_id, device)
        if seeds is not None:
            torch.manual_seed(row_seed(*seeds))
        elif generator is not None:
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
