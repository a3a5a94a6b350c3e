"""Theorem 3.2 of ScoreFlow, checked numerically on the product's loss code (backends/cuda/loss.py).

With implicit rewards R = beta * (logp - ref) and margin z = s_w R_w - (1 - s_l) R_l, the Score-DPO
loss is L = -log sigmoid(z). The influence of the chosen sample is I_w = -dL/dR_w = s_w sigmoid(-z), and

    dI_w/ds_w = sigmoid(-z) * (1 - s_w R_w sigmoid(z)),

so the influence grows with the sample's score exactly when  s_w R_w sigmoid(z) < 1  (condition C_w;
it always holds when R_w <= 0 or s_w R_w < 1). For the rejected sample I_l = dL/dR_l = (1 - s_l) sigmoid(-z)
and dI_l/ds_l = -sigmoid(-z) * (1 + (1 - s_l) R_l sigmoid(z)): a worse loser weighs more exactly when
(1 - s_l) R_l sigmoid(z) > -1 (condition C_l).
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from scoreflow.backends.cuda.loss import preference_loss  # noqa: E402

BETA = 0.1


def influences(s_w: torch.Tensor, s_l: torch.Tensor, r_w: torch.Tensor, r_l: torch.Tensor,
               create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(-dL/dR_w, dL/dR_l) per sample, by autograd through preference_loss (R = beta * (policy - ref))."""
    policy_w = (r_w / BETA).detach().requires_grad_(True)
    policy_l = (r_l / BETA).detach().requires_grad_(True)
    zero = torch.zeros_like(s_w)
    loss, _ = preference_loss("score-dpo", BETA, policy_w, policy_l, zero, zero, s_w, s_l, torch.ones_like(s_w))
    # preference_loss averages over the batch: undo that so each entry is one sample's own derivative.
    g_w, g_l = torch.autograd.grad(loss * len(s_w), (policy_w, policy_l), create_graph=create_graph)
    return -g_w / BETA, g_l / BETA


