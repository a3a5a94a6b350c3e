"""Does the loop learn? The real loop on `arith` (or another `--task`) with the embedded model (real
generator, executor, LoRA training and sandbox), evaluated on held-out test problems before training (iteration 0, the
base generator) and after every iteration, over several seeds.

    python benchmarks/learning.py --seeds 0 1 2 --iterations 3 --loss score-dpo
    python benchmarks/learning.py --loss dpo --iterations 1 --reuse-from runs/learning   # the same pairs, another loss
    python benchmarks/learning.py --quick            # one seed, one small iteration: the machinery only
    python benchmarks/learning.py --task gsm8k --data ../shared/data --iterations 1 --test-problems 100
        # another task, read from AFlow-format split files
    python benchmarks/learning.py --combine A.json B.json --out C.json   # runs made apart, summarised as one
    python benchmarks/learning.py --heldout --tag epochs3 --set train.epochs=3 --reuse-from runs/learning
        # choose a setting: the same pairs, scored on validate problems the run does not train on
    python benchmarks/learning.py --test-problems 100 --eval-at --runs-dir runs/test100 --retest-from runs/learning
        # the same setting's finished runs (same flags otherwise), their adapters scored on more test problems

Prints one JSON object (also written to benchmarks/results/learning-<loss>.json with --out) with, per
iteration: the test solve rate with a bootstrap 95% CI over problems and seeds, its difference from
iteration 0 (paired on the same problems), the share of generated workflows the problem-specific
rule rejected, and how many solved workflows hold the gold answer in their source (must be 0).
The settings are the product's demo preset unless flags change them; nothing is chosen on the test split.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from statistics import mean
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_info, emit, today  # noqa: E402

from scoreflow.loop import loop  # noqa: E402
from scoreflow.model.backend import LOSSES  # noqa: E402
from scoreflow.config import build, merge, parse_set  # noqa: E402
from scoreflow.records import IterationMetrics, TestMetrics  # noqa: E402
from scoreflow.run.rundir import RunDir  # noqa: E402
from scoreflow.run.reporter import Reporter  # noqa: E402
from scoreflow.run.session import build_session, run_problems  # noqa: E402
from scoreflow.stats import bootstrap  # noqa: E402
from scoreflow.execute.workflow import gold_in_source  # noqa: E402


def seed_config(args: argparse.Namespace, seed: int):
    """The run's configuration: the preset's, with the benchmark's sizes, loss and --set values."""
    sizes = {"run": {"task": args.task, "seed": seed, "iterations": args.iterations, "problems": args.problems,
                     "test_problems": args.test_problems},
             "generator": {"workflows_per_problem": args.k}, "train": {"loss": args.loss, "pairs": args.pairs}}
    # compare: the base generator before training, the trained one after the last iteration
    fixed = {"run": {"compare": True, "data": str(args.data) if args.data else None}}
    return build(merge(sizes, parse_set(args.set), fixed))


def one_seed(args: argparse.Namespace, seed: int, run_dir: Path) -> dict:
    cfg = seed_config(args, seed)
    if args.reuse_from:  # a held-out pool is the same for every run of a seed: its base evaluation too
        source = args.reuse_from if (args.reuse_from / "config.toml").is_file() else args.reuse_from / f"score-dpo-seed{seed}"
        reuse(source, run_dir, evaluations=not args.heldout or bool(args.heldout_pool), pairs=not args.new_pairs)
    if args.retest_from:
        retest(args.retest_from / run_dir.name, run_dir)
    s = build_session(cfg, run_dir, Progress(seed))
    if args.heldout:  # evaluate on validate problems this run does not train on, never on the test split
        s.task = HeldOut(s.task, [p.id for it in range(1, cfg.run.iterations + 1)
                                  for p in run_problems(cfg, s.task, iteration=it)], args.heldout_pool)
    s.run.write_config(cfg)  # a run directory like optimize's: report and show read it
    s.run.set_status("running")

    try:
        loop.optimize(s, evaluate_at=args.eval_at)
        s.run.set_status("finished")
    finally:
        s.close()
    return summarise_run(run_dir, cfg.run.iterations, run_problems(cfg, s.task, "test"), cfg)


