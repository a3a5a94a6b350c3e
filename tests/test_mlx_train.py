"""The MLX backend's shared-prompt log-probs and training (each distinct prompt run once) against
the plain computation (every sequence in full), on the tiny random Llama."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

if importlib.util.find_spec("mlx_lm") is None:  # not importorskip: mlx.core must come after OpenBLAS
    pytest.skip("mlx-lm is not installed", allow_module_level=True)

import scoreflow.backends.mlx  # noqa: E402,F401  (preloads OpenBLAS before mlx.core)

import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402
from mlx.utils import tree_flatten, tree_map  # noqa: E402

from scoreflow.model.backend import LoraConfig, TrainConfig, TrainPair  # noqa: E402
from scoreflow.backends import mlx as B  # noqa: E402
from scoreflow.backends.mlx import train as T  # noqa: E402
from scoreflow.model.chat import Encoded  # noqa: E402

pytestmark = pytest.mark.mlx
LORA = LoraConfig(rank=4, alpha=8.0, dropout=0.0)
PROMPTS = [
    [{"role": "user", "content": "Write a workflow for: Ava has 3 apples and gets 4 more. How many now?"}],
    [{"role": "system", "content": "You design workflows."}, {"role": "user", "content": "Solve 12 * 7 with code."}],
    [{"role": "user", "content": "Hi"}],
]
TEXTS = [
    "<graph>async def run_workflow(self):\n    return await self.custom(input=self.problem)</graph>",
    "I think the answer is 7.",
    "<graph>async def run_workflow(self):\n    s = await self.programmer(problem=self.problem)\n    return s</graph>",
    "No.",
    "",  # the end-of-turn tokens only
]


def pairs() -> list[TrainPair]:
    spec = [(0, 0, 1, 0.9, 0.1), (1, 2, 3, 0.6, 0.2), (0, 2, 3, 1.0, 0.0), (1, 0, 1, 0.75, 0.25),
            (2, 1, 4, 0.5, 0.0), (0, 3, 0, 0.625, 0.125), (2, 0, 2, 1.0, 0.5)]
    return [TrainPair(PROMPTS[p], TEXTS[w], TEXTS[l], sw, sl) for p, w, l, sw, sl in spec]


@pytest.fixture(scope="module")
def mb(tiny_llama):
    return B.load(str(tiny_llama), device="cpu", lora=LORA, seed=0)


@pytest.fixture
def lora_on(mb):
    """A non-zero LoRA update (a fresh one's B is zero and hides the prompt's gradient path)."""
    mx.random.seed(3)
    mb.model.update(tree_map(lambda p: 0.05 * mx.random.normal(p.shape), mb.model.trainable_parameters()))
    yield mb
    mb.load_adapter(None)


def encoded(mb, max_length: int = 10**9) -> Encoded:
    enc = Encoded(mb.fmt, max_length)
    for p in PROMPTS:
        for t in TEXTS:
            enc.add(p, t)
    enc.add(PROMPTS[0], "x")  # a one-token completion before the end of turn
    return enc


def test_model_is_shareable_and_prompts_run_once(mb, monkeypatch):
    assert T.shareable(mb.model)
    enc = encoded(mb)
    calls = []
    run = T.run_prompt
    monkeypatch.setattr(T, "run_prompt", lambda model, prompt, *a: calls.append(len(prompt)) or run(model, prompt, *a))
    T.scored(mb.model, enc, range(len(enc.seqs)), mb.pad_id)
    assert len(calls) == len(PROMPTS)
    calls.clear()
    T.sequence_logprobs(mb.model, enc.seqs, enc.prompt_lens, mb.pad_id)
    assert len(calls) == len(PROMPTS)


@pytest.mark.parametrize("chunk_tokens,passes", [(T.COMPLETION_TOKENS, 3), (40, 9), (1, 16)])
def test_shared_logprobs_equal_plain(lora_on, monkeypatch, chunk_tokens, passes):
    """Scored and differentiable paths: each prompt's completions in one pass, in a few, one by one."""
    mb = lora_on
    monkeypatch.setattr(T, "COMPLETION_TOKENS", chunk_tokens)
    enc = encoded(mb)
    assert sum(len(T.completion_chunks(g.completions)) for g in
               T.group_by_prompt(enc.seqs, enc.prompt_lens, range(len(enc.seqs)))) == passes
    plain = np.array(T.plain_sequence_logprobs(mb.model, enc.seqs, enc.prompt_lens, mb.pad_id))
    shared = np.array(T.shared_sequence_logprobs(mb.model, enc.seqs, enc.prompt_lens, mb.pad_id))
    np.testing.assert_allclose(shared, plain, rtol=1e-5)
    which = [5, 0, 3, 11, 15, 3]
    got = T.scored(mb.model, enc, which, mb.pad_id, shared=True)
    want = T.scored(mb.model, enc, which, mb.pad_id, shared=False)
    assert sorted(got) == sorted(set(which))
    assert [got[i] for i in sorted(got)] == pytest.approx([want[i] for i in sorted(got)], rel=1e-5)
    assert [want[i] for i in sorted(want)] == pytest.approx(plain[sorted(want)].tolist(), rel=1e-5)


