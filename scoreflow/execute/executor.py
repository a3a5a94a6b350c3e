"""The executor LLM that operators call: any OpenAI-compatible server, or a local backend model.

Every executor counts calls, tokens and cost, stops cleanly at a spend cap (StopRun from the next
call once the cap is reached; calls already in flight finish), and answers repeated deterministic
requests from a cache keyed by (messages, parameters, repetition index). The OpenAI client retries
429, 5xx, timeouts, dropped connections and malformed replies with jittered exponential backoff,
honouring Retry-After, and raises InfraError once retries run out. The local executor gathers
concurrent calls into batched generation with the adapter off (the base model).

Build one with make_executor(cfg) so caps, prices and the cache follow the config.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import asyncio
import email.utils
import os
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scoreflow.model.backend import Messages, Sampler, SamplingParams
from scoreflow.errors import StopRun, UserError
from scoreflow.errors import InfraError
from scoreflow.execute.usage import PRICES, Reply, ReplyCache, Usage, price_for  # noqa: F401  (the executor's vocabulary)

_KEYLIKE = re.compile(r"\b(sk|pk|rk|key)-[A-Za-z0-9_\-*]{6,}")


def redact(text: str, secret: str | None = None) -> str:
    """An error message without the API key (nor anything that looks like one)."""
    if secret and len(secret) >= 4:
        text = text.replace(secret, "***")
    return _KEYLIKE.sub(lambda m: m.group(1) + "-***", text)


class Executor(ABC):
    """Subclasses implement `_chat`; `chat` adds the cap check, the cache and the cost accounting.
    `rep` is the repetition index (the orchestrator's run number): identical requests with
    different `rep` are separate calls, with the same `rep` they may come from the cache. A call
    without `rep` is never cached, so callers unaware of repetitions cannot collapse them."""

    model: str = ""
    temperature: float = 0.0
    max_tokens: int = 512

    def __init__(self) -> None:
        self.usage = Usage()
        self.price: tuple[float, float] = (0.0, 0.0)
        self.max_cost_usd = 0.0
        self.max_total_tokens = 0
        self.cache: ReplyCache | None = None

    def set_caps(self, max_cost_usd: float = 0.0, max_total_tokens: int = 0) -> None:
        self.max_cost_usd, self.max_total_tokens = max_cost_usd, max_total_tokens

    def check_caps(self) -> None:
        u = self.usage
        if self.max_cost_usd > 0 and u.cost_usd >= self.max_cost_usd:
            raise StopRun(f"spend cap reached: executor cost ${u.cost_usd:.4f} >= max_cost_usd ${self.max_cost_usd:g}")
        if self.max_total_tokens > 0 and u.tokens >= self.max_total_tokens:
            raise StopRun(f"spend cap reached: executor tokens {u.tokens} >= max_total_tokens {self.max_total_tokens}")

    async def chat(self, messages: Messages, *, max_tokens: int | None = None,
                   temperature: float | None = None, rep: int | None = None) -> Reply:
        limit = self.max_tokens if max_tokens is None else max_tokens
        temp = self.temperature if temperature is None else temperature
        cache = self.cache
        if cache is None or rep is None or not cache.applies(temp):
            self.check_caps()
            return await self._chat(list(messages), limit, temp)
        key = cache.key(self.model, messages, limit, temp, rep)
        hit = cache.get(key)
        if hit is not None:
            self.usage.cache_hits += 1
            return hit
        if key in cache.inflight:  # an identical request is on its way: share its answer
            reply = await asyncio.shield(cache.inflight[key])
            self.usage.cache_hits += 1
            return reply
        self.check_caps()
        fut = asyncio.get_running_loop().create_future()
        cache.inflight[key] = fut
        try:
            reply = await self._chat(list(messages), limit, temp)
        except BaseException as e:
            if not fut.done():
                if isinstance(e, asyncio.CancelledError):
                    fut.cancel()
                else:
                    fut.set_exception(e)
                    fut.exception()  # retrieved: no "never retrieved" warning when nobody shared it
            raise
        finally:
            cache.inflight.pop(key, None)
        cache.put(key, reply)
        fut.set_result(reply)
        return reply

    @abstractmethod
    async def _chat(self, messages: Messages, max_tokens: int, temperature: float) -> Reply:
        """One request to the model behind this executor (no cache, no caps: `chat` adds those)."""

    def _account(self, reply: Reply, seconds: float) -> None:
        self.usage.add(reply, seconds, self.price)

    async def close(self) -> None:
        if self.cache is not None:
            self.cache.close()


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
            try:  # an HTTP date
                when = email.utils.parsedate_to_datetime(v)
                return max(0.0, when.timestamp() - time.time())
            except (TypeError, ValueError, OverflowError):
                continue
    return None


class RequestError(Exception):
    """The server refused this request (400, 413, 422: too long, invalid): the workflow's failure."""


class MalformedReply(Exception):
    """The server answered 200 with something that is not a chat completion."""


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
        self._redact_key = key
        self.client = openai.AsyncOpenAI(base_url=base_url or None, api_key=key, max_retries=0, timeout=timeout_s)
        self.retry = retry or RetryPolicy()
        self._sem = asyncio.Semaphore(concurrency)

    def __repr__(self) -> str:
        return f"OpenAIExecutor(model={self.model!r})"

    def _retryable(self, e: BaseException) -> bool:
        o = self._openai
        if isinstance(e, (MalformedReply, o.APIResponseValidationError, ValueError, o.RateLimitError,
                          o.APITimeoutError, o.APIConnectionError, o.InternalServerError, asyncio.TimeoutError)):
            return True
        return isinstance(e, o.APIStatusError) and (e.status_code in (408, 409, 429) or e.status_code >= 500)

    async def _chat(self, messages: Messages, max_tokens: int, temperature: float) -> Reply:
        attempt = 0
        async with self._sem:
            while True:
                t0 = time.monotonic()
                try:
                    resp = await self.client.chat.completions.create(
                        model=self.model, messages=list(messages), max_tokens=max_tokens, temperature=temperature)
                    reply = self._parse(resp)
                    self._account(reply, time.monotonic() - t0)
                    return reply
                except Exception as e:
                    o = self._openai
                    if isinstance(e, o.APIStatusError) and e.status_code in (400, 413, 422):
                        self.usage.failures += 1
                        raise RequestError(self._describe(e)) from None
                    if not self._retryable(e) or attempt >= self.retry.max_retries:
                        self.usage.failures += 1
                        raise InfraError(f"executor {self.model}: {self._describe(e)}"
                                         f" (after {attempt} retries)") from None
                    await asyncio.sleep(self.retry.delay(attempt, _retry_after(e)))
                    attempt += 1
                    self.usage.retries += 1

    @staticmethod
    def _parse(resp: Any) -> Reply:
        choices = getattr(resp, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise MalformedReply("reply has no choices")
        message = getattr(choices[0], "message", None)
        if message is None:
            raise MalformedReply("reply has no message")
        text = getattr(message, "content", None)
        if text is not None and not isinstance(text, str):
            raise MalformedReply("reply content is not text")
        usage = getattr(resp, "usage", None)
        return Reply(text or "", int(getattr(usage, "prompt_tokens", 0) or 0),
                     int(getattr(usage, "completion_tokens", 0) or 0))

    def _describe(self, e: BaseException) -> str:
        status = getattr(e, "status_code", None)
        head = f"{type(e).__name__}" + (f" (HTTP {status})" if status else "")
        return redact(f"{head}: {str(e)[:300]}", self._redact_key)

    async def close(self) -> None:
        await self.client.close()
        await super().close()


class LocalExecutor(Executor):
    """Answers executor calls from a Sampler with the adapter off, i.e. the base model (the backend in
    this process, or the vLLM server that generates for it)."""

    def __init__(self, sampler: Sampler, *, temperature: float = 0.0, max_tokens: int = 512, batch_size: int = 8,
                 gather_ms: float = 30.0, seed: int = 0):
        super().__init__()
        self.sampler = sampler
        self.model = f"local:{sampler.model_name}"
        self.temperature, self.max_tokens = temperature, max_tokens
        self.batch_size, self.gather_s = batch_size, gather_ms / 1000
        self.seed = seed
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._batches = 0

    async def _chat(self, messages: Messages, max_tokens: int, temperature: float) -> Reply:
        if self._queue is None:
            self._queue = asyncio.Queue()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.ensure_future(self._serve())
        fut = asyncio.get_running_loop().create_future()
        await self._queue.put((list(messages), min(max_tokens, self.max_tokens), temperature, fut))
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
                    outs = await asyncio.to_thread(self.sampler.generate, [i[0] for i in items], params, adapter=False)
                except Exception as e:  # the model itself failed: infrastructure
                    for item in items:
                        if not item[3].done():
                            item[3].set_exception(InfraError(f"local executor: {type(e).__name__}: {e}"))
                    continue
                dt = time.monotonic() - t0
                for item, out in zip(items, outs):
                    reply = Reply(out.text, out.prompt_tokens, out.tokens)
                    self._account(reply, dt / len(items))
                    if not item[3].done():
                        item[3].set_result(reply)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        await super().close()


def make_executor(cfg, sampler: Sampler | None = None, seed: int = 0, *, cache_path: str | Path | None = None,
                  retry: RetryPolicy | None = None, usage: Usage | dict | None = None) -> Executor:
    """The executor the config describes (an ExecutorConfig), with prices, caps and cache applied.
    `usage` carries what an earlier session spent (resume), so caps count it."""
    if cfg.kind == "local":
        if sampler is None:
            raise UserError("executor.kind = local needs a loaded backend model")
        ex: Executor = LocalExecutor(sampler, temperature=cfg.temperature, max_tokens=cfg.max_tokens,
                                     batch_size=cfg.batch_size, seed=seed)
        price: tuple[float, float] | None = (0.0, 0.0)
    elif cfg.kind == "openai":
        if not cfg.model:
            raise UserError("executor.model must name the model to request when executor.kind = openai")
        ex = OpenAIExecutor(cfg.model, base_url=cfg.base_url, api_key_env=cfg.api_key_env,
                            temperature=cfg.temperature, max_tokens=cfg.max_tokens, concurrency=cfg.concurrency,
                            timeout_s=cfg.timeout_s, retry=retry or RetryPolicy(max_retries=cfg.max_retries))
        price = price_for(cfg.model) or ((0.0, 0.0) if cfg.base_url else None)
    else:
        raise UserError(f"executor.kind = {cfg.kind!r}: choose local or openai")
    if cfg.price_in_per_mtok >= 0 or cfg.price_out_per_mtok >= 0:
        base = price or (0.0, 0.0)
        price = (cfg.price_in_per_mtok if cfg.price_in_per_mtok >= 0 else base[0],
                 cfg.price_out_per_mtok if cfg.price_out_per_mtok >= 0 else base[1])
    if price is None:
        if cfg.max_cost_usd > 0:
            raise UserError(f"no built-in price for executor model {cfg.model!r}: set executor.price_in_per_mtok "
                            "and executor.price_out_per_mtok, or use max_total_tokens")
        price = (0.0, 0.0)
    ex.price = price
    ex.set_caps(cfg.max_cost_usd, cfg.max_total_tokens)
    if usage is not None:
        ex.usage = usage if isinstance(usage, Usage) else Usage.from_dict(usage)
    if cfg.cache:
        ex.cache = ReplyCache(cache_path)
    return ex
