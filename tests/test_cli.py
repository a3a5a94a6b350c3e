"""The command line (scoreflow/cli/): bad input ends with one clear line on stderr, exit code 2, no
traceback and no half-made run directory; each subcommand shows and accepts only the flags whose config
key can affect it, and `--set` reaches every key; output into a pipe the reader closes ends quietly; and,
marked slow, `run-workflow` on the embedded model."""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from runs import ROOT, env
from scoreflow import config as C
from scoreflow.cli import flags, main as cli


# ==== Bad input ends with one clear line on stderr, exit code 2, no traceback, no half-made run directory.
# (was tests/test_cli_errors.py)

def scoreflow(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SCOREFLOW_DATA": ""}
    return subprocess.run([sys.executable, "-m", "scoreflow", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def cases(tmp: Path) -> list[tuple[str, list[str], str]]:
    gsm = tmp / "gsm"
    write(gsm / "empty" / "gsm8k_validate.jsonl", "")
    write(gsm / "broken" / "gsm8k_validate.jsonl", '{"question": "q", "answer": "1"}\n{"question": \n')
    write(gsm / "fields" / "gsm8k_validate.jsonl", '{"question": "q"}\n')
    write(gsm / "nonnum" / "gsm8k_validate.jsonl", '{"question": "q", "answer": "many"}\n')
    write(tmp / "bad.toml", "[run\ntask = 'arith'\n")
    write(tmp / "unknown_key.toml", "[run]\ntaks = 'arith'\n")
    write(tmp / "unknown_section.toml", "[runner]\ntask = 'arith'\n")
    write(tmp / "wrong_type.toml", "[train]\nbeta = 'high'\n")
    write(tmp / "latin1.toml", b"[run]\ntask = '\xe9'\n")
    write(tmp / "zero_k.toml", "[generator]\nworkflows_per_problem = 0\n")
    (tmp / "folder.toml").mkdir()
    write(tmp / "full" / "config.toml", "[run]\ntask = 'arith'\n")
    write(tmp / "full" / "metrics.jsonl", "")
    write(tmp / "wf.py", "async def run_workflow(self):\n    return 'x'\n")
    r = str(tmp / "run")
    return [
        ("missing data file", ["optimize", "--task", "gsm8k", "--data", str(tmp / "nope.jsonl"), "--run-dir", r], "does not exist"),
        ("empty dataset", ["optimize", "--task", "gsm8k", "--data", str(gsm / "empty"), "--run-dir", r], "empty"),
        ("broken JSONL line", ["optimize", "--task", "gsm8k", "--data", str(gsm / "broken"), "--run-dir", r], "broken JSON"),
        ("missing fields", ["optimize", "--task", "gsm8k", "--data", str(gsm / "fields"), "--run-dir", r], "lacks field"),
        ("non-numeric answer", ["optimize", "--task", "gsm8k", "--data", str(gsm / "nonnum"), "--run-dir", r], "not a number"),
        ("no data given", ["optimize", "--task", "gsm8k", "--run-dir", r], "--data"),
        ("malformed TOML", ["optimize", "--config", str(tmp / "bad.toml"), "--run-dir", r], "malformed TOML"),
        ("unknown key", ["optimize", "--config", str(tmp / "unknown_key.toml"), "--run-dir", r], "unknown config key"),
        ("unknown section", ["optimize", "--config", str(tmp / "unknown_section.toml"), "--run-dir", r], "unknown section"),
        ("wrong type", ["optimize", "--config", str(tmp / "wrong_type.toml"), "--run-dir", r], "must be a number"),
        ("config not UTF-8", ["optimize", "--config", str(tmp / "latin1.toml"), "--run-dir", r], "UTF-8"),
        ("config is a folder", ["optimize", "--config", str(tmp / "folder.toml"), "--run-dir", r], "folder"),
        ("missing config", ["optimize", "--config", str(tmp / "nope.toml"), "--run-dir", r], "not found"),
        ("zero workflows per problem", ["optimize", "--config", str(tmp / "zero_k.toml"), "--run-dir", r], "positive"),
        ("negative problems", ["optimize", "--problems", "-3", "--run-dir", r], "at least 0"),
        ("unknown task", ["optimize", "--task", "chess", "--run-dir", r], "unknown task"),
        ("unknown backend", ["optimize", "--backend", "tpu", "--run-dir", r], "choose one of"),
        ("unknown loss", ["optimize", "--loss", "ppo", "--run-dir", r], "choose one of"),
        ("malformed --set", ["optimize", "--set", "beta=1", "--run-dir", r], "section.key=value"),
        ("model path missing", ["optimize", "--model", str(tmp / "no-model"), "--run-dir", r], "does not exist"),
        ("run dir not empty", ["optimize", "--run-dir", str(tmp / "full")], "--resume"),
        ("nothing to resume", ["optimize", "--resume", "--run-dir", str(tmp / "empty-run")], "nothing to resume"),
        ("resume with another config", ["optimize", "--resume", "--task", "gsm8k", "--data", str(gsm / "fields"),
                                        "--run-dir", str(tmp / "full")], "another configuration"),
        ("workflow index out of range", ["run-workflow", "--workflow", str(tmp / "wf.py"), "--index", "999"], "out of range"),
        ("workflow file missing", ["run-workflow", "--workflow", str(tmp / "none.py")], "cannot read"),
        ("export without adapters", ["export", str(tmp / "full"), "--to", "peft"], "adapters"),
    ]


def clean_failure(name: str, rc: int, out: str, err: str, expected: str) -> str | None:
    """What is wrong with a bad input's ending (None: exit code 2, one `scoreflow: error:` line naming
    `expected`, no traceback)."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    ok = (rc == 2 and len(lines) == 1 and lines[0].startswith("scoreflow: error:")
          and expected.lower() in lines[0].lower() and "Traceback" not in err + out)
    return None if ok else f"{name}: rc={rc} stderr={err.strip()[-300:]!r}"


def test_bad_inputs_fail_cleanly(tmp_path, monkeypatch, capsys):
    """Each case through the command line's own entry point, in this process (what `python -m scoreflow`
    runs: scoreflow/__main__.py exits with main()'s code); two of them also as real processes below."""
    monkeypatch.setenv("SCOREFLOW_DATA", "")
    monkeypatch.chdir(tmp_path)
    failures = []
    for name, args, expected in cases(tmp_path):
        rc = cli.main(args)
        out, err = capsys.readouterr()
        failures.append(clean_failure(name, rc, out, err, expected))
        assert not (tmp_path / "run").exists(), f"{name}: left a run directory behind"
    assert not [f for f in failures if f], "\n".join(f for f in failures if f)
    assert len(cases(tmp_path / "again")) >= 15


@pytest.mark.parametrize("name", ["broken JSONL line", "unknown backend"])
def test_bad_input_fails_cleanly_in_a_real_process(tmp_path, name):
    """The exit code and stderr of a real `python -m scoreflow` process: a bad data file (found while the
    command runs) and a bad flag value (refused by the configuration's checks)."""
    [(_, args, expected)] = [c for c in cases(tmp_path) if c[0] == name]
    res = scoreflow(*args, cwd=tmp_path)
    failure = clean_failure(name, res.returncode, res.stdout, res.stderr, expected)
    assert failure is None, failure
    assert not (tmp_path / "run").exists(), f"{name}: left a run directory behind"


# ==== Per-command flags: each subcommand shows and accepts only the flags whose config key can affect it;
# `--set` reaches every key and warns (one line on stderr) when the key cannot affect the command. (was
# tests/test_cli_flags.py)

TRAINING_AND_COUNTS = ("--iterations", "-k", "--loss", "--pairs", "--alpha", "--lr")


def help_flags(command: str) -> set[str]:
    sub = next(a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction))
    text = sub.choices[command].format_help()
    return set(re.findall(r"^\s{2}(-k|--[a-z][a-z-]*)", text, re.M))


def test_evaluate_help_lists_no_training_or_generation_count_flag():
    shown = help_flags("evaluate")
    assert not shown & set(TRAINING_AND_COUNTS), shown & set(TRAINING_AND_COUNTS)
    assert {"--task", "--data", "--test-problems", "--runs", "--model", "--executor", "--iteration", "--run-dir",
            "--dry-run", "--set", "--config"} <= shown


def test_evaluate_help_from_the_command_line():
    res = subprocess.run([sys.executable, "-m", "scoreflow", "evaluate", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0
    for flag in TRAINING_AND_COUNTS:
        assert not re.search(rf"^\s+{re.escape(flag)}\b", res.stdout, re.M), flag


def test_each_command_shows_exactly_the_flags_that_affect_it():
    for command in ("optimize", "evaluate", "run-workflow"):
        shown = help_flags(command)
        for flag, section, key, _, _ in flags.FLAGS:
            assert (flag in shown) == (command in flags.key_scope(section, key)), (command, flag)
    assert {f for f, *_ in flags.FLAGS} <= help_flags("optimize")  # optimize takes them all
    assert not {"-k", "--runs", "--iterations", "--problems", "--test-problems", "--loss"} & help_flags("run-workflow")


def test_the_scope_tables_name_real_keys_and_optimize_is_affected_by_every_key():
    keys = C.as_dict(C.Config())
    assert set(flags.SECTION_SCOPE) == set(keys)
    for section, key in flags.KEY_SCOPE:
        assert key in keys[section], f"{section}.{key}"
    for flag, section, key, _, _ in flags.FLAGS:
        assert key in keys[section], flag
    for section, values in keys.items():
        for key in values:
            scope = flags.key_scope(section, key)
            assert "optimize" in scope and scope <= set(flags.CONFIG_COMMANDS), f"{section}.{key}"


def test_a_flag_given_to_a_command_it_cannot_affect_is_refused_with_a_hint(capsys):
    with pytest.raises(SystemExit) as e:
        cli.parser().parse_args(["evaluate", "-k", "3", "--run-dir", "x"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "-k cannot affect `scoreflow evaluate`" in err and "optimize" in err
    assert "--set generator.workflows_per_problem=" in err
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["run-workflow", "--workflow", "w.py", "--runs=2"])
    assert "--runs cannot affect `scoreflow run-workflow`" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # an unknown flag keeps argparse's plain message
        cli.parser().parse_args(["evaluate", "--bogus"])
    err = capsys.readouterr().err
    assert "unrecognized arguments: --bogus" in err and "cannot affect" not in err


def test_flags_still_reach_their_keys():
    args = cli.parser().parse_args(["evaluate", "--runs", "2", "--test-problems", "5", "--task", "gsm8k"])
    cfg = flags.build_config(args)
    assert (cfg.executor.runs, cfg.run.test_problems, cfg.run.task) == (2, 5, "gsm8k")
    args = cli.parser().parse_args(["optimize", "-k", "3", "--loss", "dpo", "--alpha", "1", "--lr", "2e-5"])
    cfg = flags.build_config(args)
    assert (cfg.generator.workflows_per_problem, cfg.train.loss, cfg.train.sampling_alpha,
            cfg.train.learning_rate) == (3, "dpo", 1.0, 2e-5)


def test_inapplicable_set_keys():
    f = flags.inapplicable_set_keys
    assert sorted(f(["train.pairs=3", "executor.runs=2", "generator.workflows_per_problem=2"], "evaluate")) == \
        ["generator.workflows_per_problem", "train.pairs"]
    assert f(["train.pairs=3", "run.iterations=2", "lora.rank=4", "sandbox.timeout_s=3"], "optimize") == []
    assert sorted(f(["executor.runs=2", "generator.temperature=0.1", "lora.rank=4", "executor.model=m",
                     "generator.model=x"], "run-workflow")) == ["executor.runs", "generator.temperature", "lora.rank"]
    assert sorted(f(["generator.max_attempts=2", "executor.runs=3", "generator.temperature=0.1"], "solve")) == \
        ["executor.runs", "generator.max_attempts"]
    assert f(["train.nonsense=1", "nosection.key=2"], "evaluate") == []  # left to the configuration's own error


def test_set_warns_once_on_stderr_and_still_sets_the_key(tmp_path, capsys):
    rc = cli.main(["evaluate", "--dry-run", "--iteration", "0", "--run-dir", str(tmp_path / "new"),
                   "--set", "train.pairs=3", "--set", "run.iterations=4", "--set", "executor.runs=2"])
    assert rc == 0
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("scoreflow: warning: --set") and "train.pairs" in lines[0] and "run.iterations" in lines[0]
    assert "executor.runs" not in lines[0] and "`scoreflow evaluate`" in lines[0]
    args = cli.parser().parse_args(["evaluate", "--set", "train.pairs=3"])
    assert flags.build_config(args).train.pairs == 3  # set anyway: --set stays the escape hatch
    rc = cli.main(["optimize", "--dry-run", "--run-dir", str(tmp_path / "new2"), "--set", "train.pairs=3",
                   "--set", "run.iterations=1"])
    assert rc == 0 and "warning" not in capsys.readouterr().err


def test_malformed_set_still_fails_with_one_line(tmp_path, capsys):
    assert cli.main(["evaluate", "--dry-run", "--iteration", "0", "--run-dir", str(tmp_path / "n"),
                     "--set", "pairs=3"]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("scoreflow: error:") and "section.key=value" in lines[0]


def test_solve_set_warns(capsys):
    flags.warn_inapplicable_set(argparse.Namespace(set=["train.pairs=2", "executor.model=m"]), "solve")
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "train.pairs" in err and "executor.model" not in err


def test_run_workflow_keeps_its_flags(tmp_path):
    wf = Path(tmp_path / "wf.py")
    wf.write_text("async def run_workflow(self):\n    return 'x'\n")
    args = cli.parser().parse_args(["run-workflow", "--workflow", str(wf), "--task", "gsm8k", "--seed", "3",
                                    "--executor", "openai", "--executor-model", "m", "--max-cost-usd", "1"])
    cfg = flags.build_config(args)
    assert (cfg.run.task, cfg.run.seed, cfg.executor.kind, cfg.executor.max_cost_usd) == ("gsm8k", 3, "openai", 1.0)


def test_report_runs_and_show_take_options_before_the_run(tmp_path, capsys):
    """`report --out DIR RUN`: options before the run directory reach the command whole."""
    ns = cli.parser().parse_args(["report", "--out", "o", "RUN", "--compare", "B"])
    assert (ns.command, str(ns.run_dir), str(ns.out), [str(c) for c in ns.compare], ns.debug) == (
        "report", "RUN", "o", ["B"], False)
    ns = cli.parser().parse_args(["--debug", "show", "--problem", "1", "RUN"])
    assert (ns.command, str(ns.run_dir), ns.problem, ns.debug) == ("show", "RUN", "1", True)
    assert cli.main(["show", "--problem", "1", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "unrecognized" not in err and "no run directory" in err


# ==== Output into a pipe the reader closes (was in tests/test_interop.py)

@pytest.mark.skipif(not hasattr(fcntl, "F_SETPIPE_SZ"), reason="needs Linux pipes of a settable size")
@pytest.mark.parametrize("unbuffered", ["", "1"])
def test_piped_output_closes_quietly(tmp_path, unbuffered):
    """`scoreflow config | head -1`: the reader closes after one line while scoreflow still has output
    to write; scoreflow exits 0, says nothing, and saves no error log."""
    read, write = os.pipe()
    # One page: `config` (~7 kB) cannot fit, so scoreflow is still writing when the reader closes.
    fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, 4096)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env.update(TMPDIR=str(tmp_path), PYTHONUNBUFFERED=unbuffered)
    proc = subprocess.Popen([sys.executable, "-m", "scoreflow", "config"], stdout=write, stderr=subprocess.PIPE,
                            env=env, cwd=ROOT)
    os.close(write)
    line = b""
    while not line.endswith(b"\n"):  # byte by byte: the page stays full until the pipe closes
        line += os.read(read, 1)
    os.close(read)
    _, err = proc.communicate(timeout=120)
    assert line.strip()  # the first line arrived
    assert proc.returncode == 0, err.decode()[-2000:]
    assert err == b""
    assert not list(tmp_path.glob("scoreflow-error-*.log"))


@pytest.mark.parametrize("args", [["--help"], ["runs", "tests"], ["config"]], ids=" ".join)
def test_output_into_a_closed_pipe_ends_quietly(tmp_path, args):
    """The reader is gone before the first write (argparse's help, rich's table, plain print)."""
    read, write = os.pipe()
    os.close(read)
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "scoreflow", *args], stdout=write, stderr=subprocess.PIPE, env=env,
                       cwd=ROOT, timeout=120)
    os.close(write)
    assert (r.returncode, r.stderr) == (0, b"")
    assert not list(tmp_path.glob("scoreflow-error-*.log"))


# ==== run-workflow on the embedded model (was in tests/test_e2e.py)

SMALL_RUN = ("--set", "executor.max_tokens=24", "--set", "sandbox.timeout_s=3")


def run_workflow(tmp_path: Path, source: str, *extra: str) -> dict:
    """`scoreflow run-workflow` in a real process: its exit code and its last line, the verdict."""
    wf = tmp_path / "wf.py"
    wf.write_text(source)
    res = subprocess.run([sys.executable, "-m", "scoreflow", "run-workflow", "--workflow", str(wf), *SMALL_RUN, *extra],
                         cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def run_workflow_here(tmp_path: Path, capsys, source: str, *extra: str) -> dict:
    """The same command through cli.main in this process (no interpreter start-up or imports per case)."""
    wf = tmp_path / "wf.py"
    wf.write_text(source)
    assert cli.main(["run-workflow", "--workflow", str(wf), *SMALL_RUN, *extra]) == 0, capsys.readouterr().err[-2000:]
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.slow
def test_run_workflow_verdicts(tmp_path, monkeypatch, capsys):
    """The policy's rejections and the sandbox's timeout in this process; a workflow that runs, in a real
    process (`python -m scoreflow run-workflow`: exit code 0, the verdict as its last line)."""
    monkeypatch.chdir(tmp_path)
    bad = run_workflow_here(tmp_path, capsys, "async def run_workflow(self):\n    import os\n    return os.getcwd()\n")
    assert bad["status"] == "rejected" and "import" in bad["reason"] and bad["score"] == 0
    opened = run_workflow_here(tmp_path, capsys, "async def run_workflow(self):\n    return open('/etc/passwd').read()\n")
    assert opened["status"] == "rejected" and opened["score"] == 0
    dunder = run_workflow_here(tmp_path, capsys, "async def run_workflow(self):\n    return self.__class__.__name__\n")
    assert dunder["status"] == "rejected"
    loop = run_workflow_here(tmp_path, capsys, "async def run_workflow(self):\n    x = await self.custom(input=self.problem, "
                             "instruction='Solve it.')\n    while True:\n        x = x + ''\n    return x\n")
    assert loop["status"] == "timeout" and loop["score"] == 0, loop
    ok = run_workflow(tmp_path, "async def run_workflow(self):\n    return await self.programmer(problem=self.problem)\n",
                      "--index", "3")
    assert ok["status"] == "ok" and ok["executor_calls"] >= 1 and ok["score"] in (0.0, 1.0), ok
