"""Drawing the next token, and the random stream of each sampled row.

:func:`sample_next` draws one token per row by inverse-CDF sampling: one uniform number per row. Where the
uniforms come from decides what is reproducible. A shared ``torch.Generator`` gives reproducible batches (the
same batch and generator state give the same samples) but a row's samples depend on which rows it was batched
with. A *stream per row* (:func:`stream_uniforms`) gives a row's samples as a pure function of its seed and its
token index: the same prompt and seed give the same continuation whichever rows it shares a forward pass with,
and whenever it joined the running batch. That is what lets a continuous-batching engine sample exactly what a
batch-at-a-time engine samples (vLLM's per-request ``seed`` plays the same role).

The stream is splitmix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators", OOPSLA
2014): value ``t`` of the stream with seed ``s`` is ``mix64(s + (t + 1) * GOLDEN)``, computed for every row at
once in int64 tensor arithmetic (two's-complement wrap-around; tests check it against the plain-integer
definition, :func:`mix64`).
"""

from __future__ import annotations

import torch

from trapo.rollout.base import SamplingParams

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1, _MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def _signed(value: int) -> int:
    """A 64-bit pattern as the int64 torch stores it."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


def mix64(value: int) -> int:
    """splitmix64's finaliser on a plain integer (the reference :func:`stream_uniforms` is tested against)."""
    z = value & _MASK64
    z = ((z ^ (z >> 30)) * _MIX1) & _MASK64
    z = ((z ^ (z >> 27)) * _MIX2) & _MASK64
    return z ^ (z >> 31)


def row_seed(*parts: int) -> int:
    """A 63-bit seed from integers (e.g. a batch seed, a prompt, a micro-group and a member): each part is
    folded in with :func:`mix64`, so nearby inputs give unrelated seeds."""
    h = 0
    for part in parts:
        h = mix64(h ^ mix64(int(part) + _GOLDEN))
    return h >> 1


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 values (torch's ``>>`` copies the sign bit)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _mix64_tensor(z: torch.Tensor) -> torch.Tensor:
    z = (z ^ _shift_right(z, 30)) * _signed(_MIX1)
    z = (z ^ _shift_right(z, 27)) * _signed(_MIX2)
    return z ^ _shift_right(z, 31)


def stream_uniforms(seeds: torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
    """Uniform numbers in [0, 1), float64: value ``counters[i]`` of the stream seeded ``seeds[i]`` (int64)."""
    z = seeds + (counters + 1) * _signed(_GOLDEN)
    return _shift_right(_mix64_tensor(z), 11).double() * 2.0**-53


def sample_next(
    logits: torch.Tensor,
    sampling: SamplingParams,
    generator: torch.Generator | None,
    uniforms: torch.Tensor | None = None,
) -> torch.Tensor:
    """Draw one token per row from ``logits`` (rows, vocab) with temperature, top-k and top-p; ``uniforms``
    (rows,), when given, are the rows' random numbers (:func:`stream_uniforms`) instead of ``generator``'s."""
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
    if uniforms is not None:
        u = uniforms.to(device=cdf.device, dtype=cdf.dtype).unsqueeze(-1)
    else:  # drawn on the generator's device (a CPU generator may drive a GPU model), then moved
        device = generator.device if generator is not None else cdf.device
        u = torch.rand((*cdf.shape[:-1], 1), generator=generator, device=device, dtype=cdf.dtype).to(cdf.device)
    token = torch.searchsorted(cdf, u * cdf[..., -1:], right=True).squeeze(-1)
    return token.clamp(max=cdf.size(-1) - 1)
