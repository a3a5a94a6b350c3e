"""Score-DPO vs DPO vs SFT vs pair-sampling alpha: a controlled ablation in a SIMULATION.

This is a simulation, not a product run: no LLM writes workflows and no LLM executes them.
  * World (fixed by --world-seed): T problem types; for each, M candidate workflows (every subset of
    a few operators) with a known success probability p[t, c]. The "base model" is a fixed prior over
    the candidates that knows nothing about p (its logits are drawn independently of p).
  * Policy: a softmax over the M candidates per problem type (logits initialised to the prior; the
    prior is also the frozen reference). log pi(c | t) is the "completion log-prob".
  * Each iteration, as in scoreflow/loop/loop.py: draw P problems (types), sample k workflows per problem
    from the policy, score each as the mean of r Bernoulli(p) executions, draw N pairs with
    scoreflow.loop.pairs.sample_pairs (P ~ gap^alpha), and train with the product's loss code
    (scoreflow.backends.cuda.loss.preference_loss), AdamW, batch B, one epoch.
  * Ground truth: the expected score of the policy, mean over types of sum_c pi(c|t) p[t, c].

What it can show: how the loss (score weighting) and the sampling exponent change what is learned from
the same noisy scores, with the ground truth known exactly. What it cannot show: anything about
language-model generalisation, validity/format learning, or the paper's benchmark numbers.

Prints one JSON object on stdout and writes scoreflow run directories (OUT/<variant>/seed-S, and
OUT/mean/<variant> with the mean over seeds) that `scoreflow report RUN --compare RUN2 ...` plots.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import device_info, today  # noqa: E402
from scoreflow.backends.cuda.loss import preference_loss  # noqa: E402
from scoreflow.config import build, to_toml  # noqa: E402
from scoreflow.loop.pairs import Candidate, sample_pairs  # noqa: E402
from scoreflow.run.rundir import RunDir  # noqa: E402

VARIANTS: dict[str, tuple[str, float]] = {  # name -> (loss, sampling alpha)
    "score-dpo-a3": ("score-dpo", 3.0),
    "dpo-a3": ("dpo", 3.0),
    "sft-a3": ("sft", 3.0),
    "score-dpo-a0": ("score-dpo", 0.0),
    "score-dpo-a100": ("score-dpo", 100.0),
}

# Two-sided 95% Student t quantiles by degrees of freedom (normal beyond 30).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
       20: 2.086, 24: 2.064, 29: 2.045}


@dataclass(frozen=True)
class Settings:
    types: int = 12  # T problem types
    operators: int = 5  # candidates = every subset: M = 2^operators
    problems: int = 24  # P problems per iteration
    k: int = 8  # workflows sampled per problem
    runs: int = 3  # r executions per workflow
    pairs: int = 256  # N pairs per iteration
    batch_size: int = 8
    iterations: int = 8
    beta: float = 0.1
    learning_rate: float = 0.05
    world_seed: int = 0


QUICK = Settings(types=6, operators=4, problems=8, k=6, runs=2, pairs=48, iterations=3)


# ---- the simulated world ---------------------------------------------------------------------------

@dataclass
class World:
    success: torch.Tensor  # [T, M] known success probability of workflow c on type t
    prior: torch.Tensor  # [T, M] base-model logits (also the reference)


def make_world(s: Settings) -> World:
    g = np.random.default_rng(s.world_seed)
    m = 2 ** s.operators
    members = np.array([[(c >> o) & 1 for o in range(s.operators)] for c in range(m)], dtype=float)  # [M, O]
    base = g.normal(-1.0, 0.6, size=(s.types, 1))
    effect = g.normal(0.2, 0.9, size=(s.types, s.operators))  # some operators help a type, some hurt
    logit = base + effect @ members.T - 0.15 * members.sum(1) + g.normal(0, 0.4, size=(s.types, m))
    prior = g.normal(0, 1.0, size=(s.types, m))
    return World(torch.tensor(1 / (1 + np.exp(-logit))), torch.tensor(prior))


def expected_score(world: World, logits: torch.Tensor) -> float:
    return float((torch.softmax(logits, -1) * world.success).sum(-1).mean())


# ---- one run ---------------------------------------------------------------------------------------

def t95(n: int) -> float:
    df = n - 1
    if df <= 0:
        return float("nan")
    if df > 29:
        return 1.96
    return T95.get(df) or T95[max(k for k in T95 if k <= df)]


def ci(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    half = t95(len(a)) * float(a.std(ddof=1)) / math.sqrt(len(a)) if len(a) > 1 else float("nan")
    return float(a.mean()), half


def sample_iteration(world: World, logits: torch.Tensor, s: Settings, rng: np.random.Generator):
    """Problems (types), k sampled workflows each, and each workflow's mean score over r executions."""
    types = rng.integers(0, s.types, size=s.problems)
    probs = torch.softmax(logits, -1).numpy()
    chosen = np.stack([rng.choice(probs.shape[1], size=s.k, p=probs[t] / probs[t].sum()) for t in types])
    runs = rng.random((s.problems, s.k, s.runs)) < world.success.numpy()[types[:, None], chosen][..., None]
    return types, chosen, runs.astype(float)


