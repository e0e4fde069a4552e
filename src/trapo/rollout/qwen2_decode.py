"""One decode step of a ``transformers`` Qwen2 model in plain tensor ops, for :class:`~trapo.rollout.HFEngine`.

A decode step feeds one token per row. On a small model on CPU its time is mostly the fixed cost of the
step, not arithmetic: transformers' modules run about 55 tensor ops per layer (RMSNorm in six, rotary
embeddings in fourteen, q/k/v and gate/up as separate products) plus the Python of the modules and their
wrappers. :class:`Qwen2Decoder` computes the same step from the same weights in about 20 ops per layer: q/k/v
and gate/up each as one product of concatenated weights (concatenated once per generation call, as the
weights are fixed while it runs), ``rms_norm`` as one op, the rotary embedding of queries and keys at once
from a table of the model's own cos/sin. Prefill still runs the model itself. Used only where it computes
what the model does (:func:`qwen2_decoder`); tests check the logits against the model's.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from trapo.rollout.base import is_full_attention


def qwen2_decoder(model: torch.nn.Module, positions: int, dtype: torch.dtype | None = None) -> Qwen2Decoder | None:
    """A :class:`Qwen2Decoder` of ``model`` for positions below ``positions``, or None unless ``model`` is a
    plain float32 ``Qwen2ForCausalLM`` whose layers this step reproduces: full attention through sdpa, default
    rotary embeddings, SiLU, plain linear layers (no LoRA or quantised ones) with q/k/v biases all present or
    all absent, no hooks and no patched ``forward`` (e.g. autocast). With ``dtype`` (the engine's autocast
    dtype, bf16) the matrix weights are copied in that dtype, the step is run under the engine's autocast, and
    accelerate's autocast patch of ``forward`` is accepted (it computes the same)."""
    try:
        from transformers import Qwen2ForCausalLM
    except ImportError:  # pragma: no cover - transformers without Qwen2
        return None
    patched = "forward" in vars(model) and not (dtype is not None and "_original_forward" in vars(model))
    if type(model) is not Qwen2ForCausalLM or patched:
        return None
    config = model.config
    rope = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
    if (
        getattr(config, "_attn_implementation", None) != "sdpa"
        or config.hidden_act != "silu"
        or rope != "default"
        or not is_full_attention(model)
    ):
        return None
    linear = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    for layer in model.model.layers:
        parts = [getattr(layer.self_attn, n, None) for n in linear[:4]] + [
            getattr(layer.mlp, n, None) for n in linear[4:]
        ]
        if any(type(p) is not torch.nn.Linear for p in parts) or len({p.bias is None for p in parts[:3]}) > 1:
            return None
    if any(m._forward_hooks or m._forward_pre_hooks for m in model.modules()):
        return None
    if any(p.dtype != torch.float32 for p in model.parameters()):
        return None
    return Qwen2Decoder(model, positions, dtype)


class DecoderLayerWeights(NamedTuple):
    """One decoder layer's weights as the decode step uses them (q/k/v and gate/up concatenated)."""

    input_norm: torch.Tensor
    qkv: torch.Tensor
    qkv_bias: torch.Tensor | None
    out: torch.Tensor
    post_attention_norm: torch.Tensor
    gate_up: torch.Tensor
    down: torch.Tensor
    scale: float


class Qwen2Decoder:
    """The decode step of a Qwen2 model (see the module docstring); built from its current weights."""

    def __init__(self, model: torch.nn.Module, positions: int, dtype: torch.dtype | None = None):
        config, base = model.config, model.model
        self.dtype = dtype
        self.hidden = config.hidden_size
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.eps = config.rms_norm_eps
        self.embed, self.norm = base.embed_tokens.weight, base.norm.weight
        self.lm_head = self._cast(model.lm_head.weight)
        self.layers = [self._layer(layer) for layer in base.layers]
        self.rotary_emb, self.cos = base.rotary_emb, None
        self.reach(positions)

    def reach(self, positions: int) -> None:
        """Make the rotary table cover positions below ``positions`` (a continuous batch takes new rows)."""
        if self.cos is not None and self.cos.shape[0] >= positions:
            return
        steps = torch.arange(positions, device=self.embed.device)[None]
        cos, sin = self.rotary_emb(self.embed[:1][None], steps)  # the model's own cos/sin, a row per position
        self.cos, self.sin = cos[0], sin[0]

    def _cast(self, weight: torch.Tensor | None) -> torch.Tensor | None:
        """A matrix weight in the decoder's dtype (a copy, made once per generation call), or as it is."""
        return weight if weight is None or self.dtype is None else weight.to(self.dtype)

    def _layer(self, layer: torch.nn.Module) -> DecoderLayerWeights:
        attn, mlp = layer.self_attn, layer.mlp
        qkv = (attn.q_proj, attn.k_proj, attn.v_proj)
        return DecoderLayerWeights(
            input_norm=layer.input_layernorm.weight,
            qkv=self._cast(torch.cat([p.weight for p in qkv])),
            qkv_bias=self._cast(torch.cat([p.bias for p in qkv])) if attn.q_proj.bias is not None else None,
            out=self._cast(attn.o_proj.weight),
            post_attention_norm=layer.post_attention_layernorm.weight,
            gate_up=self._cast(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])),
            down=self._cast(mlp.down_proj.weight),
            scale=attn.scaling,
        )

    def _rms_norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (self.hidden,), weight, self.eps)

    def step(self, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, cache) -> torch.Tensor:
        """Logits ``(rows, vocab)`` for one new token per row: ``ids`` and ``positions`` ``(rows, 1)``, ``mask``
        the ``(rows, 1, 1, keys)`` boolean padding mask over the cached positions and the new one; ``cache``:
        the model's ``DynamicCache`` (each layer's ``update`` appends the new keys and values)."""
        rows, heads, kv_heads, dim = ids.shape[0], self.heads, self.kv_heads, self.head_dim
        cos, sin = self.cos[positions].unsqueeze(1), self.sin[positions].unsqueeze(1)  # (rows, 1, 1, dim)
        half = dim // 2
        h = F.embedding(ids, self.embed)
        for w, layer in zip(self.layers, cache.layers, strict=True):
            qkv = F.linear(self._rms_norm(h, w.input_norm), w.qkv, w.qkv_bias).view(rows, 1, heads + 2 * kv_heads, dim)
            qkv = qkv.transpose(1, 2)
            qk = qkv[:, : heads + kv_heads]  # queries and keys get the rotary embedding together
            qk = qk * cos + torch.cat([-qk[..., half:], qk[..., :half]], dim=-1) * sin
            keys, values = layer.update(qk[:, heads:], qkv[:, heads + kv_heads :])
            out = F.scaled_dot_product_attention(
                qk[:, :heads], keys, values, attn_mask=mask, scale=w.scale, enable_gqa=heads != kv_heads
            )
            h = h + F.linear(out.transpose(1, 2).reshape(rows, 1, heads * dim), w.out)
            gate, up = F.linear(self._rms_norm(h, w.post_attention_norm), w.gate_up).chunk(2, dim=-1)
            h = h + F.linear(F.silu(gate) * up, w.down)
        return F.linear(self._rms_norm(h, self.norm), self.lm_head)[:, -1]
