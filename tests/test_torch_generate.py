"""The PyTorch backend's own decoding loop (prompt cache, shared prefill, finished rows leaving the
batch) agrees with transformers' generate on greedy outputs, and honours stops, token limits and seeds."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from scoreflow.model.backend import LoraConfig, SamplingParams  # noqa: E402
from scoreflow.backends.cuda import generate as G  # noqa: E402
from scoreflow.backends.cuda import load  # noqa: E402

PROMPTS = [[{"role": "user", "content": "Write a workflow."}],
           [{"role": "user", "content": "Ava has 3 apples and gets 4 more. How many?"}],
           [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]]


@pytest.fixture(scope="module")
def backend(tiny_llama):
    b = load(str(tiny_llama), device="cpu", lora=LoraConfig(rank=4, alpha=8, dropout=0.0), seed=0)
    b.model.to(torch.float64)
    return b


def _run(b, fn, prompts, params, batch_size, *cache):
    return fn(b.model, b.tokenizer, b.fmt, prompts, params, b.torch_device, batch_size, *cache)


@pytest.mark.parametrize("stop", [(), ("e",), ("</graph>", "a")])
def test_greedy_equals_transformers_generate(backend, stop):
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[0], PROMPTS[2], PROMPTS[0], PROMPTS[1]]
    params = SamplingParams(temperature=0.0, max_new_tokens=24, stop=stop)
    ours = _run(backend, G.generate, prompts, params, 4)
    ref = [_run(backend, G.hf_generate, [p], params, 1)[0] for p in prompts]
    assert ours == ref
    if stop:
        assert any(c.finished for c in ours)
    assert all(c.tokens <= 24 for c in ours)


LONG = "You write short answers. " * 12  # an opening of well over MIN_PREFIX tokens
SHARED = [[{"role": "system", "content": LONG}, {"role": "user", "content": q}]
          for q in ("Hi", "Ava has 3 apples and gets 4 more. How many apples does she have now?", "Name a colour.")]
OTHER = [{"role": "system", "content": LONG + " Be kind."}, {"role": "user", "content": "Hi"}]


def test_the_opening_is_everything_before_the_last_message(backend):
    fmt = backend.fmt
    ids = [fmt.prompt_ids(m) for m in SHARED]
    n = fmt.context_length(SHARED[0], ids[0])
    assert n >= G.MIN_PREFIX and all(i[:n] == ids[0][:n] for i in ids)
    assert all(fmt.context_length(m) == n for m in SHARED)
    assert fmt.context_length(OTHER) != n or fmt.prompt_ids(OTHER)[:n] != ids[0][:n]
    assert fmt.context_length([{"role": "user", "content": "Hi"}]) < len(fmt.prompt_ids([{"role": "user", "content": "Hi"}]))


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_the_prompt_cache_changes_no_output(backend, temperature, monkeypatch):
    """Openings come from the prompt cache across calls (computed once per distinct opening), and the
    outputs are those of the same call with nothing kept; greedy, they are transformers' own."""
    prompts = [SHARED[0], SHARED[1], OTHER, SHARED[2], SHARED[1]]
    params = SamplingParams(temperature=temperature, max_new_tokens=16, stop=(), seed=3)
    calls = []
    real = backend.model.forward
    monkeypatch.setattr(backend.model, "forward", lambda *a, **kw: calls.append(kw["input_ids"].shape) or real(*a, **kw))
    cache = G.PromptCache()
    first = _run(backend, G.generate, prompts, params, 4, cache)
    assert cache.misses == 2 and cache.hits >= 1  # one opening for SHARED, one for OTHER; the second batch reuses one
    opened = [c for c in calls if c[0] == 1 and c[1] >= G.MIN_PREFIX]
    assert len(opened) == 2
    calls.clear()
    again = _run(backend, G.generate, prompts, params, 4, cache)
    assert cache.misses == 2 and not [c for c in calls if c[1] >= G.MIN_PREFIX]  # no opening prefilled again
    nothing_kept = _run(backend, G.generate, prompts, params, 4, G.PromptCache(keep=False))
    assert first == again == nothing_kept
    if temperature == 0:
        assert first == [_run(backend, G.hf_generate, [p], params, 1)[0] for p in prompts]


