"""Toy experiment after Figure 3 of the TRAPO paper: SFT vs Trust-Region SFT on a free categorical.

A free categorical policy q = softmax(θ) over ``--categories`` outcomes is fitted to an expert
distribution p_E made of a few high-mass regions separated by "void" regions (where p_E is tiny, or 0
with ``--void-floor 0``), from stochastic minibatches of expert samples, as SFT on data would be. Each
step draws ``--batch-size`` samples c ~ p_E and takes an Adam step on the token-mean loss of log q(c):
plain SFT (NLL) or TrSFT (``-q(c) / max(sg(q(c)), α)``, TRAPO.md §1), both from ``trapo.losses``.

Tracked over training: forward KL(p_E‖q) (what SFT minimises; mode-covering), reverse KL(q‖p_E) (finite
only when p_E > 0 everywhere), and the mass q puts on the void regions. The final TrSFT policy is compared
with the closed-form stable solution of Proposition 1.

    python experiments/fig3_toy.py --steps 3000 --seeds 3 --out docs/results
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from trapo.losses import sft_loss, trsft_loss

METHODS = ("sft", "trsft")

# (centre, width, weight) of the high-mass regions, in units of a 100-category axis
DEFAULT_MODES: tuple[tuple[float, float, float], ...] = ((12.0, 3.0, 0.40), (48.0, 2.0, 0.35), (80.0, 4.0, 0.25))


def expert_distribution(
    num_categories: int = 100,
    modes: Sequence[tuple[float, float, float]] = DEFAULT_MODES,
    void_floor: float = 1e-4,
    void_threshold: float = 1e-3,
) -> tuple[Tensor, Tensor]:
    """p_E (float64) and the boolean mask of its void regions.

    The high-mass regions are Gaussian bumps ``(centre, width, weight)`` (centres and widths scaled from a
    100-category axis); every category whose bump density is below ``void_threshold`` is void and gets
    probability ``void_floor`` (before renormalising). ``void_floor = 0`` makes the voids exactly empty.
    """
    if num_categories < 10:
        raise ValueError(f"`num_categories` must be >= 10, got {num_categories}")
    if void_floor < 0 or void_floor >= void_threshold:
        raise ValueError(f"`void_floor` must be in [0, void_threshold={void_threshold}), got {void_floor}")
    scale = num_categories / 100.0
    c = torch.arange(num_categories, dtype=torch.float64)
    dens = torch.zeros(num_categories, dtype=torch.float64)
    for centre, width, weight in modes:
        mu, sigma = centre * scale, width * scale
        dens += weight * torch.exp(-0.5 * ((c - mu) / sigma) ** 2) / sigma
    dens /= dens.sum()
    void = dens < void_threshold
    if not void.any() or void.all():
        raise ValueError("the modes leave no void region (or nothing but void); change `modes`")
    p_e = torch.where(void, torch.full_like(dens, void_floor), dens)
    return p_e / p_e.sum(), void


def proposition1_solution(p_e: Tensor, alpha: float) -> tuple[float, Tensor]:
    """Stable point of TrSFT on a free categorical (TRAPO.md §1, Proposition 1, with its boundary case).

    Stationarity of E_{c~p_E}[-q(c)/max(sg(q(c)), α)] under q = softmax(θ) reads q(c) = p(c) w(c) / λ with
    w = min(1, q/α) and λ = Σ_c p(c) w(c): every category either has q(c) = p(c)/λ >= α, or q(c) = 0, or
    p(c) = αλ exactly. With S(λ) = {c : p(c) > αλ}, the function g(λ) = Σ_{S(λ)} p - λ decreases from 1
    to below 0 and crosses 0 once:
    - where it crosses continuously, λ = Σ_{S(λ)} p and q* = p/λ on S(λ), 0 elsewhere (as in TRAPO.md);
    - where it crosses at a jump λ = v/α (v the probability of a boundary class of categories), the
      categories with p = v share the rest of the mass, 1 - Σ_{S(λ)} p / λ, each below α (split equally
      here; the dynamics are neutral between equal-probability categories). E.g. p = [.5, .3, .2],
      α = .45: no λ solves λ = Σ_{S(λ)} p, and gradient descent converges to q = [.75, .25, 0], λ = 2/3.
    """
    if not 0 < alpha <= 1:
        raise ValueError(f"`alpha` must be in (0, 1], got {alpha}")
    values = torch.unique(p_e[p_e > 0]).flip(0).tolist()  # distinct probabilities, descending
    mass_above = 0.0  # Σ p over categories with p > v_j
    for j, v in enumerate(values):
        cls = p_e == v
        mass_with = mass_above + float(p_e[cls].sum())  # Σ p over categories with p >= v_j
        next_v = values[j + 1] if j + 1 < len(values) else 0.0
        if next_v / alpha <= mass_with < v / alpha:  # continuous crossing: S(λ) = {p >= v_j}
            lam = mass_with
            return lam, torch.where(p_e >= v, p_e / lam, torch.zeros_like(p_e))
        if mass_above < v / alpha <= mass_with:  # crossing at the jump λ = v_j / α
            lam = v / alpha
            q = torch.where(p_e > v, p_e / lam, torch.zeros_like(p_e))
            q[cls] = (1.0 - mass_above / lam) / int(cls.sum())
            return lam, q
        mass_above = mass_with
    raise ValueError("no stationary point found; is `p_e` a distribution?")


def policy_metrics(theta: Tensor, p_e: Tensor, void: Tensor) -> dict[str, float | None]:
    """Forward KL(p_E‖q), reverse KL(q‖p_E) (None where infinite), void mass of q = softmax(θ)."""
    with torch.no_grad():
        logq = torch.log_softmax(theta, dim=0)
        q = logq.exp()
        forward = float(torch.special.xlogy(p_e, p_e).sum() - (p_e * logq).sum())
        reverse = float((q * (logq - p_e.log())).sum()) if bool((p_e > 0).all()) else None
        return {"forward_kl": forward, "reverse_kl": reverse, "void_mass": float(q[void].sum())}


def fit(
    p_e: Tensor,
    void: Tensor,
    method: str,
    *,
    alpha: float = 0.1,
    steps: int = 3000,
    batch_size: int = 64,
    lr: float = 0.02,
    seed: int = 0,
    eval_every: int = 50,
    optimizer: str = "adam",
) -> dict:
    """Fit q = softmax(θ), θ = 0 (uniform), to minibatches of expert samples with SFT or TrSFT.

    ``optimizer`` is ``"adam"`` or ``"sgd"`` (plain gradient steps, which expose the raw gradient scale:
    TrSFT's gradient is up to 1/α times smaller than SFT's for tokens below α).

    Returns ``{"steps": [...], "forward_kl": [...], "reverse_kl": [...], "void_mass": [...], "q": [...]}``
    with metrics at step 0, every ``eval_every`` steps and at the end.
    """
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}, got {method!r}")
    if steps < 1 or batch_size < 1 or eval_every < 1:
        raise ValueError("`steps`, `batch_size` and `eval_every` must be >= 1")
    gen = torch.Generator().manual_seed(seed)
    theta = torch.zeros_like(p_e, requires_grad=True)
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"`optimizer` must be 'adam' or 'sgd', got {optimizer!r}")
    opt = torch.optim.Adam([theta], lr=lr) if optimizer == "adam" else torch.optim.SGD([theta], lr=lr)
    mask = torch.ones(1, batch_size, dtype=torch.bool)
    history: dict[str, list] = {"steps": [], "forward_kl": [], "reverse_kl": [], "void_mass": []}

    def record(step: int) -> None:
        history["steps"].append(step)
        for key, value in policy_metrics(theta, p_e, void).items():
            history[key].append(value)

    record(0)
    for step in range(1, steps + 1):
        samples = torch.multinomial(p_e, batch_size, replacement=True, generator=gen)
        logq = torch.log_softmax(theta, dim=0)[samples][None]  # (1, batch) "expert tokens"
        loss = sft_loss(logq, mask) if method == "sft" else trsft_loss(logq, mask, alpha=alpha)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % eval_every == 0 or step == steps:
            record(step)
    history["q"] = torch.softmax(theta.detach(), dim=0).tolist()
    return history


def run_experiment(
    *,
    steps: int = 3000,
    seeds: int = 3,
    alpha: float = 0.1,
    num_categories: int = 100,
    void_floor: float = 1e-4,
    batch_size: int = 64,
    lr: float = 0.02,
    eval_every: int = 50,
    optimizer: str = "adam",
) -> dict:
    """SFT and TrSFT over ``seeds`` seeds; returns p_E, the void mask, Proposition 1's q* and every run."""
    p_e, void = expert_distribution(num_categories, void_floor=void_floor)
    lam, q_star = proposition1_solution(p_e, alpha)
    kwargs = {"alpha": alpha, "steps": steps, "batch_size": batch_size, "lr": lr, "eval_every": eval_every}
    kwargs["optimizer"] = optimizer
    runs = {method: [fit(p_e, void, method, seed=s, **kwargs) for s in range(seeds)] for method in METHODS}
    return {
        "config": {
            "steps": steps,
            "seeds": seeds,
            "alpha": alpha,
            "num_categories": num_categories,
            "void_floor": void_floor,
            "batch_size": batch_size,
            "lr": lr,
            "optimizer": optimizer,
            "init": "uniform",
            "modes": [list(m) for m in DEFAULT_MODES],
        },
        "p_e": p_e.tolist(),
        "void": void.tolist(),
        "proposition1": {"lambda": lam, "q_star": q_star.tolist()},
        "runs": runs,
    }


