"""The three benchmarks run in --quick mode and print one JSON object with the expected keys
(no speed thresholds here: CI machines are too noisy; see benchmarks/RESULTS.md for the numbers)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import run_benchmark as _run

ROOT = Path(__file__).resolve().parents[1]


def _learning():
    """benchmarks/learning.py as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("learning_bench", ROOT / "benchmarks" / "learning.py")
    learning = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(learning)
    return learning


def test_dpo_step_quick(tiny_llama):
    pytest.importorskip("torch")
    if importlib.util.find_spec("trl") is None:
        pytest.skip("trl is a benchmark-only dependency: pip install torch==2.13.0 trl")
    out = _run("dpo_step.py", "--model", str(tiny_llama), "--device", "cpu")
    assert out["benchmark"] == "dpo_step"
    for key in ("date", "device", "sizes", "ours", "trl", "trl_best", "ratio", "peak_mb_ratio", "ratio_vs_trl_best",
                "peak_mb_ratio_vs_trl_best", "ratio_vs_trl_best_train_only", "targets"):
        assert key in out, key
    for side in ("ours", "trl", "trl_best"):
        assert "error" not in out[side], out[side]
        assert out[side]["pairs_per_s"] > 0 and out[side]["peak_mb"] > 0
    assert out["sizes"]["pairs"] == out["sizes"]["steps"] * out["sizes"]["batch_size"]
    # trl in both configurations: its defaults recompute the reference each step; its best precomputes
    # it (timed, inside the trainer's constructor) and says whether padding-free ran and why not.
    assert out["trl"]["config"]["precompute_ref_log_probs"] is False and out["trl"]["precompute_seconds"] == 0
    best = out["trl_best"]["config"]
    assert best["precompute_ref_log_probs"] is True and out["trl_best"]["precompute_seconds"] > 0
    assert best["padding_free"] is False and "CUDA" in best["padding_free_off_because"]  # a CPU run
    assert out["trl_best"]["seconds"] >= out["trl_best"]["train_seconds"]
    for key in ("ratio>=2.0", "peak<=trl", "ratio_vs_trl_best>=1.5", "peak<=trl_best"):
        assert key in out["targets"], key


def test_generation_quick(tiny_llama):
    pytest.importorskip("torch")
    out = _run("generation.py", "--model", str(tiny_llama), "--device", "cpu",
               "--cases", "samples", "distinct", "arith", "demo", "kernel")
    assert out["benchmark"] == "generation"
    for key in ("date", "device", "sizes", "samples", "distinct", "targets"):
        assert key in out
    for case in ("samples", "distinct"):
        assert out[case]["ratio"] > 0
        assert out[case]["batched"]["workflows_per_s"] > 0 and out[case]["naive"]["workflows_per_s"] > 0
        assert out[case]["batched"]["tokens"] > 0
    arith = out["arith"]
    assert arith["opening_tokens"] > 0.8 * arith["prompt_tokens"] and arith["ratio"] > 0
    assert arith["same_text"] == arith["rows"]
    demo = out["demo"]
    assert demo["rows"] == 24 and demo["openings"] == 5 and demo["ratio"] > 0
    assert demo["batch 16"]["tokens"] > 0 and demo["batch 24"]["tokens"] > 0
    kernel = out["kernel"]
    assert kernel["max_abs_difference"] < 1e-4 and kernel["ratio"] > 0


def test_execution_quick():
    pytest.importorskip("openai")
    out = _run("execution.py")
    assert out["benchmark"] == "execution"
    for key in ("concurrent_evals_per_s", "sequential_evals_per_s", "ideal_evals_per_s", "fraction_of_ideal",
                "sandbox_overhead", "targets"):
        assert key in out
    assert out["statuses"] == ["ok"]
    assert out["sizes"]["server_calls"] == (out["sizes"]["evaluations"] + out["sizes"]["sequential_evaluations"]) \
        * out["sizes"]["calls_per_workflow"]
    assert 0 < out["sandbox_overhead"]["median_ms"]