def train_iteration(logits: torch.Tensor, ref: torch.Tensor, pairs: list[dict[str, Any]], loss_kind: str,
                    s: Settings, it: int, opt: torch.optim.Optimizer) -> list[dict[str, Any]]:
    steps = []
    for start in range(0, len(pairs), s.batch_size):
        t0 = time.perf_counter()
        batch = pairs[start:start + s.batch_size]
        t = torch.tensor([p["type"] for p in batch])
        w = torch.tensor([p["workflow_chosen"] for p in batch])
        l = torch.tensor([p["workflow_rejected"] for p in batch])
        logp = torch.log_softmax(logits, -1)
        ref_lp = torch.log_softmax(ref, -1)
        sw = torch.tensor([p["score_chosen"] for p in batch], dtype=logits.dtype)
        sl = torch.tensor([p["score_rejected"] for p in batch], dtype=logits.dtype)
        opt.zero_grad()
        loss, st = preference_loss(loss_kind, s.beta, logp[t, w], logp[t, l], ref_lp[t, w], ref_lp[t, l], sw, sl,
                                   torch.ones_like(sw))
        loss.backward()
        opt.step()
        with torch.no_grad():  # Theorem 3.2's condition for each pair at the rewards it was trained at
            rw = s.beta * (logp[t, w] - ref_lp[t, w])
            rl = s.beta * (logp[t, l] - ref_lp[t, l])
            z = sw * rw - (1 - sl) * rl
            held = int((sw * rw * torch.sigmoid(z) < 1).sum())
        steps.append({"iteration": it, "step": len(steps) + 1, "total": -(-len(pairs) // s.batch_size),
                      "loss": float(loss.detach()), "margin": float(st["margin"]), "chosen_reward": float(st["chosen_reward"]),
                      "rejected_reward": float(st["rejected_reward"]), "seconds": time.perf_counter() - t0,
                      "condition_held": held, "pairs": len(batch)})
    return steps


def run_one(world: World, s: Settings, loss_kind: str, alpha: float, seed: int) -> dict[str, Any]:
    torch.manual_seed(seed)
    logits = world.prior.clone().requires_grad_(True)
    opt = torch.optim.AdamW([logits], lr=s.learning_rate, weight_decay=0.0)
    base = expected_score(world, world.prior)
    metrics: list[dict[str, Any]] = [{"kind": "evaluate", "iteration": 0, "split": "test", "problems": s.types,
                                      "solve_rate": base, "mean_score": base, "expected_score": base}]
    train, executions, pair_records = [], [], []
    for it in range(1, s.iterations + 1):
        t0 = time.perf_counter()
        rng = np.random.default_rng([seed, it])
        before = expected_score(world, logits.detach())
        types, chosen, runs = sample_iteration(world, logits.detach(), s, rng)
        scores = runs.mean(-1)
        cands = [Candidate(p, j, float(scores[p, j])) for p in range(s.problems) for j in range(s.k)]
        sampled = sample_pairs(cands, s.pairs, alpha, seed=seed * 7919 + it)  # the loop's pair seed
        pairs = [{"iteration": it, **asdict(p), "type": int(types[p.problem]),
                  "workflow_chosen": int(chosen[p.problem, p.chosen]),
                  "workflow_rejected": int(chosen[p.problem, p.rejected])} for p in sampled]
        steps = train_iteration(logits, world.prior, pairs, loss_kind, s, it, opt)
        slots = s.problems * s.k
        metrics.append({
            "kind": "iteration", "iteration": it, "problems": s.problems, "workflows": slots, "valid": slots,
            "valid_rate": 1.0, "first_attempt_valid_rate": 1.0,
            "mean_score": before,  # ground truth: expected score of the policy that generated this iteration
            "solve_rate": float(scores.mean()),  # what the noisy executor measured on the sampled workflows
            "sampled_score": float(scores.mean()), "expected_score": before,
            "pairs": len(pairs), "unique_pairs": len({(p["problem"], p["chosen"], p["rejected"]) for p in pairs}),
            "steps": len(steps), "loss": _mean([x["loss"] for x in steps]), "margin": _mean([x["margin"] for x in steps]),
            "first_loss": steps[0]["loss"] if steps else None, "last_loss": steps[-1]["loss"] if steps else None,
            "train_seconds": round(sum(x["seconds"] for x in steps), 4),
            "condition_rate": (sum(x["condition_held"] for x in steps) / max(1, sum(x["pairs"] for x in steps))),
            "generator_tokens": 0, "executor_calls": slots * s.runs, "executor_tokens": 0,
            "seconds": round(time.perf_counter() - t0, 4),
        })
        train += steps
        pair_records += pairs
        executions += [{"iteration": it, "problem": p, "slot": j, "run": r, "score": float(runs[p, j, r]),
                         "workflow": int(chosen[p, j]), "status": "ok"}
                        for p in range(s.problems) for j in range(s.k) for r in range(s.runs)]
    final = expected_score(world, logits.detach())
    metrics.append({"kind": "evaluate", "iteration": s.iterations, "split": "test", "problems": s.types,
                    "solve_rate": final, "mean_score": final, "expected_score": final})
    curve = [m["expected_score"] for m in metrics if m["kind"] == "iteration"] + [final]
    return {"metrics": metrics, "train": train, "executions": executions, "pairs": pair_records, "curve": curve}


def _mean(xs: list[float]) -> float | None:
    return float(np.mean(xs)) if xs else None


# ---- run directories -------------------------------------------------------------------------------

def config_toml(s: Settings, loss_kind: str, alpha: float, seed: int, label: str) -> str:
    cfg = build({"run": {"iterations": s.iterations, "problems": s.problems, "seed": seed},
                 "generator": {"workflows_per_problem": s.k}, "executor": {"runs": s.runs},
                 "train": {"loss": loss_kind, "sampling_alpha": alpha, "beta": s.beta, "pairs": s.pairs,
                           "learning_rate": s.learning_rate, "batch_size": s.batch_size}})
    sim = "\n".join(f"{k} = {json.dumps(v)}" for k, v in asdict(s).items())
    return (f"# SIMULATION (benchmarks/ablation.py): softmax policy over known-success workflows, not a model run\n"
            f"{to_toml(cfg)}\n[simulation]\nlabel = {json.dumps(label)}\n{sim}\n")


def write_run(path: Path, records: dict[str, list[dict[str, Any]]], toml: str, reason: str) -> None:
    run = RunDir(path)
    for name in ("metrics", "train", "executions", "pairs"):
        run[name].rewrite(records.get(name, []))
    (path / "config.toml").write_text(toml, encoding="utf-8")
    run.set_status("finished", reason)
    run.close()


def mean_records(results: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per-iteration and per-step averages over seeds (same shapes by construction)."""
    def avg(rows: list[dict[str, Any]]) -> dict[str, Any]:
        out = dict(rows[0])
        for key, v in rows[0].items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and key not in ("iteration", "step", "total"):
                vals = [r[key] for r in rows if r.get(key) is not None]
                out[key] = float(np.mean(vals))
        return out
    return {name: [avg(list(rows)) for rows in zip(*(r[name] for r in results))] for name in ("metrics", "train")}


# ---- the ablation ----------------------------------------------------------------------------------

def ablation(s: Settings, seeds: list[int], variants: list[str], out: Path | None) -> dict[str, Any]:
    t0 = time.perf_counter()
    world = make_world(s)
    report: dict[str, Any] = {}
    finals: dict[str, list[float]] = {}
    for name in variants:
        loss_kind, alpha = VARIANTS[name]
        results = [run_one(world, s, loss_kind, alpha, seed) for seed in seeds]
        curves = np.array([r["curve"] for r in results])  # [seeds, iterations + 1]
        finals[name] = curves[:, -1].tolist()
        held = sum(x["condition_held"] for r in results for x in r["train"])
        total = sum(x["pairs"] for r in results for x in r["train"])
        report[name] = {
            "loss": loss_kind, "alpha": alpha,
            "expected_score": [{"after_iterations": i, "mean": m, "ci95": h}
                               for i, (m, h) in enumerate(ci(curves[:, i].tolist()) for i in range(curves.shape[1]))],
            "final": dict(zip(("mean", "ci95"), ci(finals[name]))), "final_per_seed": finals[name],
            "condition_rate": held / total if total else None,
        }
        if out is not None:
            for seed, r in zip(seeds, results):
                write_run(out / name / f"seed-{seed}", r, config_toml(s, loss_kind, alpha, seed, name),
                          "simulation run (benchmarks/ablation.py)")
            write_run(out / "mean" / name, mean_records(results),
                      config_toml(s, loss_kind, alpha, seeds[0], f"{name}, mean over seeds {seeds}"),
                      f"mean over {len(seeds)} seeds of a simulation (benchmarks/ablation.py)")
    comparisons = {}
    for other in variants:
        if other != "score-dpo-a3" and "score-dpo-a3" in finals:
            d = (np.array(finals["score-dpo-a3"]) - np.array(finals[other])).tolist()
            m, h = ci(d)
            comparisons[f"score-dpo-a3 minus {other}"] = {"mean": m, "ci95": h,
                                                          "wins": int(sum(x > 0 for x in d)), "seeds": len(d)}
    return {
        "benchmark": "ablation", "simulation": True, "date": today(), "device": device_info(),
        "settings": asdict(s), "seeds": seeds,
        "world": {"oracle": float(world.success.max(-1).values.mean()), "base_policy": expected_score(world, world.prior),
                  "uniform_policy": float(world.success.mean()), "candidates": int(world.success.shape[1])},
        "variants": report, "paired_final_differences": comparisons,
        "run_dirs": str(out) if out is not None else None, "seconds": round(time.perf_counter() - t0, 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny settings for CI (seconds)")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default 10, quick 2)")
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--world-seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="write run directories here (default: none)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    s = replace(QUICK if a.quick else Settings(), world_seed=a.world_seed)
    if a.iterations:
        s = replace(s, iterations=a.iterations)
    seeds = list(range(a.seeds if a.seeds else (2 if a.quick else 10)))
    print(json.dumps(ablation(s, seeds, a.variants, a.out)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