# What each arith problem kind asks (the generator sees the kind in words, its numbers hidden), and how
# a workflow names an operation (in its instructions) or applies one (in its code, to the numbers the
# executor read): a diagnostic of whether the generator tailors its workflow to the problem, apart
# from whether the executor then gets the number right.
KINDS = (("div", "shared equally"), ("mul", "boxes with"), ("two", "then gives"), ("sub", "gives away"), ("add", ""))
OPERATIONS = {"add": r"\badd|\bsum\b|\bplus\b", "sub": r"subtract|minus|take away|difference",
              "mul": r"multipl|times|product", "div": r"divid|split"}
CODE_OPERATIONS = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.FloorDiv: "div", ast.Div: "div"}


def names_operation(question: str, source: str | None) -> bool:
    """Whether the workflow's string literals name, or its arithmetic applies, exactly the operations
    of the question's kind."""
    kind = next(k for k, words in KINDS if words in question)
    named = {op for op, rx in OPERATIONS.items()
             if re.search(rx, " ".join(re.findall(r'"([^"]*)"', source or "")).lower())}
    try:
        named |= {CODE_OPERATIONS[type(n.op)] for n in ast.walk(ast.parse(source or ""))
                  if isinstance(n, ast.BinOp) and type(n.op) in CODE_OPERATIONS}
    except SyntaxError:
        pass
    return named == ({"add", "sub"} if kind == "two" else {kind})


class HeldOut:
    """The task with its test split replaced by the validate problems a run does not train on: where
    settings are chosen (`--heldout`), so that the test split is only ever scored. With `pool`, those
    are `pool` more arith validate problems, drawn after the split's own (which the runs train on)."""

    def __init__(self, task, training_ids: list[str], pool: int = 0):
        self.task, self.training_ids, self.pool = task, set(training_ids), pool

    def problems(self, split: str) -> list:
        if split == "test" and self.pool:
            from scoreflow.tasks.arith import SIZES, ArithTask

            return ArithTask(size={"validate": SIZES["validate"] + self.pool}).problems("validate")[SIZES["validate"]:]
        if split == "test":
            return [p for p in self.task.problems("validate") if p.id not in self.training_ids]
        return self.task.problems(split)

    def __getattr__(self, name: str):
        return getattr(self.task, name)


def reuse(source: Path, run_dir: Path, evaluations: bool = True, pairs: bool = True) -> None:
    """Start from another run of the same seed: its base-generator evaluation (unless `evaluations`
    is off) and its first iteration's workflows, executions and sampled pairs (none of which depends
    on the loss or the training settings), so that losses and settings are compared on exactly the
    same pairs."""
    keep = {"workflows": lambda r: r.iteration == 1, "executions": lambda r: r.iteration == 1}
    if pairs:
        keep["pairs"] = lambda r: r.iteration == 1
    if evaluations:
        keep.update({"metrics": lambda r: isinstance(r, TestMetrics) and r.iteration == 0,
                     "test_workflows": lambda r: r.iteration == 0, "test_executions": lambda r: r.iteration == 0})
    start_from(source, run_dir, keep)


def retest(source: Path, run_dir: Path) -> None:
    """Start from a finished run of the same setting with everything but its evaluations: its training
    records, adapters and executor cache, so that the trained generators are scored on another
    number of test problems (`--test-problems`) without training again."""
    src, dst = RunDir(source), RunDir(run_dir)
    if not src.adapters_path.is_dir() and not dst["metrics"].path.is_file():
        raise SystemExit(f"learning.py: --retest-from: {source} holds no trained adapters (run that setting there first)")
    every = lambda r: True  # noqa: E731
    keep = {"workflows": every, "executions": every, "pairs": every, "train": every,
            "metrics": lambda r: isinstance(r, IterationMetrics)}
    if start_from(source, run_dir, keep):
        shutil.copytree(src.adapters_path, dst.adapters_path)
        if src.executor_cache.is_file():
            shutil.copy(src.executor_cache, dst.executor_cache)


