"""The MLX backend on the tiny random Llama: generation, log-probs, training, checkpoints, adapters,
and parity with the PyTorch backend on the same weights."""

from __future__ import annotations

import importlib.util

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

if importlib.util.find_spec("mlx_lm") is None:  # not importorskip: mlx.core must come after OpenBLAS
    pytest.skip("mlx-lm is not installed", allow_module_level=True)

import scoreflow.backends.mlx  # noqa: E402,F401  (preloads OpenBLAS before mlx.core)

from scoreflow.model.backend import LoraConfig, SamplingParams, TrainConfig, TrainPair  # noqa: E402
from scoreflow.backends import mlx as B  # noqa: E402
from scoreflow.errors import UserError  # noqa: E402
from helpers import random_peft  # noqa: E402
import mlx.core as mx  # noqa: E402

pytestmark = pytest.mark.mlx
LORA = LoraConfig(rank=4, alpha=8.0, dropout=0.0)
PROMPTS = [
    [{"role": "user", "content": "Write a workflow for: Ava has 3 apples and gets 4 more."}],
    [{"role": "system", "content": "You design workflows."}, {"role": "user", "content": "Solve 12 * 7 with code."}],
]
TEXTS = [
    "<graph>async def run_workflow(self):\n    return await self.custom(input=self.problem)</graph>",
    "I think the answer is 7.",
    "<graph>async def run_workflow(self):\n    s = await self.programmer(problem=self.problem)\n    return s</graph>",
    "No.",
]


def pairs() -> list[TrainPair]:
    spec = [(0, 0, 1, 0.9, 0.1), (1, 2, 3, 0.6, 0.2), (0, 2, 3, 1.0, 0.0), (1, 0, 1, 0.75, 0.25)]
    return [TrainPair(PROMPTS[p], TEXTS[w], TEXTS[l], sw, sl) for p, w, l, sw, sl in spec]


def group_pairs() -> list[TrainPair]:
    """grpo's pairs: every pair of two groups (k = 4 and 3) with their advantages."""
    from scoreflow.loop.pairs import Candidate, group_pairs as every_pair

    out = []
    for prompt, scores in ((0, [0.9, 0.1, 0.5, 0.1]), (1, [1.0, 0.0, 0.5])):
        for p in every_pair([Candidate(prompt, j, sc) for j, sc in enumerate(scores)]):
            out.append(TrainPair(PROMPTS[prompt], TEXTS[p.chosen], TEXTS[p.rejected], p.score_chosen,
                                 p.score_rejected, p.advantage_chosen, p.advantage_rejected, p.weight))
    return out


def items() -> list[tuple[list, str]]:
    return [(PROMPTS[i % 2], t) for i, t in enumerate(TEXTS)]


@pytest.fixture(scope="module")
def mb(tiny_llama):
    return B.load(str(tiny_llama), device="cpu", lora=LORA, seed=0)


@pytest.fixture(scope="module")
def adapters(tmp_path_factory) -> dict[str, Path]:
    from scoreflow.model.adapters import peft_to_mlx

    root = tmp_path_factory.mktemp("adapters")
    peft = random_peft(root / "peft", 2, 64, 32)
    return {"peft": peft, "mlx": peft_to_mlx(peft, root / "mlx")}


def test_backend_attributes(mb):
    assert mb.name == "mlx" and mb.device == "cpu" and mb.model_name == Path(mb.base_path).name
    assert mb.fmt.end_of_turn == "<|im_end|>"
    assert mb.adapter_config["lora_parameters"]["scale"] == pytest.approx(LORA.alpha / LORA.rank)
    trainable = {k for k, _ in __import__("mlx.utils").utils.tree_flatten(mb.model.trainable_parameters())}
    assert trainable and all(k.endswith((".lora_a", ".lora_b")) for k in trainable)
    assert {k.split(".")[-2] for k in trainable} == {"q_proj", "v_proj"}
    assert mb.peak_memory_mb() > 0


@pytest.mark.skipif(sys.platform != "linux", reason="OpenBLAS is preloaded on Linux only")
def test_openblas_is_preloaded():
    from scoreflow.backends.mlx import blas

    assert blas.preload() is not None, "mlx.core was imported before the MLX backend (at collection?)"
    maps = Path("/proc/self/maps").read_text()
    assert "libopenblasp" in maps  # ngsolve-openblas's library, not numpy's bundled scipy_openblas


def test_missing_model_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        B.load(str(tmp_path / "nope"), lora=LORA)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="config.json"):
        B.load(str(tmp_path / "empty"), lora=LORA)


