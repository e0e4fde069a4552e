"""The Figure-3 toy experiment (experiments/fig3_toy.py): TrSFT is mode-seeking, SFT mode-covering."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[3] / "experiments" / "fig3_toy.py"


def _load():
    spec = importlib.util.spec_from_file_location("fig3_toy", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["fig3_toy"] = module
    spec.loader.exec_module(module)
    return module


toy = _load()


def test_proposition1_solution_cases():
    # continuous crossing: p = [.5, .3, .12, .05, .03], α = .1 -> λ = .92 (0.12 > .092 >= .05)
    lam, q = toy.proposition1_solution(torch.tensor([0.5, 0.3, 0.12, 0.05, 0.03], dtype=torch.float64), 0.1)
    assert lam == pytest.approx(0.92)
    assert q.tolist() == pytest.approx([0.5 / 0.92, 0.3 / 0.92, 0.12 / 0.92, 0, 0])
    # crossing at a jump: no λ solves λ = Σ_{p > αλ} p; λ = .3/.45 = 2/3, q = [.5/λ, 1 - .75, 0]
    lam, q = toy.proposition1_solution(torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64), 0.45)
    assert lam == pytest.approx(2 / 3)
    assert q.tolist() == pytest.approx([0.75, 0.25, 0.0])
    # a tied boundary class shares the rest: [.4, .2, .2, .2], α = .3 -> λ = 2/3, q = [.6, .4/3 x 3]
    lam, q = toy.proposition1_solution(torch.tensor([0.4, 0.2, 0.2, 0.2], dtype=torch.float64), 0.3)
    assert lam == pytest.approx(2 / 3)
    assert q.tolist() == pytest.approx([0.6, 0.4 / 3, 0.4 / 3, 0.4 / 3])


def test_jump_case_is_where_exact_gradient_descent_goes():
    """The boundary case of Proposition 1 is what TrSFT converges to (exact expectation, Adam)."""
    from trapo.losses import trsft_loss

    idx = torch.tensor([0] * 5 + [1] * 3 + [2] * 2)  # p_E = [.5, .3, .2] exactly
    theta = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=0.1)
    for _ in range(600):
        loss = trsft_loss(torch.log_softmax(theta, 0)[idx][None], torch.ones(1, 10), alpha=0.45)
        opt.zero_grad()
        loss.backward()
        opt.step()
    q = torch.softmax(theta.detach(), 0)
    assert q.tolist() == pytest.approx([0.75, 0.25, 0.0], abs=1e-2)


def test_expert_distribution_has_void_regions():
    p_e, void = toy.expert_distribution(100)
    assert p_e.sum().item() == pytest.approx(1.0)
    assert 20 < int(void.sum()) < 80
    assert p_e[void].sum().item() < 0.01
    p0, void0 = toy.expert_distribution(100, void_floor=0.0)
    assert torch.all(p0[void0] == 0)
    with pytest.raises(ValueError, match="void_floor"):
        toy.expert_distribution(100, void_floor=0.01)


def test_trsft_ends_with_less_void_mass_than_sft():
    torch.set_num_threads(1)
    p_e, void = toy.expert_distribution(100)
    runs = {m: toy.fit(p_e, void, m, alpha=0.1, steps=300, seed=0, eval_every=100) for m in ("sft", "trsft")}
    sft, trsft = runs["sft"], runs["trsft"]
    assert sft["steps"] == trsft["steps"] == [0, 100, 200, 300]
    # both start uniform: void mass = 51 / 100
    assert sft["void_mass"][0] == pytest.approx(trsft["void_mass"][0]) == pytest.approx(void.float().mean())
    # the paper's claim: TrSFT puts less mass on the expert's void regions (observed ~0.012 vs ~0.035)
    assert trsft["void_mass"][-1] < 0.5 * sft["void_mass"][-1]
    # ... at the price of mode-covering: SFT fits p_E far better in forward KL
    assert sft["forward_kl"][-1] < 0.1 < trsft["forward_kl"][-1]
    # and TrSFT keeps far fewer categories
    assert sum(x > 1e-3 for x in trsft["q"]) < 0.5 * sum(x > 1e-3 for x in sft["q"])


def test_script_writes_png_and_json(tmp_path):
    assert toy.main(["--steps", "20", "--seeds", "1", "--eval-every", "10", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "fig3_toy.json").read_text())
    assert set(summary["final"]) == {"sft", "trsft"}
    assert summary["config"]["steps"] == 20
    assert (tmp_path / "fig3_toy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