def start_from(source: Path, run_dir: Path, keep: dict[str, Callable[[Any], bool]]) -> bool:
    """A new run directory holding the records of `source` that `keep` wants, by record file; False,
    copying nothing, when `run_dir` is a run being resumed."""
    src, dst = RunDir(source), RunDir(run_dir)
    if dst["metrics"].path.is_file():
        return False
    for name, wanted in keep.items():
        dst[name].rewrite(r for r in src.read(name) if wanted(r))
    dst.close()
    return True


class Progress(Reporter):
    def __init__(self, seed: int):
        self.seed = seed

    def iteration_end(self, metrics: Any) -> None:
        what = getattr(metrics, "kind", "")
        print(f"seed {self.seed} {what} {getattr(metrics, 'iteration', '')} done ({time.strftime('%H:%M:%S')})",
              file=sys.stderr, flush=True)


def _records(run_dir: Path, name: str) -> list[dict]:
    return [r.to_json() for r in RunDir(run_dir).read(name)]


def summarise_run(run_dir: Path, iterations: int, problems: list, cfg) -> dict:
    metrics = _records(run_dir, "metrics")
    ev = {m["iteration"]: m for m in metrics if m.get("kind") == "evaluate"}
    its = {m["iteration"]: m for m in metrics if m.get("kind") == "iteration"}
    sources = {(r["iteration"], r["problem"]): r["source"] for r in _records(run_dir, "test_workflows")
               if r["valid"]}
    pairs = _records(run_dir, "pairs")
    out = {"seed": cfg.run.seed, "run_dir": str(run_dir), "iterations": []}
    for it in range(iterations + 1):
        row: dict = {"iteration": it}
        if it in ev:  # evaluated on the test split (--eval-at)
            e = ev[it]
            solved = [p for p, sc in enumerate(e["scores"]) if sc > 0]
            tw = [r for r in _records(run_dir, "test_workflows") if r["iteration"] == it]
            row.update({"test_solve_rate": e["solve_rate"], "test_valid_rate": e["valid_rate"],
                        "scores": e["scores"], "test_solved": len(solved),
                        "test_solved_with_gold_in_source": sum(gold_in_source(sources[(it, p)], problems[p].answer)
                                                               for p in solved),
                        "test_rule_rejected_share": mean(r["reason"].startswith("problem-specific") for r in tw)
                        if tw else 0.0})
            if cfg.run.task == "arith":
                row["test_operation_named"] = sum(names_operation(problems[p].question, sources.get((it, p)))
                                                  for p in range(len(e["scores"])))
        if it in its:
            m = its[it]
            wf = [r for r in _records(run_dir, "workflows") if r["iteration"] == it]
            row.update({k: m.get(k) for k in ("valid_rate", "first_attempt_valid_rate", "mean_score", "solve_rate",
                                               "pairs", "unique_pairs", "steps", "loss", "seconds")})
            row["rule_rejected_share"] = mean(r["reason"].startswith("problem-specific") for r in wf) if wf else 0.0
            row.update(diversity(wf, [r for r in pairs if r["iteration"] == it]))
        out["iterations"].append(row)
    return out


def diversity(workflows: list[dict], pairs: list[dict]) -> dict:
    """How varied an iteration's samples were: distinct valid workflows among a problem's k (mean over
    problems), how many problems the drawn pairs came from, and the most drawn problem's pairs. Samples
    that narrow to one workflow per problem leave few problems with pairs, all pulling one way."""
    sources: dict[int, set[str]] = {}
    for r in workflows:
        if r["valid"]:
            sources.setdefault(r["problem"], set()).add(r["source"])
    per_problem = Counter(p["problem"] for p in pairs)
    return {"distinct_workflows": mean(len(v) for v in sources.values()) if sources else 0.0,
            "problems_in_pairs": len(per_problem), "top_problem_pairs": max(per_problem.values(), default=0)}