def test_the_backends_cache_follows_its_adapter(backend):
    """Generation after the LoRA weights change (however: a step, a load, a direct edit) uses openings
    computed with the new weights, and the same outputs as with no cache at all."""
    params = SamplingParams(temperature=0.0, max_new_tokens=8, stop=())
    backend.generate(SHARED, params)
    with torch.no_grad():
        for n, p in backend.model.named_parameters():
            if p.requires_grad and "lora_B" in n:
                p.data.add_(0.3)
    try:
        cached = backend.generate(SHARED, params)
        fresh = _run(backend, G.generate, SHARED, params, 8, G.PromptCache(keep=False))
        assert [c.text for c in cached] == [c.text for c in fresh]
    finally:
        backend.load_adapter(None)


def test_stops_limits_and_counts(backend):
    params = SamplingParams(temperature=0.0, max_new_tokens=10, stop=())
    outs = _run(backend, G.generate, PROMPTS, params, 8)
    for c in outs:
        assert (c.tokens == 10 and not c.finished) or (c.finished and c.tokens <= 10)
    stopped = _run(backend, G.generate, PROMPTS, SamplingParams(temperature=0.0, max_new_tokens=40, stop=("e",)), 8)
    for c in stopped:
        if c.finished and "e" in c.text:
            assert c.text.endswith("e") and c.text.count("e") == 1


def test_seeded_sampling_is_reproducible_and_samples_differ(backend):
    prompts = [PROMPTS[1]] * 6
    params = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=16, stop=(), seed=7)
    a = _run(backend, G.generate, prompts, params, 8)
    b = _run(backend, G.generate, prompts, params, 8)
    assert a == b
    assert len({c.text for c in a}) > 1  # the shared prefill does not make the samples identical


def test_top_p_keeps_the_nucleus():
    logits = torch.tensor([[3.0, 2.0, 0.0, -5.0]]).log_softmax(-1)
    params = SamplingParams(temperature=1.0, top_p=0.9)
    gen = torch.Generator().manual_seed(0)
    draws = {int(G._sample(logits, params, gen)) for _ in range(200)}
    assert draws == {0, 1}  # p = 0.705, 0.259, 0.035, ...: the first two reach 0.9 only together
    assert G._sample(logits, SamplingParams(temperature=0.0), None).item() == 0


def test_backend_generate_adapter_off_and_on(backend):
    params = SamplingParams(temperature=0.0, max_new_tokens=8, stop=())
    with torch.no_grad():
        for n, p in backend.model.named_parameters():
            if p.requires_grad and "lora_B" in n:
                p.add_(0.5)
    try:
        on = backend.generate(PROMPTS, params)
        off = backend.generate(PROMPTS, params, adapter=False)
        assert [c.text for c in on] != [c.text for c in off]
    finally:
        backend.load_adapter(None)


@pytest.mark.parametrize("temperature", [0.2, 1.0, 5.0])
def test_nucleus_from_the_top_k_equals_the_full_sort(temperature):
    """The top-k shortcut keeps exactly the tokens, with exactly the probabilities, that sorting the
    whole vocabulary keeps; a flat row (nucleus wider than k) sends the batch to the full sort."""
    g = torch.Generator().manual_seed(0)
    probs = (torch.randn(8, 49152, generator=g) * 4 / temperature).softmax(-1)

    def dense(p, i):
        return torch.zeros_like(probs).scatter_(-1, i, p)

    for top_p in (0.5, 0.9, 0.95):
        fast, fast_idx = G.nucleus(probs, top_p)
        full, full_idx = probs.sort(-1, descending=True)  # the definition, spelled out
        full = full.masked_fill(full.cumsum(-1) - full > top_p, 0.0)
        assert torch.equal(dense(fast, fast_idx), dense(full, full_idx))
        assert ((full > 0).sum(-1) >= 1).all() and (full.sum(-1) >= top_p - 1e-6).all()
        assert (fast.shape[-1] == 64) == bool((probs.topk(64, -1).values.sum(-1) > top_p).all())
    flat = torch.cat([probs[:2], torch.full((1, 49152), 1 / 49152)])
    kept, _ = G.nucleus(flat, 0.9)
    assert kept.shape[-1] == 49152 and abs(int((kept[2] > 0).sum()) - 0.9 * 49152) <= 2
    if temperature == 0.2:
        assert G.nucleus(probs, 0.95)[0].shape[-1] == 64  # peaked rows do take the shortcut