def _stats(values: list[float | None]) -> dict[str, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"mean": None, "min": None, "max": None}
    return {"mean": sum(vals) / len(vals), "min": min(vals), "max": max(vals)}


def summarize(result: dict) -> dict:
    """Small JSON-able summary: final metrics per method (mean/min/max over seeds) and the q* comparison."""
    p_e = torch.tensor(result["p_e"])
    void = torch.tensor(result["void"])
    q_star = torch.tensor(result["proposition1"]["q_star"])
    summary: dict = {
        "config": result["config"],
        "expert": {
            "num_void_categories": int(void.sum()),
            "void_mass": float(p_e[void].sum()),
            "max_probability": float(p_e.max()),
            "categories_above_alpha": int((p_e > result["config"]["alpha"]).sum()),
        },
        "proposition1": {
            "lambda": result["proposition1"]["lambda"],
            "support_size": int((q_star > 0).sum()),
            # q* drops the expert mass 1 - λ, so KL(p_E‖q*) is infinite and KL(q*‖p_E) = -log λ
            "expert_mass_dropped": 1.0 - result["proposition1"]["lambda"],
            "reverse_kl_of_q_star": -math.log(result["proposition1"]["lambda"]),
        },
        "final": {},
    }
    for method, runs in result["runs"].items():
        finals = {key: _stats([run[key][-1] for run in runs]) for key in ("forward_kl", "reverse_kl", "void_mass")}
        qs = [torch.tensor(run["q"]) for run in runs]
        finals["support_size_q_gt_1e-3"] = _stats([float((q > 1e-3).sum()) for q in qs])
        finals["l1_to_q_star"] = _stats([float((q - q_star).abs().sum()) for q in qs])
        finals["l1_to_p_e"] = _stats([float((q - p_e).abs().sum()) for q in qs])
        summary["final"][method] = finals
    return summary


