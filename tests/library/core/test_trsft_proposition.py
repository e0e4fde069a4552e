"""Proposition 1 of the TRAPO paper, numerically (TRAPO.md §1).

Fit a free categorical q = softmax(θ) to an expert distribution p_E by gradient descent on the *exact*
expectation E_{c~p_E}[TrSFT loss of log q(c)]. The stable solution is q(c) = p_E(c)/λ on
S(λ) = {c : p_E(c) > αλ} and 0 elsewhere, with λ = Σ_{c∈S(λ)} p_E(c). Plain SFT converges to p_E.
"""

from __future__ import annotations

import math

import pytest
import torch

from trapo.losses import sft_loss, trsft_loss

P_E = [0.5, 0.3, 0.12, 0.05, 0.03]
# p_E has denominator 100, so 100 "expert tokens" with these counts give the expectation exactly
COUNTS = [50, 30, 12, 5, 3]


def closed_form(p_e: list[float], alpha: float) -> tuple[float, list[float]]:
    """λ and the stable TrSFT solution: the largest categories S with p > αλ, λ = Σ_S p."""
    ordered = sorted(p_e, reverse=True)
    for k in range(1, len(ordered) + 1):
        lam = sum(ordered[:k])
        inside = ordered[k - 1] > alpha * lam
        closed = k == len(ordered) or ordered[k] <= alpha * lam
        if inside and closed:
            return lam, [p / lam if p > alpha * lam else 0.0 for p in p_e]
    raise AssertionError("no fixed point")


def test_closed_form_by_hand():
    # α = 0.1: S = {0.5, 0.3, 0.12}, λ = 0.92, αλ = 0.092 (0.12 > 0.092 >= 0.05)
    lam, q = closed_form(P_E, 0.1)
    assert lam == pytest.approx(0.92)
    assert q == pytest.approx([0.5 / 0.92, 0.3 / 0.92, 0.12 / 0.92, 0.0, 0.0])
    # α = 0.3: S = {0.5, 0.3}, λ = 0.8, αλ = 0.24; S = {0.5} fails (λ = 0.5, 0.3 > 0.15)
    lam, q = closed_form(P_E, 0.3)
    assert lam == pytest.approx(0.8)
    assert q == pytest.approx([0.625, 0.375, 0.0, 0.0, 0.0])


def _fit(loss_name: str, alpha: float, init: str, steps: int = 500, lr: float = 0.1) -> torch.Tensor:
    """Adam (written out: torch.optim's first step costs ~2 s of imports) on the exact expectation."""
    idx = torch.repeat_interleave(torch.arange(len(P_E)), torch.tensor(COUNTS))
    mask = torch.ones(1, len(idx), dtype=torch.bool)
    theta0 = torch.zeros(len(P_E)) if init == "uniform" else torch.tensor(P_E).log()
    theta = theta0.double().requires_grad_()
    m = torch.zeros_like(theta)
    v = torch.zeros_like(theta)
    b1, b2 = 0.9, 0.999
    for step in range(1, steps + 1):
        logq = torch.log_softmax(theta, dim=0)[idx][None]  # (1, 100) expert tokens
        loss = trsft_loss(logq, mask, alpha=alpha) if loss_name == "trsft" else sft_loss(logq, mask)
        (grad,) = torch.autograd.grad(loss, theta)
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad**2
        with torch.no_grad():
            theta -= lr * (m / (1 - b1**step)) / ((v / (1 - b2**step)).sqrt() + 1e-8)
    return torch.softmax(theta.detach(), dim=0)


@pytest.mark.parametrize("alpha", [0.1, 0.3])
@pytest.mark.parametrize("init", ["uniform", "expert"])
def test_trsft_converges_to_proposition_1(alpha, init):
    torch.set_num_threads(1)
    _, q_star = closed_form(P_E, alpha)
    q = _fit("trsft", alpha, init)
    q_star_t = torch.tensor(q_star, dtype=q.dtype)
    support = q_star_t > 0
    assert torch.allclose(q[support], q_star_t[support], atol=1e-2)
    assert q[~support].sum() < 5e-3
    # and it is genuinely mode-seeking: the expert's rarest categories are dropped, not just shrunk
    assert (q[~support] < 0.1 * torch.tensor(P_E, dtype=q.dtype)[~support]).all()


def test_sft_converges_to_expert():
    q = _fit("sft", 0.1, "uniform")
    assert torch.allclose(q, torch.tensor(P_E, dtype=q.dtype), atol=1e-2)


@pytest.mark.parametrize("alpha", [0.1, 0.3])
def test_closed_form_is_stationary(alpha):
    """The TrSFT gradient vanishes at q* (θ = log q* on S, very negative off S)."""
    _, q_star = closed_form(P_E, alpha)
    theta = torch.tensor([math.log(x) if x > 0 else -30.0 for x in q_star], dtype=torch.float64)
    theta.requires_grad_()
    idx = torch.repeat_interleave(torch.arange(len(P_E)), torch.tensor(COUNTS))
    logq = torch.log_softmax(theta, dim=0)[idx][None]
    (grad,) = torch.autograd.grad(trsft_loss(logq, torch.ones(1, 100), alpha=alpha), theta)
    assert grad.abs().max() < 1e-10
    # whereas at p_E itself (SFT's solution) TrSFT still pushes
    theta = torch.log(torch.tensor(P_E, dtype=torch.float64)).requires_grad_()
    logq = torch.log_softmax(theta, dim=0)[idx][None]
    (grad,) = torch.autograd.grad(trsft_loss(logq, torch.ones(1, 100), alpha=alpha), theta)
    assert grad.abs().max() > 1e-3
    (grad,) = torch.autograd.grad(sft_loss(torch.log_softmax(theta, dim=0)[idx][None], torch.ones(1, 100)), theta)
    assert grad.abs().max() < 1e-12
