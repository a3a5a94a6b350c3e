"""The OpenAI executor against a fault-injecting local server: retries, Retry-After, infra versus
workflow failures, redacted errors, spend caps, and the reply cache."""

from __future__ import annotations

import asyncio
import json
import random
import time

import pytest

from scoreflow.config import ExecutorConfig
from scoreflow.errors import StopRun, UserError
from scoreflow.execute.executor import (Executor, OpenAIExecutor, ReplyCache, Reply, RequestError, RetryPolicy, Usage,
                                make_executor, price_for, redact)
from scoreflow.errors import InfraError
from fake_openai import FakeOpenAI

MSG = [{"role": "user", "content": "hi"}]
SECRET = "sk-test-DO-NOT-LEAK-0123456789abcdef"


def fast(retries: int = 4) -> RetryPolicy:
    return RetryPolicy(max_retries=retries, base_s=0.01, cap_s=1.0, rng=random.Random(0))


def executor(server: FakeOpenAI, retries: int = 4, timeout_s: float = 5.0, **kw) -> OpenAIExecutor:
    return OpenAIExecutor("gpt-4o-mini", base_url=server.base_url, retry=fast(retries), timeout_s=timeout_s, **kw)


async def one(ex: Executor, **kw) -> Reply:
    try:
        return await ex.chat(MSG, max_tokens=8, **kw)
    finally:
        await ex.close()


def test_ok_counts_tokens_and_cost():
    with FakeOpenAI() as s:
        ex = executor(s)
        ex.price = price_for("gpt-4o-mini")
        r = asyncio.run(one(ex))
    assert r.text == "echo: hi" and (r.prompt_tokens, r.completion_tokens) == (10, 5)
    assert ex.usage.calls == 1 and ex.usage.retries == 0
    assert ex.usage.cost_usd == pytest.approx((10 * 0.15 + 5 * 0.60) / 1e6)


def test_429_honours_retry_after_then_succeeds():
    with FakeOpenAI([("429", 0.3), "ok"]) as s:
        ex = executor(s)
        r = asyncio.run(one(ex))
        gap = s.times[1] - s.times[0]
    assert r.text == "echo: hi" and ex.usage.retries == 1
    assert gap >= 0.28, f"retried after {gap:.3f}s, Retry-After said 0.3"


@pytest.mark.parametrize("fault", ["500", "503", "429", "drop", "malformed", "empty"])
def test_transient_faults_are_retried(fault):
    with FakeOpenAI([fault, fault, "ok"]) as s:
        ex = executor(s)
        r = asyncio.run(one(ex))
        assert len(s.requests) == 3
    assert r.text == "echo: hi" and ex.usage.retries == 2 and ex.usage.failures == 0


def test_hang_past_timeout_is_retried():
    with FakeOpenAI(["hang", "ok"], hang_s=1.5) as s:
        ex = executor(s, timeout_s=0.3)
        t0 = time.monotonic()
        r = asyncio.run(one(ex))
    assert r.text == "echo: hi" and ex.usage.retries == 1
    assert time.monotonic() - t0 < 1.4


def test_persistent_failure_raises_infra_error_after_retries():
    with FakeOpenAI(["500"] * 10) as s:
        ex = executor(s, retries=3)
        with pytest.raises(InfraError, match="after 3 retries"):
            asyncio.run(one(ex))
        assert len(s.requests) == 4
    assert ex.usage.failures == 1


def test_backoff_grows_exponentially_with_jitter():
    p = RetryPolicy(base_s=1.0, cap_s=8.0, rng=random.Random(1))
    samples = [[p.delay(a, None) for _ in range(200)] for a in range(5)]
    assert all(0 <= d <= min(8.0, 2 ** a) for a, s in enumerate(samples) for d in s)
    means = [sum(s) / len(s) for s in samples]
    assert means[0] < means[1] < means[2] < means[3]
    assert len({round(d, 6) for d in samples[3]}) > 100  # jittered, not a fixed schedule
    assert p.delay(0, 2.5) == 2.5 and p.delay(0, 100.0) == 8.0


def test_bad_request_is_the_workflows_failure_and_auth_is_infra(monkeypatch):
    monkeypatch.setenv("SCOREFLOW_TEST_KEY", SECRET)
    with FakeOpenAI(["400", "401"]) as s:
        ex = executor(s, api_key_env="SCOREFLOW_TEST_KEY")
        with pytest.raises(RequestError) as bad:
            asyncio.run(ex.chat(MSG))
        ex = executor(s, api_key_env="SCOREFLOW_TEST_KEY")
        with pytest.raises(InfraError) as auth:
            asyncio.run(one(ex))
        assert len(s.requests) == 2  # neither was retried
    for err in (bad.value, auth.value):
        assert SECRET not in str(err) and "DO-NOT-LEAK" not in str(err), str(err)
        assert SECRET not in repr(err)
    assert SECRET not in repr(ex)


