"""What `train.opening_gradient = false` changes, on a run's own training pairs (PyTorch backend).

With it, the opening every generator prompt shares (system prompt and few-shot examples, ~80% of a
demo pair's tokens) runs under no_grad and the rest attends to its keys and values as constants.
Per pair, both ways from the same adapter (the run's adapter before that iteration): the largest
difference of the two log-probs (should be ~0), the cosine and the norm ratio of the two gradients
of the pair's Score-DPO direction s_w * logp_w - (1 - s_l) * logp_l, and the wall and CPU seconds
of forward plus backward (the order alternates from pair to pair). Whether the changed gradient
learns as well is a separate question: `learning.py --set train.opening_gradient=false`.

    python benchmarks/opening_gradient.py --run-dir runs/RUN --iteration 1 --pairs 8

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_info, emit, today  # noqa: E402


def one_way(backend, pair, cfg, held: bool) -> tuple:
    import torch

    from scoreflow.backends.cuda import train as T
    from scoreflow.model import training

    plan = training.TrainPlan.make(backend.fmt, [pair], replace(cfg, opening_gradient=not held))
    enc = plan.enc
    trees = T.group_trees(enc.seqs, enc.prompt_lens, range(len(enc.seqs)), None, enc.opening_lens)
    model = backend.model
    model.train()
    model.zero_grad(set_to_none=True)
    wall, cpu = time.perf_counter(), time.process_time()
    lp = T.packed_logprobs(model, trees, len(enc.seqs), backend.tokenizer.pad_token_id, backend.torch_device,
                           not held)
    (pair.score_chosen * lp[0] - (1 - pair.score_rejected) * lp[1]).backward()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad and p.grad is not None])
    model.eval()
    return lp.detach().clone(), grad, wall, cpu, sum(t.width for t in trees), sum(len(t.opening) for t in trees)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", type=Path, required=True, help="a run of the PyTorch backend with pairs")
    ap.add_argument("--iteration", type=int, default=1)
    ap.add_argument("--pairs", type=int, default=8, help="the iteration's first N pairs")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    import torch

    from scoreflow.cli.main import parser
    from scoreflow.cli.train_adapter import job_from_args
    from scoreflow.run.session import make_backend

    job = job_from_args(parser().parse_args(["train-adapter", "--run-dir", str(args.run_dir), "--iteration",
                                             str(args.iteration), "--out", str(args.run_dir / "unused")]))
    backend = make_backend(job.cfg)
    if job.init_adapter:
        backend.load_adapter(job.init_adapter)
    rows = []
    for k, pair in enumerate(job.pairs[:args.pairs]):
        ways = {}
        for held in ((False, True) if k % 2 == 0 else (True, False)):
            ways[held] = one_way(backend, pair, job.train, held)
        (lp_e, g_e, w_e, c_e, width, opening), (lp_h, g_h, w_h, c_h, _, _) = ways[False], ways[True]
        rows.append({"pair": k, "tokens": width, "opening_tokens": opening,
                     "logprob_difference": float((lp_e - lp_h).abs().max()),
                     "cosine": round(float(torch.nn.functional.cosine_similarity(g_e, g_h, 0)), 4),
                     "norm_ratio": round(float(g_h.norm() / g_e.norm()), 4),
                     "exact_s": round(w_e, 2), "held_s": round(w_h, 2),
                     "exact_cpu_s": round(c_e, 2), "held_cpu_s": round(c_h, 2)})
        print(rows[-1], file=sys.stderr, flush=True)
    timed = rows[1:] or rows  # the first pair warms up
    summary = {
        "pairs": len(rows),
        "opening_share": round(statistics.mean(r["opening_tokens"] / r["tokens"] for r in rows), 3),
        "largest_logprob_difference": max(r["logprob_difference"] for r in rows),
        "cosine_mean": round(statistics.mean(r["cosine"] for r in rows), 3),
        "cosine_min": min(r["cosine"] for r in rows),
        "norm_ratio_mean": round(statistics.mean(r["norm_ratio"] for r in rows), 3),
        "speedup_wall": round(sum(r["exact_s"] for r in timed) / sum(r["held_s"] for r in timed), 2),
        "speedup_cpu": round(sum(r["exact_cpu_s"] for r in timed) / sum(r["held_cpu_s"] for r in timed), 2),
    }
    emit({"benchmark": "opening_gradient", "date": today(), "machine": device_info(), "run": str(args.run_dir),
          "iteration": args.iteration, "threads": torch.get_num_threads(), "summary": summary, "rows": rows},
         args.out)


if __name__ == "__main__":
    main()
