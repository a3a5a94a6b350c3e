"""The MLX backend's generation on mlx-lm's BatchGenerator, on the tiny random Llama: the prompt cache
(the same workflows with it on and off, reused across calls, dropped when the adapter changes), both
top-p samplers, and calls from a worker thread as the loop makes them."""

from __future__ import annotations

import asyncio
import importlib.util

import numpy as np
import pytest

if importlib.util.find_spec("mlx_lm") is None:  # not importorskip: mlx.core must come after OpenBLAS
    pytest.skip("mlx-lm is not installed", allow_module_level=True)

import scoreflow.backends.mlx  # noqa: E402,F401  (preloads OpenBLAS before mlx.core)

import mlx.core as mx  # noqa: E402

from scoreflow.backends import mlx as B  # noqa: E402
from scoreflow.backends.mlx.generate import make_sampler, nucleus  # noqa: E402
from scoreflow.model.backend import LoraConfig, SamplingParams, TrainConfig, TrainPair  # noqa: E402
from helpers import random_peft  # noqa: E402

pytestmark = pytest.mark.mlx
LORA = LoraConfig(rank=4, alpha=8.0, dropout=0.0)
SYSTEM = "You design workflows. Return one <graph> block."
EXAMPLES = [("Ava has 3 apples and gets 4 more.", "<graph>return a + b</graph>"),
            ("Ben has 9 coins and gives 2 away.", "<graph>return a - b</graph>"),
            ("Iris buys 4 boxes of 6 shells.", "<graph>return a * b</graph>")]
PROBLEMS = ["Omar has 5 cards and gets 7 more.", "Lena shares 12 stamps among 3.", "Dan has 8 books.",
            "Emma buys 2 bags of 9 marbles.", "Finn has 30 pencils and gives 4 away."]


def chat(problem: str, rotate: int = 0) -> list[dict]:
    """A generator-style prompt: system, few-shot turns (rotated), the problem."""
    shots = EXAMPLES[rotate % 3:] + EXAMPLES[:rotate % 3]
    msgs = [{"role": "system", "content": SYSTEM}]
    for q, a in shots:
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return msgs + [{"role": "user", "content": problem}]


PROMPTS = [chat(p, i) for i, p in enumerate(PROBLEMS)] + [[{"role": "user", "content": "Hi"}]]
GREEDY = SamplingParams(temperature=0, max_new_tokens=12, stop=())
SAMPLED = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=12, stop=(), seed=5)
OPENINGS = 4  # distinct openings of PROMPTS: three rotations, and the one-message prompt's system turn


@pytest.fixture(scope="module")
def on(tiny_llama):
    b = B.load(str(tiny_llama), device="cpu", lora=LORA, seed=0)
    b.generation_batch_size = 2  # fewer rows than prompts: finished rows make room for waiting ones
    return b


@pytest.fixture(scope="module")
def off(tiny_llama):
    b = B.load(str(tiny_llama), device="cpu", lora=LORA, seed=0, prompt_cache=False)
    b.generation_batch_size = 2
    return b


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    from scoreflow.model.adapters import peft_to_mlx

    root = tmp_path_factory.mktemp("adapter")
    return peft_to_mlx(random_peft(root / "peft", 2, 64, 32, scale=0.3), root / "mlx")


def texts(outs) -> list[tuple[str, int, bool]]:
    return [(c.text, c.tokens, c.finished) for c in outs]


def test_opening_is_what_prompts_differing_in_the_last_message_share(on):
    """The split the prompt cache uses (the chat format's context_length): the system prompt and
    few-shot turns are in the opening, the problem is not."""
    ids = on.fmt.prompt_ids(PROMPTS[0])
    cut = on.fmt.context_length(PROMPTS[0], ids)
    head = on.fmt.encode_text(on.tokenizer.apply_chat_template(PROMPTS[0][:-1], tokenize=False))
    assert len(head) <= cut < len(ids) and ids[:len(head)] == head
    other = chat(PROBLEMS[1], 0)
    assert on.fmt.prompt_ids(other)[:cut] == ids[:cut] and on.fmt.context_length(other) == cut