def plot(result: dict, path: Path) -> None:
    """Four panels: forward KL, reverse KL and void mass over training (mean and range over seeds), final q."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"sft": "tab:blue", "trsft": "tab:red"}
    alpha = result["config"]["alpha"]
    labels = {"sft": "SFT", "trsft": f"TrSFT (α={alpha})"}
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    panels = [
        (axes[0, 0], "forward_kl", "forward KL(p_E ‖ q)", "linear"),
        (axes[0, 1], "reverse_kl", "reverse KL(q ‖ p_E)", "log"),
        (axes[1, 0], "void_mass", "mass of q on void regions", "log"),
    ]
    for ax, key, title, yscale in panels:
        for method, runs in result["runs"].items():
            if any(v is None for v in runs[0][key]):
                continue
            steps = runs[0]["steps"]
            values = torch.tensor([run[key] for run in runs])
            ax.plot(steps, values.mean(0).tolist(), color=colors[method], label=labels[method])
            lo, hi = values.min(0).values.tolist(), values.max(0).values.tolist()
            ax.fill_between(steps, lo, hi, color=colors[method], alpha=0.2)
        if key == "void_mass":
            p_e, void = torch.tensor(result["p_e"]), torch.tensor(result["void"])
            ax.axhline(float(p_e[void].sum()) or 1e-12, color="k", ls=":", label="p_E's void mass")
        if ax.lines:
            ax.legend()
        else:
            ax.text(0.5, 0.5, "infinite (p_E has zeros)", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_yscale(yscale)

    ax = axes[1, 1]
    p_e = torch.tensor(result["p_e"])
    void = torch.tensor(result["void"])
    x = list(range(len(p_e)))
    for start, stop in _runs_of_true(void.tolist()):
        ax.axvspan(start - 0.5, stop - 0.5, color="0.9", lw=0)
    ax.bar(x, p_e.tolist(), color="0.55", width=1.0, label="expert p_E (grey bands: void)")
    for method, runs in result["runs"].items():
        ax.plot(x, runs[0]["q"], color=colors[method], lw=1.5, label=f"{labels[method]}, seed 0")
    q_star = torch.tensor(result["proposition1"]["q_star"])
    ax.plot(x, q_star.tolist(), "k--", lw=1, label="Proposition 1: q*")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_ylim(0, 1)
    ax.set_title(f"final distributions after {result['config']['steps']} steps")
    ax.set_xlabel("category")
    ax.legend(fontsize=8)
    fig.suptitle("Free categorical fitted to expert samples: SFT (mode-covering) vs TrSFT (mode-seeking)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _runs_of_true(flags: list[bool]) -> list[tuple[int, int]]:
    spans, start = [], None
    for i, flag in enumerate([*flags, False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            spans.append((start, i))
            start = None
    return spans


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--steps", type=int, default=3000, help="optimizer steps per run")
    parser.add_argument("--seeds", type=int, default=3, help="runs per method (seeds 0..N-1)")
    parser.add_argument("--alpha", type=float, default=0.1, help="TrSFT trust-region threshold")
    parser.add_argument("--categories", type=int, default=100, help="size of the categorical")
    parser.add_argument("--void-floor", type=float, default=1e-4, help="p_E of a void category before renormalising")
    parser.add_argument("--batch-size", type=int, default=64, help="expert samples per step")
    parser.add_argument("--lr", type=float, default=0.02, help="learning rate (both methods)")
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam", help="optimizer (both methods)")
    parser.add_argument("--eval-every", type=int, default=50, help="steps between metric records")
    parser.add_argument("--out", type=Path, default=Path("docs/results"), help="folder for fig3_toy.png/.json")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    result = run_experiment(
        steps=args.steps,
        seeds=args.seeds,
        alpha=args.alpha,
        num_categories=args.categories,
        void_floor=args.void_floor,
        batch_size=args.batch_size,
        lr=args.lr,
        eval_every=args.eval_every,
        optimizer=args.optimizer,
    )
    summary = summarize(result)
    summary["wall_seconds"] = round(time.perf_counter() - t0, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    plot(result, args.out / "fig3_toy.png")
    (args.out / "fig3_toy.json").write_text(json.dumps(summary, indent=2) + "\n")
    for method, finals in summary["final"].items():
        parts = [f"{key} {val['mean']:.4g}" for key, val in finals.items() if val["mean"] is not None]
        print(f"{method:6s} " + ", ".join(parts))
    lam = summary["proposition1"]["lambda"]
    print(f"Proposition 1: lambda {lam:.4f}, support {summary['proposition1']['support_size']} categories")
    print(f"wrote {args.out / 'fig3_toy.png'} and {args.out / 'fig3_toy.json'} ({summary['wall_seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