def test_generation_stops_at_stop_string_and_is_reproducible(mb):
    free = mb.generate(PROMPTS, SamplingParams(temperature=0, max_new_tokens=24, stop=()))
    assert all(c.tokens == 24 and not c.finished for c in free)
    text = free[0].text
    stop = text[6:10]  # a string the greedy continuation is known to reach
    assert len(stop) == 4 and text.find(stop) >= 0
    cut = mb.generate(PROMPTS[:1], SamplingParams(temperature=0, max_new_tokens=24, stop=(stop,)))[0]
    assert cut.finished and cut.text.endswith(stop) and text.startswith(cut.text)
    assert cut.text.count(stop) == 1 and cut.tokens < 24
    p = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=16, stop=(), seed=7)
    a, b = mb.generate(PROMPTS * 2, p), mb.generate(PROMPTS * 2, p)
    assert [c.text for c in a] == [c.text for c in b]
    other = mb.generate(PROMPTS * 2, SamplingParams(temperature=1.0, max_new_tokens=16, stop=(), seed=8))
    assert [c.text for c in a] != [c.text for c in other]


@pytest.mark.parametrize("temperature", [0.2, 1.0, 5.0])
def test_nucleus_from_the_top_k_equals_the_full_sort(temperature):
    """The MLX nucleus keeps exactly the tokens, with the probabilities, of the definition (sort the
    vocabulary, keep a token while the tokens before it hold at most top_p), computed in NumPy; a
    flat row sends the batch to the full sort. The PyTorch backend has the same test."""
    from scoreflow.backends.mlx.generate import nucleus

    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((8, 49152)) * 4 / temperature).astype(np.float32)
    for top_p in (0.5, 0.9, 0.95):
        kept, ids = nucleus(mx.array(logits), top_p)
        ours = np.zeros_like(logits)
        np.put_along_axis(ours, np.array(ids), np.exp(np.array(kept)), axis=-1)
        x = mx.array(logits)
        p = np.exp(np.array(x - mx.logsumexp(x, axis=-1, keepdims=True)))  # MLX's own float32 softmax
        order = np.argsort(-p, axis=-1, kind="stable")
        sp = np.take_along_axis(p, order, -1)
        sp[np.cumsum(sp, -1) - sp > top_p] = 0
        ref = np.zeros_like(p)
        np.put_along_axis(ref, order, sp, axis=-1)
        differ = (ours > 0) != (ref > 0)
        if kept.shape[-1] == 64:  # the shortcut: exactly the definition's tokens
            assert not differ.any()
        else:  # the full sort: float32 running sums over thousands of tokens may move the edge a little
            assert differ.sum(-1).max() <= 20
        both = (ours > 0) & (ref > 0)
        np.testing.assert_allclose(ours[both], ref[both], rtol=1e-6)
        wide = bool((np.sort(p, -1)[:, -64:].sum(-1) > top_p).all())
        assert (kept.shape[-1] == 64) == wide
    flat = mx.concatenate([mx.array(logits[:2]), mx.zeros((1, 49152))])
    kept, _ = nucleus(flat, 0.9)
    # (a float32 running sum of 49k equal terms drifts by a few hundredths of a percent)
    assert kept.shape[-1] == 49152 and abs(int((mx.exp(kept[2]) > 0).sum().item()) - 0.9 * 49152) <= 50
    if temperature == 0.2:
        assert nucleus(mx.array(logits), 0.95)[0].shape[-1] == 64  # peaked rows take the shortcut


def test_batched_generation_matches_one_by_one(mb):
    """Left padding in the batched cache changes nothing: greedy rows equal their solo runs."""
    prompts = [PROMPTS[0], PROMPTS[1], [{"role": "user", "content": "Hi"}]]
    p = SamplingParams(temperature=0, max_new_tokens=12, stop=())
    together = [c.text for c in mb.generate(prompts, p)]
    alone = [mb.generate([q], p)[0].text for q in prompts]
    assert together == alone


def test_adapter_toggle_and_reset(mb, adapters):
    base = mb.logprobs(items())
    mb.load_adapter(adapters["mlx"])
    try:
        on, off = mb.logprobs(items()), mb.logprobs(items(), adapter=False)
        assert off == pytest.approx(base, rel=1e-6)
        assert max(abs(x - y) for x, y in zip(on, base)) > 1e-3
        g_on = mb.generate(PROMPTS, SamplingParams(temperature=0, max_new_tokens=8, stop=()), adapter=False)
        g_base = mb.generate(PROMPTS, SamplingParams(temperature=0, max_new_tokens=8, stop=()))
        assert [c.text for c in g_on] != [c.text for c in g_base] or on != base
    finally:
        mb.load_adapter(None)
    assert mb.logprobs(items()) == pytest.approx(base, rel=1e-6)
    with pytest.raises(UserError, match="mlx-lm adapter"):
        mb.load_adapter(adapters["peft"])


