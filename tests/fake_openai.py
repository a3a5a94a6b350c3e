"""A fault-injecting OpenAI-compatible chat server on 127.0.0.1 for the executor's tests.

Each request takes the next behaviour from a script (then "ok" forever):
  "ok"               200 with a chat completion echoing the last user message
  ("429", seconds)   429 with Retry-After: seconds
  "429"              429 without Retry-After
  "500", "503"       that status
  "hang"             sleeps `hang_s` before answering (longer than the client's timeout)
  "drop"             closes the connection without a reply
  "malformed"        200 with a body that is not JSON
  "empty"            200 with "choices": []
  "401", "400"       that status, with an error message quoting the Authorization header's key
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeOpenAI:
    def __init__(self, script: list[Any] | None = None, hang_s: float = 2.0):
        self.script = list(script or [])
        self.hang_s = hang_s
        self.requests: list[dict] = []
        self.times: list[float] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with fake._lock:
                    fake.requests.append(json.loads(body or b"{}"))
                    fake.times.append(time.monotonic())
                    step = fake.script.pop(0) if fake.script else "ok"
                fake.respond(self, step, json.loads(body or b"{}"))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> "FakeOpenAI":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def respond(self, h: BaseHTTPRequestHandler, step: Any, req: dict) -> None:
        if isinstance(step, tuple) and step[0] == "429":
            return self._send(h, 429, {"error": {"message": "slow down"}}, {"Retry-After": str(step[1])})
        if step in ("429", "500", "503"):
            return self._send(h, int(step), {"error": {"message": f"fake {step}"}})
        if step in ("401", "400"):
            key = (h.headers.get("Authorization") or "").removeprefix("Bearer ")
            return self._send(h, int(step), {"error": {"message": f"Incorrect API key provided: {key}"}})
        if step == "hang":
            time.sleep(self.hang_s)
        if step == "drop":
            h.close_connection = True
            h.connection.shutdown(2)
            return None
        if step == "malformed":
            return self._raw(h, 200, b'{"id": "x", "choices": [', "application/json")
        if step == "empty":
            return self._send(h, 200, {"id": "x", "object": "chat.completion", "created": 0,
                                       "model": req.get("model", ""), "choices": [], "usage": None})
        last = next((m["content"] for m in reversed(req.get("messages", [])) if m.get("role") == "user"), "")
        text = f"echo: {last}"
        return self._send(h, 200, {
            "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": req.get("model", ""),
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        })

    def _send(self, h: BaseHTTPRequestHandler, status: int, obj: dict, headers: dict | None = None) -> None:
        self._raw(h, status, json.dumps(obj).encode(), "application/json", headers)

    @staticmethod
    def _raw(h: BaseHTTPRequestHandler, status: int, data: bytes, ctype: str, headers: dict | None = None) -> None:
        try:
            h.send_response(status)
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