# The MLX paths: each benchmark runs its MLX side in a subprocess of its own (the OpenBLAS preload
# must precede `import mlx.core` and does not mix with PyTorch's float64 kernels), so nothing here
# imports mlx; the marker puts them in the separate `pytest -m mlx` process all the same.
MLX = importlib.util.find_spec("mlx_lm") is not None and importlib.util.find_spec("mlx") is not None
needs_mlx = pytest.mark.skipif(not MLX, reason="mlx-lm is not installed")


@pytest.mark.mlx
@needs_mlx
def test_dpo_step_mlx_quick(tiny_llama):
    pytest.importorskip("torch")
    out = _run("dpo_step.py", "--model", str(tiny_llama), "--device", "cpu", "--backend", "mlx", "--only", "ours,mlx")
    assert "trl" not in out and "error" not in out["ours"] and "error" not in out["mlx"], out
    mlx = out["mlx"]
    for key in ("pairs_per_s", "seconds", "peak_mb", "peak_rss_mb", "loaded_mb", "first_loss", "last_loss",
                "median_step_s", "mlx_device", "mlx_dtype", "ratio_vs_torch", "peak_mb_ratio_vs_torch", "peak_basis"):
        assert key in mlx, key
    assert mlx["pairs_per_s"] > 0 and mlx["peak_mb"] > 0 and mlx["peak_rss_mb"] > 0
    assert mlx["ratio_vs_torch"] > 0 and mlx["peak_mb_ratio_vs_torch"] > 0
    assert mlx["mlx_dtype"] == out["dtype"] == "float32"
    # Same pairs, same initial LoRA (B = 0): both backends start from the log(2) Score-DPO loss.
    assert abs(mlx["first_loss"] - out["ours"]["first_loss"]) < 1e-4


@pytest.mark.mlx
@needs_mlx
def test_generation_mlx_quick(tiny_llama):
    pytest.importorskip("torch")
    out = _run("generation.py", "--model", str(tiny_llama), "--device", "cpu", "--backend", "mlx")
    mlx = out["mlx"]
    assert "error" not in mlx and "status" not in mlx, mlx
    assert mlx["dtype"] == "float32"
    for case in ("samples", "distinct"):
        assert mlx[case]["workflows_per_s"] > 0 and mlx[case]["tokens"] > 0
        assert mlx[case]["ratio_vs_torch_batched"] > 0 and mlx[case]["token_ratio_vs_torch_batched"] > 0
    assert mlx["peak_mb"] > 0


@pytest.mark.mlx
@needs_mlx
def test_execution_local_mlx_quick(tiny_llama):
    pytest.importorskip("torch")
    pytest.importorskip("openai")
    out = _run("execution.py", "--backend", "mlx", "--local-model", str(tiny_llama))
    local = out["local"]
    for side in ("torch", "mlx"):
        assert "error" not in local[side], local[side]
        assert local[side]["evals_per_s"] > 0 and local[side]["completion_tokens"] > 0
        assert local[side]["evaluations"] == local["sizes"]["problems"] * local["sizes"]["workflows"]
        assert local[side]["statuses"] == ["ok"]
        assert local[side]["dtype"] == "float32"
    # The workflows' call counts do not depend on the replies: both backends answer the same calls.
    assert local["mlx"]["executor_calls"] == local["torch"]["executor_calls"] > 0
    assert local["ratio_vs_torch"] > 0 and local["token_ratio_vs_torch"] > 0