def test_connection_refused_is_infra_error_without_key(monkeypatch):
    monkeypatch.setenv("SCOREFLOW_TEST_KEY", SECRET)
    with FakeOpenAI() as s:
        url = s.base_url
    ex = OpenAIExecutor("gpt-4o-mini", base_url=url, api_key_env="SCOREFLOW_TEST_KEY", retry=fast(1), timeout_s=2)
    with pytest.raises(InfraError) as e:
        asyncio.run(one(ex))
    assert SECRET not in str(e.value)


def test_redact():
    assert "abc123xyz" not in redact("bad key sk-proj-abc123xyz789 given")
    assert redact("token hunter22 here", "hunter22") == "token *** here"


def test_price_table():
    assert price_for("gpt-4o-mini") == (0.15, 0.60)
    assert price_for("gpt-4o-mini-2024-07-18") == (0.15, 0.60)
    assert price_for("gpt-4o") == (2.50, 10.0)
    assert price_for("openai/gpt-4.1-nano") == (0.10, 0.40)
    assert price_for("llama3") is None


def cfg(**kw) -> ExecutorConfig:
    c = ExecutorConfig()
    c.kind = "openai"
    c.model = "gpt-4o-mini"
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def test_token_cap_stops_from_the_next_call():
    async def go(ex):
        await ex.chat(MSG, rep=0)
        await ex.chat(MSG, rep=1)  # 30 tokens: the cap is reached
        with pytest.raises(StopRun, match="spend cap reached"):
            await ex.chat(MSG, rep=2)
        await ex.close()

    with FakeOpenAI() as s:
        ex = make_executor(cfg(base_url=s.base_url, max_total_tokens=30), retry=fast())
        asyncio.run(go(ex))
        assert len(s.requests) == 2


def test_cost_cap_with_price_override_and_resume():
    async def go(ex, n):
        for i in range(n):
            await ex.chat(MSG, rep=i)
        await ex.close()

    with FakeOpenAI() as s:
        # 15 tokens per call at $1e6/Mtok in and out = $15 per call; cap $20 stops the third call.
        c = cfg(base_url=s.base_url, max_cost_usd=20.0, price_in_per_mtok=1e6, price_out_per_mtok=1e6)
        ex = make_executor(c, retry=fast())
        with pytest.raises(StopRun):
            asyncio.run(go(ex, 3))
        spent = ex.usage.as_dict()
        assert spent["cost_usd"] == pytest.approx(30.0) and len(s.requests) == 2
        # --resume with a raised cap carries the spend and continues
        c.max_cost_usd = 50.0
        ex2 = make_executor(c, retry=fast(), usage=spent)
        with pytest.raises(StopRun):
            asyncio.run(go(ex2, 3))
        assert len(s.requests) == 4 and ex2.usage.cost_usd == pytest.approx(60.0)


def test_unknown_model_with_cost_cap_needs_prices():
    with pytest.raises(UserError, match="price"):
        make_executor(cfg(model="mystery-model", max_cost_usd=1.0))
    assert make_executor(cfg(model="mystery-model", base_url="http://127.0.0.1:9/v1")).price == (0.0, 0.0)
    with pytest.raises(UserError):
        make_executor(cfg(kind="local"))


def test_cache_keys_on_rep_and_params():
    async def go(ex):
        a = await ex.chat(MSG, rep=0)
        b = await ex.chat(MSG, rep=0)  # cached
        c = await ex.chat(MSG, rep=1)  # another repetition: a real call
        d = await ex.chat(MSG, rep=0, max_tokens=7)  # other params: a real call
        e = await ex.chat(MSG, rep=0, temperature=0.7)  # sampled: never cached
        f = await ex.chat(MSG, rep=0, temperature=0.7)
        await ex.chat(MSG)  # no repetition index: never cached
        await ex.chat(MSG)
        await asyncio.gather(*[ex.chat([{"role": "user", "content": "same"}], rep=5) for _ in range(4)])
        await ex.close()
        return a, b, c, d, e, f

    with FakeOpenAI() as s:
        ex = make_executor(cfg(base_url=s.base_url), retry=fast())
        replies = asyncio.run(go(ex))
        assert len(s.requests) == 8  # a, c, d, e, f, the two without rep, one of the four concurrent calls
    assert all(r.text == "echo: hi" for r in replies)
    assert ex.usage.cache_hits == 4 and ex.usage.calls == 8


