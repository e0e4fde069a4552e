"""Hand-worked checks of the per-token losses in trapo.losses (TRAPO.md §1, §3)."""

from __future__ import annotations

import math

import pytest
import torch

from trapo.losses import (
    aggregate,
    entropy_from_logits,
    luffy_loss,
    policy_gradient_loss,
    sft_loss,
    token_logprobs,
    trsft_loss,
)

ln = math.log


def _lp(probs: list[list[float]]) -> torch.Tensor:
    """A leaf tensor of log-probabilities (float64 so hand values match to 1e-12)."""
    return torch.tensor(probs, dtype=torch.float64).log().requires_grad_()


# ----------------------------------------------------------------------------------------------
# aggregate
# ----------------------------------------------------------------------------------------------

X = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
M = [[1, 1, 0], [1, 0, 0]]


@pytest.mark.parametrize(
    ("normalization", "constant", "expected"),
    [
        ("token_mean", None, 7 / 3),  # (1 + 2 + 4) / 3 tokens
        ("seq_mean_token_mean", None, 2.75),  # mean(mean(1, 2), mean(4)) = mean(1.5, 4)
        ("constant", 4.0, 1.75),  # (1 + 2 + 4) / 4
        ("token_mean", 4.0, 7 / 3),  # constant ignored by the other modes
    ],
)
def test_aggregate_hand_values(normalization, constant, expected):
    x = torch.tensor(X, dtype=torch.float64)
    for mask in (torch.tensor(M, dtype=torch.bool), torch.tensor(M, dtype=torch.float32)):
        out = aggregate(x, mask, normalization, constant)
        assert out.item() == pytest.approx(expected, abs=1e-12)


def test_aggregate_seq_mean_skips_empty_sequences():
    x = torch.tensor(X)
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]], dtype=torch.bool)
    # only the first sequence has tokens: mean(1, 2) = 1.5 (not (1.5 + 0) / 2)
    assert aggregate(x, mask, "seq_mean_token_mean").item() == pytest.approx(1.5)


def test_aggregate_accepts_integer_01_mask():
    x = torch.tensor(X)
    assert aggregate(x, torch.tensor(M), "token_mean").item() == pytest.approx(7 / 3)


@pytest.mark.parametrize("normalization", ["token_mean", "seq_mean_token_mean", "constant"])
def test_aggregate_masked_positions_ignored_even_if_nonfinite(normalization):
    x = torch.tensor([[1.0, float("nan"), 3.0], [float("-inf"), 5.0, float("inf")]], requires_grad=True)
    mask = torch.tensor([[1, 0, 1], [0, 1, 0]], dtype=torch.bool)
    out = aggregate(x, mask, normalization, constant=2.0)
    out.backward()
    assert torch.isfinite(out)
    assert x.grad is not None
    assert torch.all(x.grad[~mask] == 0)
    assert torch.all(x.grad[mask] > 0)


@pytest.mark.parametrize("normalization", ["token_mean", "seq_mean_token_mean", "constant"])
def test_aggregate_empty_mask_is_zero_with_zero_grad(normalization):
    x = torch.randn(2, 3, requires_grad=True)
    out = aggregate(x, torch.zeros(2, 3, dtype=torch.bool), normalization, constant=5.0)
    out.backward()
    assert out.item() == 0.0
    assert torch.equal(x.grad, torch.zeros(2, 3))