@pytest.mark.slow
def test_learning_quick(learning_run):
    """The learning benchmark's machinery on the real model: base and trained evaluations, the
    summary with CIs, the rule's share and the gold-in-source count; then the group-relative loss on
    the same workflows and scores (--reuse-from: a real-model run of `--loss grpo`), both summarised as
    one (--combine), and the adapters evaluated again (--retest-from). The four commands run as the
    shared run `learning` (tests/runs.py)."""
    from scoreflow.loop.pairs import Candidate, group_pairs

    tmp_path = learning_run.base
    runs = tmp_path / "runs"
    out = learning_run.first
    assert out["benchmark"] == "learning" and out["loss"] == "score-dpo"
    rows = out["summary"]
    assert [r["iteration"] for r in rows] == [0, 1]
    for r in rows:
        ci = r["test_solve_rate"]
        assert 0 <= ci["low"] <= ci["value"] <= ci["high"] <= 1
        assert r["test_solved_with_gold_in_source"] == 0
    assert rows[0]["difference_from_iteration_0"]["value"] == 0
    assert (tmp_path / "learning.png").is_file()
    first = [json.loads(x) for x in (runs / "score-dpo-seed1" / "pairs.jsonl").read_text().splitlines()]
    assert first and len((runs / "score-dpo-seed1" / "train.jsonl").read_text().splitlines()) == 2  # seed 1: pairs form

    grpo = learning_run.grpo
    assert grpo["loss"] == "grpo" and grpo["summary"][0]["test_solve_rate"] == rows[0]["test_solve_rate"]
    run = runs / "grpo-seed1"
    assert (run / "workflows.jsonl").read_text() == (runs / "score-dpo-seed1" / "workflows.jsonl").read_text()
    # every pair of each problem's group once, with the advantages of its scores (invalid-as-zero and
    # the valid floor applied, as the loop gives them to every loss), not the sampled pairs
    pairs = [json.loads(x) for x in (run / "pairs.jsonl").read_text().splitlines()]
    scores: dict[tuple[int, int], list[float]] = {}
    for r in map(json.loads, (run / "executions.jsonl").read_text().splitlines()):
        scores.setdefault((r["problem"], r["slot"]), []).append(r["score"])
    floor = 0.5  # the demo preset's train.valid_floor; a workflow never valid scores 0
    slots = {(r["problem"], r["slot"]) for r in map(json.loads, (run / "workflows.jsonl").read_text().splitlines())}
    want = group_pairs([Candidate(p, j, floor + (1 - floor) * sum(scores[p, j]) / len(scores[p, j])
                                  if (p, j) in scores else 0.0) for p, j in sorted(slots)])
    assert [(p["problem"], p["chosen"], p["rejected"], p["advantage_chosen"], p["weight"]) for p in pairs] == \
        [(p.problem, p.chosen, p.rejected, p.advantage_chosen, p.weight) for p in want] and want
    assert {(p["problem"], p["chosen"], p["rejected"]) for p in first} <= {(p.problem, p.chosen, p.rejected) for p in want}
    steps = [json.loads(x) for x in (run / "train.jsonl").read_text().splitlines()]
    assert len(steps) == len({p.problem for p in want})  # one optimiser step per group
    assert abs(steps[0]["loss"]) < 1e-6 and steps[0]["grad_norm"] > 0  # the ratio starts at 1; the gradient does not vanish
    assert (run / "adapters" / "iter-1" / "adapter_model.safetensors").is_file()

    both = learning_run.both
    assert both["settings"] == ["score-dpo", "grpo"] and both["summary"]["grpo"] == grpo["summary"]
    (diff,) = both["differences"]
    assert diff["iteration"] == 1 and diff["seeds"] == [1]
    want_diff = grpo["summary"][1]["test_solve_rate"]["value"] - rows[1]["test_solve_rate"]["value"]
    assert abs(diff["difference"]["value"] - want_diff) < 1e-9
    assert (tmp_path / "losses.png").is_file()
    again = learning_run.again
    retested = tmp_path / "retest" / "score-dpo-seed1"
    for name in ("workflows.jsonl", "train.jsonl"):  # nothing generated or trained again
        assert (retested / name).read_text() == (runs / "score-dpo-seed1" / name).read_text()
    assert (retested / "adapters" / "iter-1").is_dir()
    assert [r["test_solve_rate"] for r in again["summary"]] == [r["test_solve_rate"] for r in rows]  # evaluated again, alike