def test_completion_chunks_bound_padding():
    comps = [[1] * n for n in (5, 1, 9, 3, 3, 7)]
    chunks = T.completion_chunks(comps, 10)
    assert sorted(k for c in chunks for k in c) == list(range(6))
    assert all(len(c) == 1 or len(c) * max(len(comps[k]) for k in c) <= 10 for c in chunks)
    assert T.completion_chunks(comps, 1) == [[1], [3], [4], [0], [5], [2]]


@pytest.mark.parametrize("checkpointing", [False, True, 0.5])
def test_shared_gradients_equal_plain(lora_on, checkpointing):
    """Gradients reach the prompt's keys and values: the same LoRA gradients as the plain path,
    with and without recomputed (checkpointed) layers, all of them or the first half."""
    mb = lora_on
    enc = encoded(mb)
    w = mx.array(np.linspace(-1.0, 1.0, len(enc.seqs)), dtype=mx.float32)  # every sequence its own weight

    def grads(fn):
        vg = nn.value_and_grad(mb.model, lambda: (fn(mb.model, enc.seqs, enc.prompt_lens, mb.pad_id) * w).sum())
        mb.model.train()
        try:
            share = 1.0 if isinstance(checkpointing, bool) else checkpointing
            with T.checkpointed_layers(mb.model, bool(checkpointing), share):
                recomputing = [type(layer).__name__.startswith("Checkpointed") for layer in mb.model.layers]
                n = round(share * len(recomputing)) if checkpointing else 0
                assert recomputing == [True] * n + [False] * (len(recomputing) - n)
                v, g = vg()
        finally:
            mb.model.eval()
        return v.item(), {k: np.array(a) for k, a in tree_flatten(g)}

    v_plain, g_plain = grads(T.plain_sequence_logprobs)
    v_shared, g_shared = grads(T.shared_sequence_logprobs)
    assert v_shared == pytest.approx(v_plain, rel=1e-5)
    assert g_plain.keys() == g_shared.keys() and len(g_plain) == 8
    for k in g_plain:
        assert np.abs(g_plain[k]).max() > 0
        np.testing.assert_allclose(g_shared[k], g_plain[k], rtol=1e-4, atol=1e-5 * np.abs(g_plain[k]).max())


def _opening_held_logprobs(model, seqs, prompt_lens, opening_lens, pad_id) -> mx.array:
    """Each sequence alone through mlx-lm's own KV cache: its opening, whose keys and values then pass
    no gradient, then the rest."""
    from mlx_lm.models.cache import make_prompt_cache

    out = []
    for s, p, o in zip(seqs, prompt_lens, opening_lens):
        assert 0 < o < p
        cache = make_prompt_cache(model)
        model.model(mx.array([s[:o]]), cache=cache)
        for c in cache:
            c.keys, c.values = mx.stop_gradient(c.keys), mx.stop_gradient(c.values)
        logits = T._head(model)(model.model(mx.array([s[o:-1]]), cache=cache)[0, p - 1 - o:]).astype(mx.float32)
        lp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        out.append(lp[mx.arange(len(s) - p), mx.array(s[p:])].sum())
    return mx.stack(out)


def test_opening_without_gradient_equals_mlx_lm_cache(lora_on):
    """train.opening_gradient = false: the log-probs unchanged, the gradient the one of each sequence
    run alone through mlx-lm's cache with its opening's keys and values held constant, and not the
    exact gradient."""
    mb = lora_on
    enc = Encoded(mb.fmt, 10**9)
    for p in (PROMPTS[0], PROMPTS[2]):  # one opening, a rest each
        for t in TEXTS:
            enc.add(p, t)
    assert all(0 < o < p for o, p in zip(enc.opening_lens, enc.prompt_lens))
    w = mx.array(np.linspace(-1.0, 1.0, len(enc.seqs)), dtype=mx.float32)

    def grads(fn):
        vg = nn.value_and_grad(mb.model, lambda: (fn() * w).sum())
        mb.model.train()
        try:
            v, g = vg()
        finally:
            mb.model.eval()
        return v.item(), {k: np.array(a) for k, a in tree_flatten(g)}

    v_held, g_held = grads(lambda: T.shared_sequence_logprobs(mb.model, enc.seqs, enc.prompt_lens, mb.pad_id,
                                                               enc.opening_lens))
    v_ref, g_ref = grads(lambda: _opening_held_logprobs(mb.model, enc.seqs, enc.prompt_lens, enc.opening_lens,
                                                        mb.pad_id))
    v_all, g_all = grads(lambda: T.shared_sequence_logprobs(mb.model, enc.seqs, enc.prompt_lens, mb.pad_id))
    assert v_held == pytest.approx(v_ref, rel=1e-5) and v_held == pytest.approx(v_all, rel=1e-5)
    differ = 0
    for k in g_ref:
        assert np.abs(g_ref[k]).max() > 0
        np.testing.assert_allclose(g_held[k], g_ref[k], rtol=1e-4, atol=1e-5 * np.abs(g_ref[k]).max())
        differ += not np.allclose(g_held[k], g_all[k], rtol=1e-2, atol=0)
    assert differ > 0
    st, _ = _train(mb, True, batch_size=3, opening_gradient=False)
    assert st.steps > 0 and all(np.isfinite(h.loss) for h in st.history)


