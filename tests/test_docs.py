"""Every command of README.md and docs/*.md is run here or checked offline (tests/doccommands.py says
which and why), and every module, command, config key and link the docs name exists.

Runs: `fast` commands (no model: the ablation simulation with --quick, report, --dry-run) in the default
tier; `slow` ones on the embedded SmolLM2 with small sizes (the README's first `scoreflow optimize` makes
the run `runs/RUN` that solve and export then use); `mlx` ones under `-m mlx`. The README's test command
runs all three."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import doccommands as D

ROOT = D.ROOT
DATA_DIR = Path(os.environ.get("SCOREFLOW_TEST_DATA", ROOT.parent / "shared" / "data"))

# Small sizes appended to a run of the embedded model, where the command does not set them itself and
# the subcommand takes them (scoreflow.cli.main: per-command flags). None: a flag without a value.
_GEN = [("--set", "generator.max_new_tokens=128"), ("--set", "executor.max_tokens=24"),
        ("--set", "generator.max_attempts=1"), ("--no-dashboard", None)]
SMALL: dict[str, list[tuple[str, str | None]]] = {
    "optimize": [("--iterations", "1"), ("--problems", "1"), ("-k", "2"), ("--test-problems", "1"),
                 ("--pairs", "2"), ("--runs", "1"), *_GEN],
    "evaluate": [("--test-problems", "1"), ("--runs", "1"), *_GEN],
    "solve": [("--attempts", "1")],
}


@pytest.fixture(scope="module")
def inventory() -> list[tuple[D.Command, D.Verdict]]:
    return D.inventory()


# ---- every command has a kind, and the checked ones pass their checks ----------------------------

def test_every_documented_command_is_run_or_checked(inventory):
    assert len(inventory) >= 40, "the docs lost their commands, or the collector broke"
    failures = [f"{c.where}: {c.text}\n    {p}" for c, v in inventory for p in v.problems]
    assert not failures, "\n".join(failures)
    kinds = {v.kind for _, v in inventory}
    assert kinds <= {"run", "checked", "illustrative"}
    assert {v.why for _, v in inventory if v.kind == "run"} <= {"fast", "slow", "mlx"}
    # the README's set-up command ends with the demo, which the slow tier runs
    first = [c for c, v in inventory if c.doc == "README.md" and c.program == "scoreflow"][0]
    assert first.argv == ["scoreflow", "optimize"] and D.classify(first).kind == "run"


def test_docs_name_only_what_exists():
    problems = []
    for doc in D.DOCS:
        problems += D.name_problems(doc) + D.python_block_problems(doc) + D.indented_command_problems(doc)
    assert not problems, "\n".join(problems)


def test_every_doc_is_collected():
    assert set(D.DOCS) == {"README.md", *(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))}
    for doc in D.DOCS:  # an unterminated fence would swallow the rest of a doc
        assert len(re.findall(r"^\s*```", D.read(doc), re.M)) % 2 == 0, doc


# ---- the classifier fails on broken examples -----------------------------------------------------

BROKEN = [
    ("scoreflow evaluate -k 3 --run-dir runs/x", "-k cannot affect"),
    ("scoreflow optimize --iteratons 2", "unrecognized arguments"),
    ("scoreflow optimize --set train.nope=1", "no config key train.nope"),
    ("scoreflow optimize --loss ppo", "choose one of"),
    ("scoreflow frobnicate", "invalid choice"),
    ('pip install "scoreflow-cli[mlx]"', "not published"),
    ('pip install -e ".[nosuchextra]"', "no extra 'nosuchextra'"),
    ("pip install leftpad", "neither a dependency"),
    ('python -m pytest -m "not gpu"', "no marker 'gpu'"),
    ("python benchmarks/ablation.py --quick --worlds 3", "no option --worlds"),
    ("python benchmarks/nothere.py", "no such file"),
    ("bash tests/nothere.sh", "no such script"),
    ("accelerate launch --num_processes 2 -m scoreflow.backends.cuda.nothere --out a", "no such module"),
    ("curl https://example.com", "no rule for `curl`"),
]


@pytest.mark.parametrize("text,expected", BROKEN, ids=[t for t, _ in BROKEN])
def test_a_broken_command_fails(text, expected):
    [cmd] = D.split_commands(text, "example.md", 1, D.Block("example.md", 1, "bash", text))
    verdict = D.classify(cmd)
    assert any(expected in p for p in verdict.problems), verdict


def test_a_command_neither_run_nor_excused_fails():
    for text in ("python -m scoreflow config", "bash tests/vllm_venv.sh --extra", "bash benchmarks/gpu.sh tiny"):
        [cmd] = D.split_commands(text, "example.md", 1, D.Block("example.md", 1, "bash", text))
        problems = D.classify(cmd).problems
        assert any("neither run" in p or "does not handle the argument" in p for p in problems), (text, problems)


def test_a_broken_doc_fails(tmp_path):
    doc = tmp_path / "broken.md"
    doc.write_text(
        "# Broken\n\nSee `scoreflow/nothere.py`, `scoreflow.tasks.nothing`, `train.nokey`, `scoreflow frobnicate`,\n"
        "`scoreflow optimize --nope`, `--set lora.bogus=1`, `nowhere_at_all.py` and [a link](#nope).\n\n"
        "    mkdir -p x\n    scoreflow optimize\n\n"
        "<!-- illustrative -->\n```bash\nscoreflow report RUN [--bogus]\n```\n\n"
        "```python\nfrom scoreflow.api import Nothing\n```\n")
    found = D.name_problems(str(doc)) + D.python_block_problems(str(doc)) + D.indented_command_problems(str(doc))
    for expected in ("scoreflow/nothere.py does not exist", "nothing is not defined", "train.nokey",
                     "scoreflow frobnicate: no such subcommand", "no option --nope", "lora.bogus", "no file nowhere_at_all.py",
                     "no heading with that anchor", "fence it", "Nothing is not defined"):
        assert any(expected in p for p in found), (expected, found)
    [illustrative] = [c for c in D.commands(str(doc)) if c.block and c.block.illustrative]
    verdict = D.classify(illustrative)
    assert verdict.kind == "illustrative" and any("no option --bogus" in p for p in verdict.problems)


def test_the_good_examples_pass():
    for text in ("scoreflow evaluate --run-dir runs/x --runs 2", 'pip install -e ".[cuda,mlx]"',
                 "scoreflow optimize ... --set generator.engine=vllm",
                 "scoreflow train-adapter --run-dir runs/RUN --iteration 2 --out adapter-2 --set train.processes=8"):
        [cmd] = D.split_commands(text, "example.md", 1, D.Block("example.md", 1, "bash", text))
        assert D.classify(cmd).problems == [], text


# ---- the runs ------------------------------------------------------------------------------------

def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "2"), WANDB_MODE="offline",
               WANDB_SILENT="true", TRACKIO_DIR=str(tmp / "trackio"), SCOREFLOW_DATA=str(DATA_DIR),
               OPENAI_API_KEY="sk-doc-test-not-a-key", HF_HUB_OFFLINE="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _argv(cmd: D.Command, cwd: Path, run_dirs: list[str], base_url: str | None) -> list[str]:
    """The command as the test runs it: this Python, repository scripts by path, /tmp inside the test's
    folder, placeholders, small sizes, and a local OpenAI-compatible stand-in for api.openai.com."""
    words = []
    for w in cmd.argv:
        w = D.PLACEHOLDERS.get(w, w)
        if w.startswith("/tmp/"):
            w = str(cwd / w.lstrip("/"))
        elif re.match(r"(benchmarks|tests)/", w) and (ROOT / w).is_file():
            w = str(ROOT / w)
        words.append(w)
    prog, args = words[0], words[1:]
    if prog == "scoreflow":
        head, sub = [sys.executable, "-m", "scoreflow"], args[0]
        if "--dry-run" in args:  # nothing loads: no sizes; api.openai.com is a local stand-in
            offline = D._value(args, "--executor") == "openai" and not D._value(args, "--base-url") and base_url
            return head + args + (["--base-url", base_url] if offline else [])
        extra: list[str] = []
        for flag, value in SMALL.get(sub, []):
            given = any(a.startswith(value.split("=")[0] + "=") for a in args) if flag == "--set" else flag in args
            if not given:
                extra += [flag] if value is None else [flag, value]
        if sub == "optimize" and "--run-dir" not in args:  # the first run is runs/RUN, as the docs call it
            run_dirs.append("runs/RUN" if not run_dirs else f"runs/doc-{len(run_dirs)}")
            extra += ["--run-dir", run_dirs[-1]]
        return head + args + extra
    if prog.startswith("python"):
        if args and args[0].endswith(".py") and "--quick" in D.script_options(str(Path(args[0]).relative_to(ROOT))):
            args = [*args, "--quick"]  # the doc says --quick runs the same in seconds
        return [sys.executable, *args]
    return words


def run_commands(cmds: list[D.Command], cwd: Path, timeout: int) -> list[str]:
    """Run each command in `cwd` in order; the failures, each with the end of its output."""
    from fake_openai import FakeOpenAI

    (cwd / "problems.jsonl").write_text(json.dumps({"id": "ava", "question": "Ava has 3 apples and buys 4 more. "
                                                    "How many apples does she have?", "answer": "7"}) + "\n")
    failures, run_dirs = [], []
    env = _env(cwd)
    with FakeOpenAI() as server:
        for cmd in cmds:
            missing = [t for t in re.findall(r"--report-to[ =](\w+)", " ".join(cmd.argv)) if not importlib.util.find_spec(t)]
            if missing:  # as tests/test_trackers.py: a tracker that is not installed is skipped, with a warning
                warnings.warn(f"{cmd.where}: {cmd.text}: not run, {', '.join(missing)} not installed (the test extra)")
                continue
            argv = _argv(cmd, cwd, run_dirs, server.base_url)
            with open(cwd / cmd.stdout, "w") if cmd.stdout else contextlib.nullcontext(subprocess.PIPE) as out:
                res = subprocess.run(argv, cwd=cwd, env={**env, **cmd.env}, stdout=out, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, text=True, timeout=timeout)
            print(f"{cmd.where}: rc {res.returncode}: {' '.join(argv)}")
            if res.returncode != 0:
                failures.append(f"{cmd.where}: {cmd.text}\n  ran: {' '.join(argv)}\n  rc {res.returncode}: "
                                f"{(res.stderr or '')[-1500:]}")
    return failures


def _pairs(args: list[str]) -> list[str]:
    """A command's flags, each with its value when it takes one ("--report-to wandb")."""
    out: list[str] = []
    for a in args:
        if out and not a.startswith("-") and out[-1].startswith("-") and " " not in out[-1]:
            out[-1] += f" {a}"
        else:
            out.append(a)
    return out