def combine(runs: list[dict], iterations: int) -> list[dict]:
    rows = []
    by_it = [{row["iteration"]: row for row in r["iterations"]} for r in runs]
    base = [r[0]["scores"] for r in by_it]
    for it in range(iterations + 1):
        if not all("scores" in r.get(it, {}) for r in by_it):
            continue  # not evaluated on the test split
        got = [r[it] for r in by_it]
        scores = [g["scores"] for g in got]
        rows.append({"iteration": it, "test_solve_rate": bootstrap(scores).as_dict(),
                     "difference_from_iteration_0": bootstrap(scores, base).as_dict(),
                     "test_valid_rate": mean(g["test_valid_rate"] for g in got),
                     "test_solved": sum(g["test_solved"] for g in got),
                     "test_solved_with_gold_in_source": sum(g["test_solved_with_gold_in_source"] for g in got),
                     "rule_rejected_share": mean(g.get("rule_rejected_share", 0.0) for g in got),
                     "test_operation_named_share": mean(g["test_operation_named"] / len(g["scores"]) for g in got)
                     if all("test_operation_named" in g for g in got) else None})  # absent in older files
    return rows


def compare_settings(runs: list[dict], base: str) -> list[dict]:
    """Each other setting minus `base` at each iteration both evaluated, paired on the same seeds and
    problems (a bootstrap over both, as for the difference from iteration 0)."""
    by_setting: dict[str, dict[int, dict]] = {}
    for r in runs:
        by_setting.setdefault(r["setting"], {})[r["seed"]] = {row["iteration"]: row for row in r["iterations"]}
    ref = by_setting.get(base, {})
    out = []
    for setting, seeds in by_setting.items():
        common = sorted(set(seeds) & set(ref))
        if setting == base or not common:
            continue
        both = set.intersection(*({i for i in seeds[s] if "scores" in seeds[s][i] and "scores" in ref[s].get(i, {})}
                                  for s in common))
        for it in sorted(both - {0}):
            out.append({"setting": setting, "minus": base, "iteration": it, "seeds": common,
                        "difference": bootstrap([seeds[s][it]["scores"] for s in common],
                                                [ref[s][it]["scores"] for s in common]).as_dict()})
    return out


def setting_name(loss: str, tag: str = "", heldout: bool = False) -> str:
    """A setting's name: its loss, its --tag, and whether it is evaluated on held-out validate problems
    (the run directories are `<name>-seed<N>`)."""
    return "-".join(filter(None, [loss, tag, "heldout" * heldout]))


def combined(paths: list[Path]) -> dict:
    """Runs written by separate invocations (other seeds, losses or settings) summarised as if one had
    run them all: per setting, the same summary as one invocation's; each other setting minus the first
    file's, paired on the seeds both ran."""
    files = [json.loads(p.read_text()) for p in paths]
    runs = [{**r, "setting": setting_name(f["loss"], f.get("tag", ""), f.get("evaluated_on", "test") != "test")}
            for f in files for r in f["runs"]]
    iterations = max(f["iterations"] for f in files)
    settings = list(dict.fromkeys(r["setting"] for r in runs))
    tasks = sorted({f.get("task", "arith") for f in files})
    if len(tasks) > 1:
        raise SystemExit(f"learning.py: --combine: the files are of different tasks: {', '.join(tasks)}")
    return {"benchmark": "learning", "date": today(), "task": tasks[0], "combined_from": [str(p) for p in paths],
            "commands": [c for f in files for c in ([f["command"]] if "command" in f else f.get("commands", []))],
            "settings": settings, "iterations": iterations,
            "seeds": {name: sorted({r["seed"] for r in runs if r["setting"] == name}) for name in settings},
            "summary": {name: combine([r for r in runs if r["setting"] == name], iterations) for name in settings},
            "differences": compare_settings(runs, settings[0]), "runs": runs}