def test_logprobs_equal_full_logits(mb):
    """Completion-only log-probs in chunks equal a plain full-logits computation per sequence."""
    fmt = mb.fmt
    got = mb.logprobs(items())
    for (prompt, text), lp in zip(items(), got):
        p, c = fmt.prompt_ids(prompt), fmt.completion_ids(text)
        logits = mb.model(mx.array([p + c]))[0].astype(mx.float32)
        ls = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        ref = sum(ls[len(p) - 1 + j, t].item() for j, t in enumerate(c))
        assert lp == pytest.approx(ref, rel=1e-5)


def _train_cfg(**kw) -> TrainConfig:
    base = dict(loss="score-dpo", beta=0.1, learning_rate=1e-3, batch_size=1, checkpoint_every=0)
    base.update(kw)
    return TrainConfig(**base)


def test_training_checkpoint_resume_and_gradient_checkpointing(mb, tmp_path):
    from mlx.utils import tree_flatten

    mb.load_adapter(None)
    full = mb.train(pairs(), _train_cfg())
    assert full.steps == 4 and all(h.grad_norm > 0 for h in full.history)
    want = {k: np.array(v) for k, v in tree_flatten(mb.model.trainable_parameters())}

    mb.load_adapter(None)
    ck = tmp_path / "ck"

    def boom(info):
        if info.step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        mb.train(pairs(), _train_cfg(checkpoint_every=2), on_step=boom, checkpoint_dir=ck)
    assert [p.name for p in ck.iterdir()] == ["step-000002"]
    assert sorted(f.name for f in (ck / "step-000002").iterdir()) == \
        ["adapter.safetensors", "optimizer.safetensors", "state.json"]
    mb.load_adapter(None)
    resumed = mb.train(pairs(), _train_cfg(checkpoint_every=2), checkpoint_dir=ck)
    assert [h.step for h in resumed.history] == [1, 2, 3, 4]
    assert [h.loss for h in resumed.history] == pytest.approx([h.loss for h in full.history], rel=1e-5)
    got = {k: np.array(v) for k, v in tree_flatten(mb.model.trainable_parameters())}
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-6)

    mb.load_adapter(None)
    ckpt = mb.train(pairs(), _train_cfg(gradient_checkpointing=True))
    assert [h.loss for h in ckpt.history] == pytest.approx([h.loss for h in full.history], rel=1e-5)
    assert [h.grad_norm for h in ckpt.history] == pytest.approx([h.grad_norm for h in full.history], rel=1e-4)
    assert type(mb.model.layers[0]).__name__ == "TransformerBlock"  # the swap is undone
    mb.load_adapter(None)


def test_losses_batches_and_grad_clipping(mb):
    mb.load_adapter(None)
    for loss in ("dpo", "sft"):
        st = mb.train(pairs(), _train_cfg(loss=loss, batch_size=2, max_grad_norm=1e-3, epochs=2))
        assert st.steps == 4 and st.tokens > 0 and np.isfinite(st.loss)
        mb.load_adapter(None)
    first = mb.train(pairs()[:1], _train_cfg(learning_rate=0.0))
    assert first.history[0].loss == pytest.approx(np.log(2), rel=1e-6)  # B = 0: policy == reference
    assert mb.train([], _train_cfg()).steps == 0


def test_saved_adapter_loads_in_mlx_lm(mb, tiny_llama, tmp_path, adapters):
    """`mlx_lm.load(model, adapter_path=...)` accepts the saved folder unchanged (tiny_llama is an
    HF-format folder, which is mlx-lm's model format) and gives the same log-probs."""
    import mlx_lm

    mb.load_adapter(adapters["mlx"])
    try:
        mb.save_adapter(tmp_path / "a")
        want = mb.logprobs(items())
    finally:
        mb.load_adapter(None)
    saved = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert saved == ["adapter_config.json", "adapters.safetensors", "scoreflow.json"]
    model, _ = mlx_lm.load(str(tiny_llama), adapter_path=str(tmp_path / "a"))
    model.eval()
    from scoreflow.backends.mlx.train import Encoded, scored

    enc = Encoded(mb.fmt, 10**9)
    idx = [enc.add(p, c) for p, c in items()]
    got = scored(model, enc, idx, mb.pad_id)
    assert [got[i] for i in idx] == pytest.approx(want, rel=1e-6)
    mb.load_adapter(tmp_path / "a")
    assert mb.logprobs(items()) == pytest.approx(want, rel=1e-6)
    mb.load_adapter(None)