def runs(inventory, tier: str) -> list[D.Command]:
    return [c for c, v in inventory if v.kind == "run" and v.why == tier]


def test_fast_commands_run(inventory, tmp_path):
    cmds = runs(inventory, "fast")
    assert any(c.program == "mkdir" for c in cmds) and any("--dry-run" in c.argv for c in cmds)
    failures = []
    for doc in D.DOCS:  # each block in a folder of its own, its commands in order
        blocks = sorted({c.block.line for c in cmds if c.doc == doc})
        for line in blocks:
            folder = tmp_path / f"{Path(doc).stem}-{line}"
            folder.mkdir()
            failures += run_commands([c for c in cmds if c.doc == doc and c.block.line == line], folder, 300)
    assert not failures, "\n".join(failures)
    reports = list(tmp_path.glob("score-dpo-*/tmp/r/report.md"))
    assert reports and all((r.parent / "score.png").is_file() for r in reports)


@pytest.mark.slow
def test_slow_commands_run(inventory, demo_run, tmp_path):
    """The README's demo (`scoreflow optimize`) is the shared demo run (tests/runs.py: small sizes, every
    tracker), copied to runs/RUN; a documented `optimize` whose flags that run already has (the tracker
    one) is checked against its command line, not run again. Then every other command that loads the
    embedded model runs on the copy: solve, export."""
    cmds = runs(inventory, "slow")
    assert cmds[0].argv == ["scoreflow", "optimize"], "the README's first run makes runs/RUN"
    if not (DATA_DIR / "gsm8k").is_dir():
        warnings.warn(f"no shared data at {DATA_DIR}")
    assert demo_run.rc == 0, demo_run.err[-3000:]
    shutil.copytree(demo_run.run_dir, tmp_path / "runs" / "RUN")
    ran = " ".join(demo_run.argv) + " "
    covered = [c for c in cmds if c.argv[:2] == ["scoreflow", "optimize"]]
    for c in covered:
        missing = [a for a in _pairs(c.argv[2:]) if f" {a} " not in ran
                   and not (a.startswith("--report-to ") and not importlib.util.find_spec(a.split()[1]))]
        assert not missing, f"{c.where}: {c.text}: the shared demo run lacks {missing}"
    failures = run_commands([c for c in cmds if c not in covered], tmp_path, 900)
    assert not failures, "\n".join(failures)
    run = tmp_path / "runs" / "RUN"
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    assert (run / "export").is_dir() or any(run.glob("**/adapter_model.safetensors"))
    assert (tmp_path / "best" / "index.jsonl").is_file()


@pytest.mark.slow
@pytest.mark.mlx
def test_mlx_commands_run(inventory, mlx_run, tmp_path):
    """docs/mlx.md's run is the shared MLX run (tests/runs.py, small sizes): its flags are checked
    against that run's command line; any other command of the page runs on a copy of it."""
    pytest.importorskip("mlx_lm")
    cmds = runs(inventory, "mlx")
    assert cmds and cmds[0].argv[:2] == ["scoreflow", "optimize"], "docs/mlx.md's first run"
    assert mlx_run.rc == 0, mlx_run.err[-3000:]
    ran = " ".join(mlx_run.argv) + " "
    missing = [a for a in _pairs(cmds[0].argv[2:]) if f" {a} " not in ran]
    assert not missing, f"{cmds[0].where}: {cmds[0].text}: the shared MLX run lacks {missing}"
    shutil.copytree(mlx_run.run_dir, tmp_path / "runs" / "RUN")
    failures = run_commands(cmds[1:], tmp_path, 900)
    assert not failures, "\n".join(failures)
    assert json.loads((tmp_path / "runs" / "RUN" / "status.json").read_text())["status"] == "finished"