def test_aggregate_bad_inputs():
    x = torch.ones(2, 3)
    with pytest.raises(ValueError, match="mask"):
        aggregate(x, torch.tensor([[1, 2, 0], [0, 0, 0]]))
    with pytest.raises(ValueError, match="mask"):
        aggregate(x, torch.full((2, 3), 0.5))
    with pytest.raises(ValueError, match=r"mask.*\(2, 4\).*\(2, 3\)"):
        aggregate(x, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        aggregate(x, torch.ones(3, dtype=torch.bool))  # would broadcast; must not
    with pytest.raises(ValueError, match="per_token"):
        aggregate(torch.ones(6), torch.ones(6, dtype=torch.bool))
    with pytest.raises(ValueError, match="normalization"):
        aggregate(x, torch.ones(2, 3, dtype=torch.bool), "sum")  # type: ignore[arg-type]
    for bad in (None, 0, -1.0):
        with pytest.raises(ValueError, match="constant"):
            aggregate(x, torch.ones(2, 3, dtype=torch.bool), "constant", bad)


# ----------------------------------------------------------------------------------------------
# token_logprobs, entropy
# ----------------------------------------------------------------------------------------------


def test_token_logprobs_matches_log_softmax():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11, dtype=torch.float64)
    labels = torch.randint(0, 11, (2, 5))
    expected = torch.log_softmax(logits, -1).gather(-1, labels[..., None]).squeeze(-1)
    assert torch.allclose(token_logprobs(logits, labels), expected, atol=1e-12)
    # bf16 path: float32 output, close to the float64 reference
    out16 = token_logprobs(logits.to(torch.bfloat16), labels)
    assert out16.dtype == torch.float32
    assert torch.allclose(out16.double(), expected, atol=0.05)


def test_token_logprobs_hand_value_and_grad():
    # logits [0, ln 3] -> probs [1/4, 3/4]; label 1 -> ln(3/4)
    logits = torch.tensor([[[0.0, ln(3)]]], dtype=torch.float64, requires_grad=True)
    out = token_logprobs(logits, torch.tensor([[1]]))
    assert out.item() == pytest.approx(ln(0.75))
    out.sum().backward()
    # d log softmax_1 / d logits = onehot(1) - probs = [-1/4, 1/4]
    assert torch.allclose(logits.grad, torch.tensor([[[-0.25, 0.25]]], dtype=torch.float64))