def test_no_torch_needed(tiny_llama):
    """With torch made unimportable (as on a Mac without it), the backend loads, scores and generates."""
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None
        from scoreflow.model.backend import LoraConfig, SamplingParams
        from scoreflow.backends.mlx import load
        b = load({str(tiny_llama)!r}, device="cpu", lora=LoraConfig(rank=4, alpha=8.0))
        msgs = [{{"role": "user", "content": "hi"}}]
        assert b.logprobs([(msgs, "hello")])[0] < 0
        assert b.generate([msgs], SamplingParams(max_new_tokens=4, stop=()))[0].tokens == 4
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=str(Path(__file__).resolve().parents[1]))
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]


# -- parity with the PyTorch backend on the same weights -----------------------------------------

@pytest.fixture(scope="module")
def tb(tiny_llama):
    pytest.importorskip("peft")
    from scoreflow.backends.cuda import load as torch_load

    return torch_load(str(tiny_llama), device="cpu", lora=LORA, seed=0)


def test_parity_logprobs_loss_and_grad_norm(mb, tb, adapters):
    tb.load_adapter(adapters["peft"])
    mb.load_adapter(adapters["mlx"])
    try:
        for adapter in (False, True):
            t, m = tb.logprobs(items(), adapter=adapter), mb.logprobs(items(), adapter=adapter)
            assert m == pytest.approx(t, rel=1e-4)
        cfg = _train_cfg(batch_size=4, learning_rate=1e-3, max_grad_norm=0.0)
        ts, ms = tb.train(pairs(), cfg), mb.train(pairs(), cfg)
        assert ms.history[0].loss == pytest.approx(ts.history[0].loss, rel=1e-3)
        assert ms.history[0].grad_norm == pytest.approx(ts.history[0].grad_norm, rel=1e-3)
        assert ms.history[0].margin == pytest.approx(ts.history[0].margin, rel=1e-3, abs=1e-7)
        # grpo: a step per group; the ratio starts at 1 (loss 0) and its later steps move both alike
        tb.load_adapter(adapters["peft"])
        mb.load_adapter(adapters["mlx"])
        cfg = _train_cfg(loss="grpo", learning_rate=1e-2, max_grad_norm=0.0)
        ts, ms = tb.train(group_pairs(), cfg), mb.train(group_pairs(), cfg)
        assert ts.steps == ms.steps == 2
        assert ms.history[0].loss == pytest.approx(0, abs=1e-6) and ts.history[0].loss == pytest.approx(0, abs=1e-6)
        assert ms.history[1].loss == pytest.approx(ts.history[1].loss, rel=1e-2) and abs(ts.history[1].loss) > 1e-5
        for m, t in zip(ms.history, ts.history):
            assert m.grad_norm == pytest.approx(t.grad_norm, rel=1e-3) and t.grad_norm > 0
    finally:
        tb.load_adapter(None)
        mb.load_adapter(None)


def test_adapters_cross_backends(mb, tb, tmp_path):
    """Trained on one backend, exported to the other's format, same log-probs there."""
    from scoreflow.report.export import export_run

    cfg = _train_cfg(learning_rate=5e-3)
    for src, dst, fmt in ((tb, mb, "mlx"), (mb, tb, "peft")):
        src.load_adapter(None)
        src.train(pairs(), cfg)
        run = tmp_path / src.name
        src.save_adapter(run / "adapters" / "iter-1")
        want = src.logprobs(items())
        assert max(abs(a - b) for a, b in zip(want, src.logprobs(items(), adapter=False))) > 1e-3
        dst.load_adapter(export_run(run, fmt))
        try:
            assert dst.logprobs(items()) == pytest.approx(want, rel=1e-4)
        finally:
            dst.load_adapter(None)
            src.load_adapter(None)


def test_wired_limit_is_raised_on_metal_only(monkeypatch):
    """As mlx-lm's generator and tuner: the GPU's recommended working set wired on Metal; nothing on CPU."""
    import mlx_lm.utils

    from scoreflow.backends.mlx.model import wire_memory

    calls = []
    monkeypatch.setattr(mlx_lm.utils, "maybe_set_recommended_wired_limit", lambda: calls.append(1) or 7)
    assert wire_memory("cpu") is None and calls == []
    assert wire_memory("gpu") == 7 and calls == [1]