def plot(rows_by_loss: dict[str, list[dict]], path: Path, task: str = "arith") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for loss, rows in rows_by_loss.items():
        x = [r["iteration"] for r in rows]
        y = [r["test_solve_rate"]["value"] for r in rows]
        lo = [r["test_solve_rate"]["low"] for r in rows]
        hi = [r["test_solve_rate"]["high"] for r in rows]
        ax.plot(x, y, marker="o", label=loss)
        ax.fill_between(x, lo, hi, alpha=0.2)
    ax.set_xticks(sorted({r["iteration"] for rows in rows_by_loss.values() for r in rows}))
    ax.set_xlabel("iteration (0 = base generator)")
    ax.set_ylabel("held-out test solve rate")
    ax.set_title(f"{task}, SmolLM2-135M generator and executor (95% CI)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--task", default="arith", help="the task (as scoreflow optimize --task)")
    ap.add_argument("--data", type=Path, help="its data: a file or a folder of AFlow-format split files "
                    "(default: $SCOREFLOW_DATA or the cache)")
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--problems", type=int, default=0, help="validate problems per iteration (0 = the preset's)")
    ap.add_argument("--test-problems", type=int, default=0, help="held-out test problems (0 = the preset's)")
    ap.add_argument("-k", type=int, default=0, help="workflows per problem (0 = the preset's)")
    ap.add_argument("--pairs", type=int, default=0, help="pairs per iteration (0 = the preset's)")
    ap.add_argument("--loss", default="score-dpo", choices=LOSSES)
    ap.add_argument("--eval-at", type=int, nargs="*", default=None,
                    help="iterations evaluated on the test split besides 0 and the last (default: all)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--runs-dir", type=Path, default=Path("runs/learning"))
    ap.add_argument("--out", type=Path, help="write the JSON here (and a PNG beside it)")
    ap.add_argument("--reuse-from", type=Path, help="a --runs-dir of score-dpo runs of the same seeds: reuse their "
                    "base evaluation and first iteration's workflows, scores and pairs (compare losses on the same pairs)")
    ap.add_argument("--new-pairs", action="store_true", help="with --reuse-from: draw iteration 1's pairs again "
                    "(another train.pair_draw) from the reused workflows and scores")
    ap.add_argument("--retest-from", type=Path, help="another --runs-dir holding finished runs of this setting: "
                    "take their training and adapters, evaluate again (e.g. on more --test-problems)")
    ap.add_argument("--heldout", action="store_true",
                    help="evaluate on the validate problems the run does not train on instead of the test split "
                         "(for choosing settings)")
    ap.add_argument("--heldout-pool", type=int, default=0, metavar="N",
                    help="with --heldout: evaluate on N more arith validate problems, drawn after the split's own")
    ap.add_argument("--tag", default="", help="a name for this setting: runs go to <loss>-<tag>-seed<N>")
    ap.add_argument("--quick", action="store_true", help="one seed, one iteration of 2 problems: the machinery only")
    ap.add_argument("--combine", type=Path, nargs="+", metavar="JSON",
                    help="summarise the runs of earlier --out files as one (other seeds, other losses); runs nothing")
    args = ap.parse_args()
    if args.combine:
        result = combined(args.combine)
        write(result, args.out, result["summary"], result["task"])
        return
    if args.heldout_pool and args.task != "arith":
        ap.error("--heldout-pool draws more arith problems; with another task, --heldout alone")
    if args.eval_at is None:
        args.eval_at = list(range(1, args.iterations + 1))
    if args.quick:
        args.seeds, args.iterations, args.problems, args.test_problems, args.k, args.pairs = [1], 1, 2, 3, 2, 2
    for name in ("problems", "test_problems", "k", "pairs"):  # 0: leave it to the preset
        if not getattr(args, name):
            setattr(args, name, None)
    t0 = time.time()
    runs = []
    for seed in args.seeds:
        run_dir = args.runs_dir / f"{setting_name(args.loss, args.tag, args.heldout)}-seed{seed}"
        runs.append(one_seed(args, seed, run_dir))
    rows = combine(runs, args.iterations)
    result = {"benchmark": "learning", "date": today(), "machine": device_info(), "task": args.task,
              "evaluated_on": "validate problems not trained on" if args.heldout else "test", "tag": args.tag,
              "loss": args.loss, "seeds": args.seeds, "iterations": args.iterations,
              "command": " ".join(["python", "benchmarks/learning.py", *sys.argv[1:]]),
              "summary": rows, "runs": runs, "seconds": round(time.time() - t0, 1)}
    write(result, args.out, {args.loss: rows}, args.task)


def write(result: dict, out: Path | None, curves: dict[str, list[dict]], task: str) -> None:
    """The JSON (and its learning curve beside it) to `out` if given; the summary, without the runs, printed."""
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
        plot(curves, out.with_suffix(".png"), task)
    emit({k: v for k, v in result.items() if k != "runs"})


if __name__ == "__main__":
    main()