def test_token_logprobs_bad_inputs():
    logits = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match="labels"):
        token_logprobs(logits, torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        token_logprobs(logits, torch.full((2, 3), -100))
    with pytest.raises(ValueError, match="labels"):
        token_logprobs(logits, torch.full((2, 3), 4))
    with pytest.raises(ValueError, match="labels"):
        token_logprobs(logits, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="logits"):
        token_logprobs(torch.zeros(3, 4), torch.zeros(3, dtype=torch.long))


def test_entropy_from_logits():
    # uniform over 8 -> ln 8; probs [1/4, 3/4] -> -(1/4 ln 1/4 + 3/4 ln 3/4) = 0.562335...
    logits = torch.zeros(1, 2, 8, dtype=torch.float64)
    logits[0, 1, :2] = torch.tensor([0.0, ln(3)])
    logits[0, 1, 2:] = -1e9
    h = entropy_from_logits(logits)
    assert h.shape == (1, 2)
    assert h[0, 0].item() == pytest.approx(ln(8))
    assert h[0, 1].item() == pytest.approx(-(0.25 * ln(0.25) + 0.75 * ln(0.75)))
    assert entropy_from_logits(logits.float().to(torch.bfloat16)).dtype == torch.float32
    with pytest.raises(ValueError, match="logits"):
        entropy_from_logits(torch.zeros(2, 8))


# ----------------------------------------------------------------------------------------------
# SFT and TrSFT
# ----------------------------------------------------------------------------------------------


def test_sft_loss_hand_value():
    lp = _lp([[0.5, 0.25]])
    loss = sft_loss(lp, torch.ones(1, 2, dtype=torch.bool))
    # (ln 2 + ln 4) / 2 = 1.5 ln 2
    assert loss.item() == pytest.approx(1.5 * ln(2))
    loss.backward()
    assert torch.allclose(lp.grad, torch.tensor([[-0.5, -0.5]], dtype=torch.float64))


def test_trsft_hand_values_and_grad_on_logprobs():
    # p = [0.5, 0.05], alpha = 0.1: per token -p/max(p, a) = [-0.5/0.5, -0.05/0.1] = [-1, -0.5]
    lp = _lp([[0.5, 0.05]])
    loss = trsft_loss(lp, torch.ones(1, 2, dtype=torch.bool), alpha=0.1)
    assert loss.item() == pytest.approx(-0.75)  # token mean of [-1, -0.5]
    loss.backward()
    # d/dlogp (-p/c) = -p/c: [-1, -0.5], token mean -> [-0.5, -0.25] = -min(1, p/a) / 2
    assert torch.allclose(lp.grad, torch.tensor([[-0.5, -0.25]], dtype=torch.float64))


def test_trsft_gradient_is_weighted_sft_gradient_on_logits():
    """∇ TrSFT = min(1, p/α) · ∇ SFT per token, checked with autograd through the logits."""
    torch.manual_seed(0)
    B, T, V, alpha = 3, 4, 6, 0.3
    logits0 = 2.0 * torch.randn(B, T, V, dtype=torch.float64)
    labels = torch.randint(0, V, (B, T))
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[2, 3] = False

    logits = logits0.clone().requires_grad_()
    lp = token_logprobs(logits, labels)
    trsft_loss(lp, mask, alpha=alpha, normalization="constant", constant=7.0).backward()
    g_tr = logits.grad

    w = (token_logprobs(logits0, labels).exp() / alpha).clamp(max=1.0)  # the trust-region weight min(1, p/α)
    expected = torch.zeros_like(logits0)
    for b in range(B):
        for t in range(T):
            if not mask[b, t]:
                continue
            leaf = logits0[b, t].clone().requires_grad_()
            (-torch.log_softmax(leaf, -1)[labels[b, t]]).backward()
            expected[b, t] = w[b, t] * leaf.grad / 7.0
    assert (w[mask] == 1).any() and (w[mask] < 1).any()  # both sides of the trust region are exercised
    assert torch.allclose(g_tr, expected, atol=1e-12)
    assert torch.all(g_tr[2, 3] == 0)


def test_trsft_equals_sft_inside_trust_region():
    lp = _lp([[0.9, 0.4, 0.2]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    g_sft = torch.autograd.grad(sft_loss(lp, mask), lp)[0]
    g_tr = torch.autograd.grad(trsft_loss(lp, mask, alpha=0.1), lp)[0]
    assert torch.allclose(g_sft, g_tr)
    # alpha = 1 weights every token by p: grad on logp = -p / 3
    g_one = torch.autograd.grad(trsft_loss(lp, mask, alpha=1.0), lp)[0]
    assert torch.allclose(g_one, -torch.tensor([[0.9, 0.4, 0.2]], dtype=torch.float64) / 3)


@pytest.mark.parametrize("alpha", [0.0, -0.1, 1.5, float("nan"), True, "0.1"])
def test_trsft_bad_alpha(alpha):
    lp = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="alpha"):
        trsft_loss(lp, torch.ones(1, 2, dtype=torch.bool), alpha=alpha)


# ----------------------------------------------------------------------------------------------
# policy gradient
# ----------------------------------------------------------------------------------------------


def test_policy_gradient_clipped_hand_values():
    # token 0: ratio 0.5/0.4 = 1.25; token 1: ratio 0.2/0.4 = 0.5; eps 0.2 -> clip range [0.8, 1.2]
    lp = _lp([[0.5, 0.2], [0.5, 0.2]])
    old = torch.tensor([[0.4, 0.4], [0.4, 0.4]], dtype=torch.float64).log()
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    mask = torch.ones(2, 2, dtype=torch.bool)
    loss = policy_gradient_loss(lp, old, adv, mask, normalization="constant", constant=1.0)
    # A=+1: -min(1.25, 1.2) = -1.2 ; -min(0.5, 0.8) = -0.5
    # A=-1: -min(-1.25, -1.2) = 1.25 ; -min(-0.5, -0.8) = 0.8
    assert loss.item() == pytest.approx(-1.2 - 0.5 + 1.25 + 0.8)
    loss.backward()
    # clipped (A=+1, r=1.25) and (A=-1, r=0.5) get no gradient; others get -A * ratio
    assert torch.allclose(lp.grad, torch.tensor([[0.0, -0.5], [1.25, 0.0]], dtype=torch.float64))


def test_policy_gradient_no_clipping_and_one_sided():
    lp = _lp([[0.5, 0.2]])
    old = torch.tensor([[0.4, 0.4]], dtype=torch.float64).log()
    mask = torch.ones(1, 2, dtype=torch.bool)
    adv = torch.tensor([1.0], dtype=torch.float64)
    none = policy_gradient_loss(lp, old, adv, mask, clip_eps_low=None, clip_eps_high=None)
    assert none.item() == pytest.approx(-(1.25 + 0.5) / 2)
    # only the upper side: 1.25 -> 1.2, 0.5 stays
    high = policy_gradient_loss(lp, old, adv, mask, clip_eps_low=None, clip_eps_high=0.2)
    assert high.item() == pytest.approx(-(1.2 + 0.5) / 2)
    # decoupled (DAPO-style) clip-higher: 1.25 < 1.28 not clipped
    dapo = policy_gradient_loss(lp, old, adv, mask, clip_eps_low=0.2, clip_eps_high=0.28)
    assert dapo.item() == pytest.approx(-(1.25 + 0.5) / 2)


def test_policy_gradient_on_policy_equals_reinforce():
    torch.manual_seed(1)
    B, T, V = 3, 5, 7
    logits0 = torch.randn(B, T, V, dtype=torch.float64)
    labels = torch.randint(0, V, (B, T))
    adv = torch.tensor([0.5, -1.5, 2.0], dtype=torch.float64)
    mask = torch.rand(B, T) > 0.3

    logits = logits0.clone().requires_grad_()
    lp = token_logprobs(logits, labels)
    loss = policy_gradient_loss(lp, lp.detach(), adv, mask, normalization="seq_mean_token_mean")
    loss.backward()

    ref_logits = logits0.clone().requires_grad_()
    ref_lp = token_logprobs(ref_logits, labels)
    reinforce = aggregate(-adv[:, None] * ref_lp, mask, "seq_mean_token_mean")
    reinforce.backward()
    # value is -mean(A) over sequences (ratio 1), gradient is REINFORCE's
    assert torch.allclose(logits.grad, ref_logits.grad, atol=1e-12)
    assert loss.item() == pytest.approx(-adv[mask.any(1)].mean().item())


def test_policy_gradient_token_level_advantages_and_errors():
    lp = _lp([[0.5, 0.5]])
    old = lp.detach()
    mask = torch.ones(1, 2, dtype=torch.bool)
    loss = policy_gradient_loss(lp, old, torch.tensor([[2.0, -4.0]], dtype=torch.float64), mask)
    assert loss.item() == pytest.approx(-(2.0 - 4.0) / 2)
    with pytest.raises(ValueError, match="advantages"):
        policy_gradient_loss(lp, old, torch.ones(2), mask)
    with pytest.raises(ValueError, match="advantages"):
        policy_gradient_loss(lp, old, torch.ones(1, 3), mask)
    with pytest.raises(ValueError, match="old_logprobs"):
        policy_gradient_loss(lp, torch.zeros(1, 3), torch.ones(1), mask)
    with pytest.raises(ValueError, match="clip_eps_low"):
        policy_gradient_loss(lp, old, torch.ones(1), mask, clip_eps_low=-0.1)
    with pytest.raises(ValueError, match="clip_eps_high"):
        policy_gradient_loss(lp, old, torch.ones(1), mask, clip_eps_high=-0.1)
    with pytest.raises(ValueError, match="mask"):
        policy_gradient_loss(lp, old, torch.ones(1), torch.ones(1, 2) * 2)


# ----------------------------------------------------------------------------------------------
# LUFFY
# ----------------------------------------------------------------------------------------------


def test_luffy_hand_value_and_grad():
    # p = 0.5, gamma = 0.1, A = 2: f = 0.5/0.6, loss = -2 * 5/6 = -5/3
    # d/dlogp = -A * gamma / (p + gamma)^2 * p = -2 * 0.1 / 0.36 * 0.5 = -5/18
    lp = _lp([[0.5]])
    loss = luffy_loss(lp, torch.tensor([2.0], dtype=torch.float64), torch.ones(1, 1, dtype=torch.bool))
    assert loss.item() == pytest.approx(-5 / 3)
    loss.backward()
    assert lp.grad.item() == pytest.approx(-5 / 18)


def test_luffy_gradient_against_autograd_on_logits():
    torch.manual_seed(2)
    B, T, V, gamma = 2, 4, 5, 0.1
    logits0 = torch.randn(B, T, V, dtype=torch.float64)
    labels = torch.randint(0, V, (B, T))
    adv = torch.tensor([1.0, -0.5], dtype=torch.float64)
    mask = torch.ones(B, T, dtype=torch.bool)

    logits = logits0.clone().requires_grad_()
    lp = token_logprobs(logits, labels)
    luffy_loss(lp, adv, mask, gamma=gamma, normalization="constant", constant=1.0).backward()

    p = token_logprobs(logits0, labels).exp()
    coef = -adv[:, None] * gamma / (p + gamma) ** 2 * p  # weight on ∇log p per token
    ref_logits = logits0.clone().requires_grad_()
    (coef * token_logprobs(ref_logits, labels)).sum().backward()
    assert torch.allclose(logits.grad, ref_logits.grad, atol=1e-12)


def test_luffy_bad_gamma():
    with pytest.raises(ValueError, match="gamma"):
        luffy_loss(torch.zeros(1, 1), torch.ones(1), torch.ones(1, 1), gamma=0.0)


# ----------------------------------------------------------------------------------------------
# shared behaviour of every loss: masking and empty masks
# ----------------------------------------------------------------------------------------------


def _all_losses(lp: torch.Tensor, mask: torch.Tensor, normalization: str) -> dict[str, torch.Tensor]:
    adv = torch.tensor([1.0, -2.0], dtype=lp.dtype)
    kw = {"normalization": normalization, "constant": 8.0}
    return {
        "sft": sft_loss(lp, mask, **kw),
        "trsft": trsft_loss(lp, mask, alpha=0.1, **kw),
        "pg": policy_gradient_loss(lp, lp.detach() - 0.1, adv, mask, **kw),
        "luffy": luffy_loss(lp, adv, mask, gamma=0.1, **kw),
    }


@pytest.mark.parametrize("normalization", ["token_mean", "seq_mean_token_mean", "constant"])
def test_every_loss_masked_tokens_get_exactly_zero_grad(normalization):
    torch.manual_seed(3)
    base = torch.rand(2, 4, dtype=torch.float64).clamp(min=0.01).log()
    base[0, 3] = float("-inf")  # padding holding -inf must not leak nan into the gradient
    mask = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 1]], dtype=torch.bool)
    for name in ("sft", "trsft", "pg", "luffy"):
        lp = base.clone().requires_grad_()
        loss = _all_losses(lp, mask, normalization)[name]
        loss.backward()
        assert torch.isfinite(loss), name
        assert torch.all(lp.grad[~mask] == 0), name
        assert torch.all(lp.grad[mask] != 0), name