def test_learning_combine_pairs_losses_on_seeds_and_problems(tmp_path):
    """--combine: runs written apart are summarised as one; each setting is compared with the first
    file's on the seeds both ran, problem by problem."""
    def run(loss: str, seed: int, base: list[float], after: list[float]) -> dict:
        its = [{"iteration": 0, "scores": base, "test_solve_rate": sum(base) / len(base), "test_valid_rate": 1.0,
                "test_solved": sum(base), "test_solved_with_gold_in_source": 0},
               {"iteration": 1, "scores": after, "test_solve_rate": sum(after) / len(after), "test_valid_rate": 1.0,
                "test_solved": sum(after), "test_solved_with_gold_in_source": 0}]
        return {"loss": loss, "iterations": 1, "command": f"python benchmarks/learning.py --loss {loss}",
                "runs": [{"seed": seed, "iterations": its}]}

    files = []
    for i, (loss, seed, base, after) in enumerate([
            ("score-dpo", 0, [0, 1, 0, 0], [1, 1, 0, 0]), ("score-dpo", 1, [0, 0, 0, 0], [0, 0, 0, 0]),
            ("sft", 0, [0, 1, 0, 0], [1, 1, 1, 1]), ("sft", 1, [0, 0, 0, 0], [0, 0, 1, 0]),
            ("dpo", 2, [0, 0, 0, 0], [1, 1, 1, 1])]):  # no score-dpo run of seed 2: nothing to pair with
        files.append(tmp_path / f"{i}.json")
        files[-1].write_text(json.dumps(run(loss, seed, [float(x) for x in base], [float(x) for x in after])))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "learning.py"), "--combine", *map(str, files),
                           "--out", str(tmp_path / "all.json")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads((tmp_path / "all.json").read_text())
    assert out["settings"] == ["score-dpo", "sft", "dpo"]
    assert out["seeds"] == {"score-dpo": [0, 1], "sft": [0, 1], "dpo": [2]}
    assert out["summary"]["score-dpo"][1]["test_solve_rate"]["value"] == 0.25  # 2 of 8
    assert out["summary"]["sft"][1]["difference_from_iteration_0"]["value"] == 4 / 8  # 5 of 8 minus 1 of 8
    (diff,) = out["differences"]
    assert diff["setting"] == "sft" and diff["minus"] == "score-dpo" and diff["seeds"] == [0, 1] and diff["difference"]["value"] == 3 / 8
    assert diff["difference"]["low"] <= 3 / 8 <= diff["difference"]["high"]
    assert len(out["commands"]) == 5


def test_learning_on_another_task(tmp_path):
    """learning.py --task gsm8k --data DIR: the runs' task and data are those; --combine refuses files of
    two tasks (their problems cannot be paired)."""
    import argparse

    learning = _learning()
    args = argparse.Namespace(task="gsm8k", data=Path("/d/data"), iterations=1, problems=12, test_problems=100, k=8,
                              loss="score-dpo", pairs=32, set=["executor.max_tokens=256"])
    cfg = learning.seed_config(args, 2)
    assert (cfg.run.task, cfg.run.data, cfg.run.seed, cfg.run.test_problems) == ("gsm8k", "/d/data", 2, 100)
    assert cfg.executor.max_tokens == 256 and cfg.generator.workflows_per_problem == 8
    files = []
    for task in ("arith", "gsm8k"):
        files.append(tmp_path / f"{task}.json")
        files[-1].write_text(json.dumps({"task": task, "loss": "score-dpo", "iterations": 1, "runs": []}))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "learning.py"), "--combine", *map(str, files)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "different tasks: arith, gsm8k" in proc.stderr


def test_the_ceiling_runs_workflows_the_loop_would_accept(data_dir):
    """benchmarks/ceiling.py's fixed workflows are the task's template (the executor alone, as a baseline:
    the loop refuses a copy of it) and its few-shot examples, each one the static policy accepts (so the
    ceiling is of workflows a generator may write, not of forbidden ones)."""
    spec = importlib.util.spec_from_file_location("ceiling_bench", ROOT / "benchmarks" / "ceiling.py")
    ceiling = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ceiling)
    from scoreflow.execute import workflow as wf
    from scoreflow.tasks import load

    for name in ("arith", "gsm8k"):
        task = load(name, data_dir)
        sources = ceiling.workflows(task)
        assert list(sources) == ["template"] + [f"example {i + 1}" for i in range(len(task.examples))]
        for source in list(sources.values())[1:]:
            c = wf.check(source, task.operators, task.template, task.similarity_threshold,
                         attributes=wf.ATTRIBUTES_OF_SELF, family=task.family)
            assert c.ok, (name, c.reason, source)