def condition_w(s_w: torch.Tensor, r_w: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return s_w * r_w * torch.sigmoid(z) < 1


def condition_l(s_l: torch.Tensor, r_l: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return (1 - s_l) * r_l * torch.sigmoid(z) > -1


def _instances(n: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    s_w = torch.rand(n, generator=g, dtype=torch.float64) * 0.98 + 0.01
    s_l = torch.rand(n, generator=g, dtype=torch.float64) * s_w
    # Rewards wide enough that both sides of each condition occur often.
    r_w = torch.randn(n, generator=g, dtype=torch.float64) * 4
    r_l = torch.randn(n, generator=g, dtype=torch.float64) * 4
    return s_w, s_l, r_w, r_l


def test_influence_matches_closed_form() -> None:
    s_w, s_l, r_w, r_l = _instances(500, 0)
    i_w, i_l = influences(s_w, s_l, r_w, r_l)
    z = s_w * r_w - (1 - s_l) * r_l
    torch.testing.assert_close(i_w, s_w * torch.sigmoid(-z))
    torch.testing.assert_close(i_l, (1 - s_l) * torch.sigmoid(-z))


def test_chosen_influence_grows_with_score_exactly_when_condition_holds() -> None:
    s_w, s_l, r_w, r_l = _instances(4000, 1)
    s = s_w.clone().requires_grad_(True)
    i_w, _ = influences(s, s_l, r_w, r_l, create_graph=True)
    slope = torch.autograd.grad(i_w.sum(), s)[0]  # each I_w depends only on its own s_w
    z = (s_w * r_w - (1 - s_l) * r_l)
    cond = condition_w(s_w, r_w, z)
    clear = (s_w * r_w * torch.sigmoid(z) - 1).abs() > 1e-6
    assert cond.float().mean() > 0.2 and (~cond).float().mean() > 0.05, "both regimes must be exercised"
    assert torch.equal((slope > 0)[clear], cond[clear])


def test_rejected_influence_falls_with_score_exactly_when_condition_holds() -> None:
    s_w, s_l, r_w, r_l = _instances(4000, 2)
    s = s_l.clone().requires_grad_(True)
    _, i_l = influences(s_w, s, r_w, r_l, create_graph=True)
    slope = torch.autograd.grad(i_l.sum(), s)[0]
    z = s_w * r_w - (1 - s_l) * r_l
    cond = condition_l(s_l, r_l, z)
    clear = ((1 - s_l) * r_l * torch.sigmoid(z) + 1).abs() > 1e-6
    assert cond.float().mean() > 0.2 and (~cond).float().mean() > 0.05
    assert torch.equal((slope < 0)[clear], cond[clear])


@pytest.mark.parametrize("seed", range(5))
def test_influence_monotone_in_score_on_a_grid(seed: int) -> None:
    """Sweep s_w over (s_l, 1] at fixed rewards: wherever C_w holds along the sweep, I_w never decreases."""
    g = torch.Generator().manual_seed(100 + seed)
    r_w, r_l = (float(torch.randn(1, generator=g)) * 3 for _ in range(2))
    s_l = float(torch.rand(1, generator=g)) * 0.5
    grid = torch.linspace(s_l + 1e-3, 1.0, 200, dtype=torch.float64)
    n = len(grid)
    i_w, _ = influences(grid, torch.full((n,), s_l, dtype=torch.float64), torch.full((n,), r_w, dtype=torch.float64),
                        torch.full((n,), r_l, dtype=torch.float64))
    z = grid * r_w - (1 - s_l) * r_l
    cond = condition_w(grid, torch.full_like(grid, r_w), z)
    both = cond[1:] & cond[:-1]
    assert bool((i_w[1:] >= i_w[:-1])[both].all())
    if r_w <= 0:  # the sufficient case: the condition holds everywhere, the influence is increasing throughout
        assert bool(cond.all()) and bool((i_w[1:] > i_w[:-1]).all())


def test_dpo_influence_ignores_score() -> None:
    """Control: under DPO the influence is sigmoid(-(R_w - R_l)) whatever the score (no score term)."""
    s_w, s_l, r_w, r_l = _instances(200, 3)
    pw, pl = (r_w / BETA).requires_grad_(True), (r_l / BETA).requires_grad_(True)
    zero = torch.zeros_like(s_w)
    loss, _ = preference_loss("dpo", BETA, pw, pl, zero, zero, s_w, s_l, torch.ones_like(s_w))
    g_w = torch.autograd.grad(loss * len(s_w), pw)[0] / -BETA
    torch.testing.assert_close(g_w, torch.sigmoid(-(r_w - r_l)))


# ---- along a real training trajectory --------------------------------------------------------------

def _trajectory_pairs(n: int, seed: int):
    from scoreflow.model.backend import TrainPair

    g = torch.Generator().manual_seed(seed)
    prompts = [[{"role": "user", "content": f"Design a workflow for problem {i}: {i} + {i * 3} = ?"}] for i in range(4)]
    texts = ["<graph>async def run_workflow(self):\n    return await self.custom(input=self.problem)</graph>",
             "<graph>async def run_workflow(self):\n    s = await self.programmer(problem=self.problem)\n    return s</graph>",
             "I think the answer is 7.", "<graph>async def run_workflow(self):\n    return 42</graph>"]
    out = []
    for _ in range(n):
        p = int(torch.randint(len(prompts), (1,), generator=g))
        w, l = torch.randperm(len(texts), generator=g)[:2].tolist()
        hi, lo = sorted(torch.rand(2, generator=g).tolist(), reverse=True)
        out.append(TrainPair(prompts[p], texts[w], texts[l], round(hi, 3), round(lo, 3)))
    return out


def test_condition_frequency_along_real_training(tiny_llama) -> None:
    """Train the tiny Llama with LoRA through the PyTorch backend (one pair per step, so the step's
    recorded rewards are that pair's), check the records are the rewards the theorem is about, and
    report how often C_w and C_l held."""
    pytest.importorskip("peft")
    from scoreflow.model.backend import LoraConfig, TrainConfig
    from scoreflow.backends.cuda import load

    torch.set_num_threads(1)
    backend = load(str(tiny_llama), device="cpu", lora=LoraConfig(rank=4, alpha=8, dropout=0.0), seed=0)
    pairs = _trajectory_pairs(24, seed=0)
    steps = []
    backend.train(pairs, TrainConfig(loss="score-dpo", beta=BETA, learning_rate=2e-2, epochs=3, batch_size=1,
                                     max_length=256, checkpoint_every=0), on_step=steps.append)
    assert len(steps) == 3 * len(pairs)
    held_w = held_l = 0
    for info, pair in zip(steps, pairs * 3):
        z = pair.score_chosen * info.chosen_reward - (1 - pair.score_rejected) * info.rejected_reward
        assert math.isclose(info.margin, z, rel_tol=1e-4, abs_tol=1e-6)
        assert math.isclose(info.loss, -math.log(1 / (1 + math.exp(-z))), rel_tol=1e-4, abs_tol=1e-6)
        sig = 1 / (1 + math.exp(-z))
        held_w += pair.score_chosen * info.chosen_reward * sig < 1
        held_l += (1 - pair.score_rejected) * info.rejected_reward * sig > -1
    moved = max(abs(s.chosen_reward) for s in steps)
    assert moved > 0, "training must move the implicit rewards for the frequency to mean anything"
    print(f"\ntheorem 3.2 condition along {len(steps)} Score-DPO steps: C_w held {held_w / len(steps):.1%}, "
          f"C_l held {held_l / len(steps):.1%}, max |R_w| = {moved:.3f}")