def _train(mb, shared: bool, compiled: bool = False, checkpoint_dir=None, on_step=None, **kw):
    mb.load_adapter(None)
    mx.random.seed(3)  # B != 0 from the first step on: both paths start from the same non-zero adapter
    mb.model.update(tree_map(lambda p: 0.05 * mx.random.normal(p.shape), mb.model.trainable_parameters()))
    cfg = TrainConfig(**{**dict(loss="score-dpo", beta=0.1, learning_rate=1e-3, checkpoint_every=0), **kw})
    st = T.train(mb.model, mb.fmt, mb.pad_id, pairs(), cfg, shared=shared, compiled=compiled,
                 checkpoint_dir=checkpoint_dir, on_step=on_step)
    weights = {k: np.array(v) for k, v in tree_flatten(mb.model.trainable_parameters())}
    mb.load_adapter(None)
    return st, weights


@pytest.mark.parametrize("kw", [dict(batch_size=1), dict(batch_size=3), dict(batch_size=3, max_grad_norm=0.0),
                                dict(batch_size=3, gradient_checkpointing=True), dict(batch_size=2, loss="sft"),
                                dict(batch_size=7, loss="dpo", max_length=60)],
                         ids=["b1", "b3", "b3-noclip", "b3-ckpt", "b2-sft", "b7-dpo-cut"])
def test_training_equals_plain(mb, kw):
    plain, w_plain = _train(mb, False, **kw)
    shared, w_shared = _train(mb, True, **kw)
    assert shared.steps == plain.steps > 0 and shared.tokens == plain.tokens
    for f in ("loss", "grad_norm"):
        got, want = [getattr(h, f) for h in shared.history], [getattr(h, f) for h in plain.history]
        assert got == pytest.approx(want, rel=1e-5), f
    # Rewards are beta * (policy - reference), differences of summed log-probs of about -300 whose
    # fp32 rounding (~3e-5) differs between the two paths: compare them in absolute terms.
    for f in ("margin", "chosen_reward", "rejected_reward"):
        got, want = [getattr(h, f) for h in shared.history], [getattr(h, f) for h in plain.history]
        assert got == pytest.approx(want, abs=1e-5), f
    for k in w_plain:
        np.testing.assert_allclose(w_shared[k], w_plain[k], rtol=1e-5, atol=1e-7)


def test_compiled_training_equals_eager(mb, tmp_path):
    """The step through mx.compile (as mlx-lm's tuner compiles its own; the default on Metal): the
    same steps as eager, with checkpointed layers too, and from a resumed checkpoint, whose
    optimiser state the compiled functions must see. (The first compiled run on a machine builds
    MLX's fused CPU kernels with the C++ compiler, about a minute; they are cached in $TMPDIR/mlx.)"""
    eager, w_eager = _train(mb, True, batch_size=3)
    for kw in (dict(batch_size=3), dict(batch_size=3, gradient_checkpointing=True)):
        st, w = _train(mb, True, compiled=True, **kw)
        assert [h.loss for h in st.history] == pytest.approx([h.loss for h in eager.history], rel=1e-5)
        assert [h.grad_norm for h in st.history] == pytest.approx([h.grad_norm for h in eager.history], rel=1e-5)
        for k in w_eager:
            np.testing.assert_allclose(w[k], w_eager[k], rtol=1e-5, atol=1e-7)

    def stop(info):
        if info.step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(mb, True, compiled=True, checkpoint_dir=tmp_path, on_step=stop, batch_size=2, checkpoint_every=1)
    resumed, w = _train(mb, True, compiled=True, checkpoint_dir=tmp_path, batch_size=2, checkpoint_every=1)
    whole, w_whole = _train(mb, True, batch_size=2)
    assert [h.loss for h in resumed.history] == pytest.approx([h.loss for h in whole.history], rel=1e-5)
    for k in w_whole:
        np.testing.assert_allclose(w[k], w_whole[k], rtol=1e-5, atol=1e-7)


def test_compiled_step_draws_new_dropout_masks(mb):
    """LoRA dropout inside the compiled step: the random state is threaded through it, so the same
    pair gives a new mask (a new loss) each epoch, as eagerly; a mask baked in would repeat."""
    from mlx_lm.tuner.lora import LoRALinear

    mods = [m for _, m in mb.model.named_modules() if isinstance(m, LoRALinear)]
    old = [m.dropout for m in mods]
    try:
        for m in mods:
            m.dropout = nn.Dropout(0.5)
        for compiled in (False, True):
            st, _ = _train(mb, True, compiled=compiled, batch_size=7, epochs=3, learning_rate=0.0)
            losses = [h.loss for h in st.history]
            assert len(set(losses)) == 3, (compiled, losses)
    finally:
        for m, d in zip(mods, old):
            m.dropout = d
        mb.load_adapter(None)