def test_heldout_evaluates_on_validate_problems_the_run_does_not_train_on():
    """learning.py --heldout: the evaluations' problems are the validate split less the run's own
    training problems, so that settings are chosen without the test split."""
    learning = _learning()
    from scoreflow.config import build
    from scoreflow.run.session import make_task, run_problems

    cfg = build({"run": {"task": "arith", "seed": 3, "problems": 12, "test_problems": 20}})
    task = make_task(cfg)
    training = run_problems(cfg, task)
    held = learning.HeldOut(task, [p.id for p in training])
    evaluated = run_problems(cfg, held, "test")
    validate_ids = {p.id for p in task.problems("validate")}
    assert len(evaluated) == 20 and {p.id for p in evaluated} <= validate_ids - {p.id for p in training}
    assert not {p.id for p in evaluated} & {p.id for p in task.problems("test")}
    assert run_problems(cfg, held) == training  # training is unchanged
    assert held.score(evaluated[0], evaluated[0].answer) == 1.0  # the rest is the task's own


def test_the_operation_diagnostic_reads_instructions_and_code():
    """learning.py's operation diagnostic: the operation a workflow names in its instruction or
    applies in its code must be exactly its problem kind's."""
    learning = _learning()
    from scoreflow.tasks.arith import EXAMPLES

    add, sub, mul, div, two = (q for q, _ in EXAMPLES)
    code = [source for _, source in EXAMPLES]
    assert [learning.names_operation(q, code[i]) for i, q in enumerate((add, sub, mul, div, two))] == [True] * 5
    assert not learning.names_operation(add, code[2]) and not learning.names_operation(two, code[0])
    said = 'async def run_workflow(self):\n    return await self.custom(input=self.problem, instruction="Multiply them.")'
    assert learning.names_operation(mul, said) and not learning.names_operation(div, said)
    assert not learning.names_operation(add, "not python (")


def test_the_diversity_diagnostic_counts_distinct_samples_and_problems_in_pairs():
    learning = _learning()
    wf = [{"problem": 0, "valid": True, "source": "a"}, {"problem": 0, "valid": True, "source": "b"},
          {"problem": 0, "valid": True, "source": "a"}, {"problem": 0, "valid": False, "source": "c"},
          {"problem": 1, "valid": True, "source": "a"}, {"problem": 1, "valid": True, "source": "a"}]
    pairs = [{"problem": 0}, {"problem": 0}, {"problem": 2}]
    assert learning.diversity(wf, pairs) == {"distinct_workflows": 1.5, "problems_in_pairs": 2, "top_problem_pairs": 2}
    assert learning.diversity([], []) == {"distinct_workflows": 0.0, "problems_in_pairs": 0, "top_problem_pairs": 0}


@pytest.mark.slow
def test_demo_reads_a_finished_run_of_the_readmes_command(demo_run, tmp_path):
    """benchmarks/demo.py --reuse on the shared demo run (the README's command at small sizes): the
    comparison, the operations by kind of problem and the gold-in-source count come from the run's own
    records, the wall time from its last line; each seed's record is kept in its folder at once."""
    assert demo_run.rc == 0, demo_run.err[-3000:]
    folder = tmp_path / "seed1"
    shutil.copytree(demo_run.run_dir, folder / "runs" / "RUN")
    (folder / "log.txt").write_text(demo_run.out)
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "demo.py"), "--seeds", "1", "--root", str(tmp_path),
                          "--reuse"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout)
    [seed] = out["seeds"]
    compared = next(m for m in map(json.loads, (demo_run.run_dir / "metrics.jsonl").read_text().splitlines())
                    if m.get("kind") == "compare")
    assert seed["comparison"]["difference"] == compared["difference"] and seed["gold_in_solved_source"] == 0
    assert sum(k["problems"] for k in seed["by_kind"].values()) == compared["problems"]
    assert seed["wall_s"] > 0 and out["summary"]["seeds"] == 1
    assert len(seed["test_scores"]["base"]) == len(seed["test_scores"]["trained"]) == compared["problems"]
    assert out["summary"]["pooled_difference"]["value"] == pytest.approx(compared["difference"]["value"])
    assert json.loads((folder / "result.json").read_text()) == seed