@pytest.mark.parametrize("params", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_prompt_cache_changes_no_output(on, off, params):
    """The same workflows with the cache on and off, and again from the cache on the next call;
    each distinct opening is prefilled once: the three rotations of the examples, and the default
    system turn the template puts before the one-message prompt."""
    on.load_adapter(None)
    want = texts(off.generate(PROMPTS, params))
    misses = on.prompts.misses
    first = texts(on.generate(PROMPTS, params))
    assert on.prompts.misses - misses <= OPENINGS
    hits, misses = on.prompts.hits, on.prompts.misses
    again = texts(on.generate(PROMPTS, params))
    assert on.prompts.misses == misses and on.prompts.hits == hits + OPENINGS
    assert first == want and again == want
    assert len({t for t, _, _ in want}) > 1


def test_prompt_cache_follows_the_adapter(on, off, adapter):
    """Openings prefilled with the adapter on are dropped when it changes (load, reset, training);
    those of the base model (adapter off) stay."""
    on.load_adapter(None)
    base = texts(on.generate(PROMPTS, GREEDY))
    on.generate(PROMPTS, GREEDY, adapter=False)
    try:
        on.load_adapter(adapter)
        off.load_adapter(adapter)
        misses = on.prompts.misses
        loaded = texts(on.generate(PROMPTS, GREEDY))
        assert on.prompts.misses == misses + OPENINGS  # prefilled again, with the new adapter
        assert loaded == texts(off.generate(PROMPTS, GREEDY)) and loaded != base
        misses = on.prompts.misses
        assert texts(on.generate(PROMPTS, GREEDY, adapter=False)) == texts(off.generate(PROMPTS, GREEDY, adapter=False))
        assert on.prompts.misses == misses  # the base model's openings were kept
        pair = TrainPair(PROMPTS[0], "<graph>return a + b</graph>", "No.", 1.0, 0.0)
        for b in (on, off):
            b.train([pair], TrainConfig(learning_rate=1e-2, checkpoint_every=0))
        assert texts(on.generate(PROMPTS, GREEDY)) == texts(off.generate(PROMPTS, GREEDY))
        assert on.prompts.misses == misses + OPENINGS
    finally:
        on.load_adapter(None)
        off.load_adapter(None)
    assert texts(on.generate(PROMPTS, GREEDY)) == base


def test_samplers_keep_the_same_nucleus():
    """mlx-lm's apply_top_p on the tempered log-probs keeps the tokens `nucleus` keeps (the
    PyTorch backend's definition: temperature first, then top-p)."""
    from mlx_lm.sample_utils import apply_top_p

    rng = np.random.default_rng(1)
    logits = mx.array((rng.standard_normal((6, 49152)) * 4).astype(np.float32))
    logp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    for temp, top_p in ((0.2, 0.95), (1.0, 0.9), (1.0, 0.5)):
        kept, ids = nucleus(logp / temp, top_p)
        ours = np.zeros(logits.shape, bool)
        np.put_along_axis(ours, np.array(ids), np.isfinite(np.array(kept)), axis=-1)
        theirs = np.isfinite(np.array(apply_top_p(logp / temp, top_p)))
        assert (ours != theirs).sum(-1).max() <= 1  # the boundary token, where the float sums tie


@pytest.mark.parametrize("sampler", ["mlx-lm", "top-64"])
def test_each_sampler_is_seeded(sampler):
    make = make_sampler(SamplingParams(temperature=0.7, top_p=0.9), sampler)
    logp = mx.log(mx.softmax(mx.array(np.random.default_rng(2).standard_normal((4, 1000)).astype(np.float32)), -1))
    draws = []
    for seed in (1, 1, 2):
        mx.random.seed(seed)
        draws.append([make(logp).tolist() for _ in range(5)])
    assert draws[0] == draws[1] != draws[2]
    assert all(0 <= t < 1000 for row in draws for step in row for t in step)


def test_generation_from_a_worker_thread(on):
    """The loop calls generate through asyncio.to_thread; the generator's stream works there."""
    on.load_adapter(None)
    here = texts(on.generate(PROMPTS[:3], SAMPLED))
    there = texts(asyncio.run(asyncio.to_thread(on.generate, PROMPTS[:3], SAMPLED)))
    assert there == here