@pytest.mark.parametrize("normalization", ["token_mean", "seq_mean_token_mean", "constant"])
def test_every_loss_empty_mask_is_zero(normalization):
    lp = torch.rand(2, 3, dtype=torch.float64).log().requires_grad_()
    mask = torch.zeros(2, 3)
    for name, loss in _all_losses(lp, mask, normalization).items():
        (grad,) = torch.autograd.grad(loss, lp, allow_unused=True)
        assert loss.item() == 0.0, name
        assert grad is None or torch.equal(grad, torch.zeros_like(lp)), name


def test_every_loss_rejects_shape_mismatch():
    lp = torch.zeros(2, 3)
    for bad_mask in (torch.ones(2, 4), torch.ones(3)):
        with pytest.raises(ValueError, match="mask"):
            sft_loss(lp, bad_mask)
        with pytest.raises(ValueError, match="mask"):
            trsft_loss(lp, bad_mask)
        with pytest.raises(ValueError, match="mask"):
            policy_gradient_loss(lp, lp, torch.ones(2), bad_mask)
        with pytest.raises(ValueError, match="mask"):
            luffy_loss(lp, torch.ones(2), bad_mask)
    with pytest.raises(ValueError, match="logprobs"):
        sft_loss(torch.zeros(6), torch.ones(6))