@pytest.mark.slow
def test_library_gap_on_the_shared_demo_run(demo_run, tmp_path):
    """benchmarks/library_gap.py on the shared demo run at K = 1: the library is written by the export
    code and ranked on validate problems only, answers the run's own two test problems with the embedded
    executor, each answer scored by the task's scorer; the query-level side is the run's own records."""
    from scoreflow import config as C
    from scoreflow.run.session import make_task, run_problems

    assert demo_run.rc == 0, demo_run.err[-3000:]
    run = demo_run.run_dir
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "library_gap.py"), str(run), "--ks", "1",
                          "--rules", "first", "--libraries", str(tmp_path)], capture_output=True, text=True,
                         timeout=600, env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout)
    [got] = out["runs"]
    [lib] = got["libraries"]
    cfg = C.build(C.read_toml(run / "config.toml"), snapshot=True)
    task = make_task(cfg)
    problems = run_problems(cfg, task, "test")
    tests = {m["iteration"]: m for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
             if m.get("kind") == "evaluate"}
    executions = [json.loads(x) for x in (run / "test_executions.jsonl").read_text().splitlines()]
    calls = [sum(e["calls"] for e in executions if (e["iteration"], e["problem"]) == (1, p)) for p in range(2)]
    assert got["test_problems"] == len(problems) == 2 and got["query"]["trained"]["calls"] == calls
    assert got["query"]["base"]["scores"] == tests[0]["scores"]
    assert got["query"]["trained"]["scores"] == tests[1]["scores"]
    manifest = json.loads((tmp_path / f"{run.name}-seed{cfg.run.seed}" / "library-1" / "library.json").read_text())
    top = manifest["workflows"][0]["scores"]
    assert lib["ranking"] == {"split": "validate", "problems": len(top), "test_problems": 0,
                              "candidates": manifest["candidates"]}
    assert not set(top) & {p.id for p in problems}
    assert (lib["k"], lib["rule"], lib["workflows"], lib["generator_tokens_per_problem"]) == (1, "first", 1, 0)
    assert 1 <= lib["model_calls"] <= sum(lib["calls"])  # the embedded executor ran
    assert lib["scores"] == [task.score(p, a) if a is not None else 0.0 for p, a in zip(problems, lib["answers"])]
    gap = (sum(lib["scores"]) - sum(tests[1]["scores"])) / 2
    assert lib["minus_trained"]["value"] == pytest.approx(gap) and lib["minus_trained"]["low"] <= gap
    [pooled] = out["pooled"]["libraries"]
    assert pooled["solve_rate"]["value"] == pytest.approx(lib["solve_rate"]) and out["pooled"]["problems"] == 2


def test_opening_gradient_on_the_shared_demo_run(demo_run):
    """benchmarks/opening_gradient.py on the shared demo run's one pair: both ways give the same
    log-probs; the gradients differ (the opening's path is dropped) but point the same way; the opening
    is most of the pair's tokens."""
    assert demo_run.rc == 0, demo_run.err[-3000:]
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "opening_gradient.py"), "--run-dir",
                          str(demo_run.run_dir), "--pairs", "1"], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert res.returncode == 0, res.stderr[-3000:]
    s = json.loads(res.stdout)["summary"]
    assert s["pairs"] == 1 and s["largest_logprob_difference"] < 1e-3
    assert 0 < s["cosine_mean"] < 0.999 and s["opening_share"] > 0.5


def test_recompute_on_the_shared_demo_run(demo_run):
    """benchmarks/recompute.py on the shared demo run's first pair: with every layer recomputed the
    step's peak memory is well below that of none recomputed (the activations of 30 layers against
    their inputs); both shares trained."""
    assert demo_run.rc == 0, demo_run.err[-3000:]
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "recompute.py"), "--run-dir",
                          str(demo_run.run_dir), "--pairs", "1", "--shares", "0", "1"], capture_output=True,
                         text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout)
    none, every = out["rows"]
    assert (none["recomputed_layers"], every["recomputed_layers"]) == (0, out["layers"]) and out["layers"] == 30
    assert out["loaded_mib"] < every["peak_mib"] < none["peak_mib"] - 500, out