def test_cache_off_and_persisted(tmp_path):
    async def go(ex, n=2):
        for _ in range(n):
            await ex.chat(MSG, rep=0)
        await ex.close()

    with FakeOpenAI() as s:
        asyncio.run(go(make_executor(cfg(base_url=s.base_url, cache=False), retry=fast())))
        assert len(s.requests) == 2
        path = tmp_path / "cache.jsonl"
        asyncio.run(go(make_executor(cfg(base_url=s.base_url), retry=fast(), cache_path=path)))
        assert len(s.requests) == 3
        ex = make_executor(cfg(base_url=s.base_url), retry=fast(), cache_path=path)
        asyncio.run(go(ex))
        assert len(s.requests) == 3 and ex.usage.cache_hits == 2  # a resumed run does not pay twice
    assert SECRET not in path.read_text()


def test_failed_call_is_not_cached():
    async def go(ex):
        with pytest.raises(InfraError):
            await ex.chat(MSG, rep=0)
        r = await ex.chat(MSG, rep=0)
        await ex.close()
        return r

    with FakeOpenAI(["500", "500"]) as s:
        ex = make_executor(cfg(base_url=s.base_url), retry=fast(1))
        assert asyncio.run(go(ex)).text == "echo: hi"


def test_usage_round_trip():
    u = Usage(calls=3, prompt_tokens=10, completion_tokens=4, cost_usd=0.5)
    assert Usage.from_dict({**u.as_dict(), "unknown": 1}) == u
    assert ReplyCache.key("m", MSG, 8, 0.0, 0) != ReplyCache.key("m", MSG, 8, 0.0, 1)


def test_cancelled_call_does_not_poison_the_cache():
    async def go(ex):
        first = asyncio.ensure_future(ex.chat(MSG, rep=0))
        await asyncio.sleep(0.2)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        r = await ex.chat(MSG, rep=0)
        await ex.close()
        return r

    with FakeOpenAI(["hang"], hang_s=1.0) as s:
        ex = make_executor(cfg(base_url=s.base_url), retry=fast())
        assert asyncio.run(go(ex)).text == "echo: hi"


# ---- a whole run against the server (was tests/test_e2e.py, there on the embedded model) ------------

def test_openai_executor_spend_cap_resume_and_no_secret_leaks(tmp_path, qa_task, monkeypatch, capfd):
    """The executor is an OpenAI-compatible server on 127.0.0.1 (fake_openai.py) and the generator the
    scripted backend of fake_backend.py (the real loop, sandbox and run directory; the cap, the resume
    and the key are the point, not the model): a token cap stops `scoreflow optimize` cleanly, --resume
    with a raised cap finishes it, and the API key appears nowhere in the run or its output."""
    from fake_backend import FakeBackend
    from runs import check_complete
    from scoreflow.cli import main as cli

    secret = "sk-scoreflow-test-0123456789abcdef"
    run = tmp_path / "run"
    monkeypatch.setenv("SCOREFLOW_TEST_KEY", secret)
    monkeypatch.setattr("scoreflow.run.session.make_backend", lambda cfg: FakeBackend())
    small = ["--problems", "2", "-k", "3", "--pairs", "4", "--set", "generator.max_new_tokens=160",
             "--set", "executor.max_tokens=40", "--set", "generator.max_attempts=2", "--set", "run.compare=false",
             "--no-dashboard"]
    with FakeOpenAI() as server:
        common = [*qa_task, *small, "--iterations", "1", "--executor", "openai", "--base-url", server.base_url,
                  "--executor-model", "gpt-4o-mini", "--api-key-env", "SCOREFLOW_TEST_KEY", "--run-dir", str(run)]
        assert cli.main(["optimize", *common, "--max-tokens", "60"]) == 0
        first = capfd.readouterr()
        status = json.loads((run / "status.json").read_text())
        assert status["status"] == "stopped" and "cap" in status["reason"], status
        assert server.requests and all(r["model"] == "gpt-4o-mini" for r in server.requests)
        assert cli.main(["optimize", *common, "--resume", "--max-tokens", "100000"]) == 0
        second = capfd.readouterr()
    check_complete(run, 1)
    for out in (first.out, first.err, second.out, second.err):
        assert secret not in out and secret[:12] not in out
    for f in run.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert secret.encode() not in data and secret[:12].encode() not in data, f"the key leaked into {f}"
