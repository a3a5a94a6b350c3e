"""The executor LLM that operators call: any OpenAI-compatible server, or a local backend model.

Both count calls and tokens. The OpenAI client retries 429, 5xx, timeouts and dropped
connections with jittered exponential backoff, honouring Retry-After. The local executor
gathers concurrent calls into batched generation with the adapter off (the base model).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

from .backend import Messages, SamplingParams
from .sandbox import InfraError


@dataclass
class Reply:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Usage:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0
    failures: int = 0
    seconds: float = 0.0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, reply: Reply, seconds: float) -> None:
        self.calls += 1
        self.prompt_tokens += reply.prompt_tokens
        self.completion_tokens += reply.completion_tokens
        self.seconds += seconds


class Executor:
    model: str = ""

    def __init__(self) -> None:
        self.usage = Usage()

    async def chat(self, messages: Messages, *, max_tokens: int | None = None,
                   temperature: float | None = None) -> Reply:
        raise NotImplementedError

    async def close(self) -> None:
        return None


@dataclass
class RetryPolicy:
    max_retries: int = 6
    base_s: float = 1.0
    cap_s: float = 60.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.cap_s)
        return self.rng.uniform(0, min(self.cap_s, self.base_s * 2 ** attempt))  # full jitter


def _retry_after(err: Any) -> float | None:
    resp = getattr(err, "response", None)
    headers = getattr(resp, "headers", None) or {}
    for key in ("retry-after-ms", "retry-after"):
        v = headers.get(key) if hasattr(headers, "get") else None
        if v is None:
            continue
        try:
            return float(v) / (1000.0 if key.endswith("-ms") else 1.0)
        except ValueError:
            continue
    return None


class OpenAIExecutor(Executor):
    def __init__(self, model: str, *, base_url: str = "", api_key_env: str = "OPENAI_API_KEY",
                 temperature: float = 0.0, max_tokens: int = 512, concurrency: int = 8,
                 timeout_s: float = 120.0, retry: RetryPolicy | None = None):
        super().__init__()
        import openai

        self._openai = openai
        self.model = model
        self.temperature, self.max_tokens = temperature, max_tokens
        key = os.environ.get(api_key_env) or "not-needed"  # local servers accept any key
        self.client = openai.AsyncOpenAI(base_url=base_url or None, api_key=key, max_retries=0, timeout=timeout_s)
        self.retry = retry or RetryPolicy()
        self._sem = asyncio.Semaphore(concurrency)

    def _retryable(self, e: Exception) -> bool:
        o = self._openai
        if isinstance(e, (o.RateLimitError, o.APITimeoutError, o.APIConnectionError, o.InternalServerError)):
            return True
        return isinstance(e, o.APIStatusError) and (e.status_code in (408, 409, 429) or e.status_code >= 500)

    async def chat(self, messages: Messages, *, max_tokens: int | None = None,
                   temperature: float | None = None) -> Reply:
        attempt = 0
        async with self._sem:
            while True:
                t0 = time.monotonic()
                try:
                    resp = await self.client.chat.completions.create(
                        model=self.model, messages=list(messages),
                        max_tokens=max_tokens or self.max_tokens,
                        temperature=self.temperature if temperature is None else temperature,
                    )
                    choice = resp.choices[0] if resp.choices else None
                    text = (choice.message.content if choice and choice.message else None) or ""
                    usage = getattr(resp, "usage", None)
                    reply = Reply(text, getattr(usage, "prompt_tokens", 0) or 0,
                                  getattr(usage, "completion_tokens", 0) or 0)
                    self.usage.add(reply, time.monotonic() - t0)
                    return reply
                except Exception as e:
                    malformed = isinstance(e, (AttributeError, TypeError, ValueError, KeyError, IndexError))
                    if not (malformed or self._retryable(e)) or attempt >= self.retry.max_retries:
                        self.usage.failures += 1
                        raise InfraError(f"executor {self.model}: {type(e).__name__}: {str(e)[:200]}") from None
                    await asyncio.sleep(self.retry.delay(attempt, _retry_after(e)))
                    attempt += 1
                    self.usage.retries += 1

    async def close(self) -> None:
        await self.client.close()


class LocalExecutor(Executor):
    """Answers executor calls from a backend model in this process (adapter off, i.e. the base model)."""

    def __init__(self, backend, *, temperature: float = 0.0, max_tokens: int = 512, batch_size: int = 8,
                 gather_ms: float = 30.0, seed: int = 0):
        super().__init__()
        self.backend = backend
        self.model = f"local:{backend.model_name}"
        self.temperature, self.max_tokens = temperature, max_tokens
        self.batch_size, self.gather_s = batch_size, gather_ms / 1000
        self.seed = seed
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._batches = 0

    async def chat(self, messages: Messages, *, max_tokens: int | None = None,
                   temperature: float | None = None) -> Reply:
        if self._queue is None:
            self._queue = asyncio.Queue()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.ensure_future(self._serve())
        fut = asyncio.get_running_loop().create_future()
        limit = min(max_tokens or self.max_tokens, self.max_tokens)
        temp = self.temperature if temperature is None else temperature
        await self._queue.put((list(messages), limit, temp, fut))
        return await fut

    async def _serve(self) -> None:
        assert self._queue is not None
        while True:
            first = await self._queue.get()
            batch = [first]
            deadline = time.monotonic() + self.gather_s
            while len(batch) < self.batch_size:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), timeout))
                except asyncio.TimeoutError:
                    break
            # One generation per (max_tokens, temperature) group.
            groups: dict[tuple[int, float], list] = {}
            for item in batch:
                groups.setdefault((item[1], item[2]), []).append(item)
            for (limit, temp), items in groups.items():
                self._batches += 1
                params = SamplingParams(temperature=temp, top_p=1.0, max_new_tokens=limit, stop=(),
                                        seed=self.seed + self._batches)
                t0 = time.monotonic()
                try:
                    outs = await asyncio.to_thread(self.backend.generate, [i[0] for i in items], params, adapter=False)
                except Exception as e:  # the model itself failed: infrastructure
                    for item in items:
                        if not item[3].done():
                            item[3].set_exception(InfraError(f"local executor: {type(e).__name__}: {e}"))
                    continue
                dt = time.monotonic() - t0
                for item, out in zip(items, outs):
                    prompt_tokens = self._count(item[0])
                    reply = Reply(out.text, prompt_tokens, out.tokens)
                    self.usage.add(reply, dt / len(items))
                    if not item[3].done():
                        item[3].set_result(reply)

    def _count(self, messages: Messages) -> int:
        fmt = getattr(self.backend, "fmt", None)
        return len(fmt.prompt_ids(messages)) if fmt is not None else 0

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
