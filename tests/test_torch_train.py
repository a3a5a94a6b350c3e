"""The PyTorch backend's training speed-ups leave log-probs, losses and gradients unchanged versus
the plain computation (every sequence in full, one padded batch per step)."""

from __future__ import annotations

from dataclasses import replace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from scoreflow.model.backend import LoraConfig, TrainConfig, TrainPair  # noqa: E402
from scoreflow.backends.cuda import load  # noqa: E402
from scoreflow.backends.cuda import train as T  # noqa: E402
from scoreflow.backends.cuda.loss import group_relative_loss, preference_loss  # noqa: E402
from scoreflow.loop.pairs import Candidate, group_pairs  # noqa: E402
from scoreflow.model.training import steps_of  # noqa: E402

PROMPTS = [
    [{"role": "user", "content": "Write a workflow for: Ava has 3 apples and gets 4 more."}],
    [{"role": "system", "content": "You design workflows."}, {"role": "user", "content": "Solve 12 * 7 with code."}],
    [{"role": "user", "content": "How many marbles are left?"}],
]
COMPLETIONS = [
    "<graph>async def run_workflow(self):\n    return await self.custom(input=self.problem)</graph>",
    "I think the answer is 7.",
    "<graph>async def run_workflow(self):\n    s = await self.programmer(problem=self.problem)\n    return s</graph>",
    "No.",
    "The total is 84 because twelve sevens are eighty-four, see the table above and more words here.",
]


def _pairs() -> list[TrainPair]:
    """Pairs sharing prompts and completions, as the loop's resampling with replacement produces."""
    spec = [(0, 0, 1, 0.9, 0.1), (0, 2, 1, 0.6, 0.1), (1, 4, 3, 1.0, 0.0), (0, 0, 1, 0.9, 0.1),
            (2, 3, 0, 0.75, 0.25), (1, 2, 4, 0.5, 0.4), (0, 2, 3, 0.8, 0.0), (2, 1, 2, 0.7, 0.3)]
    return [TrainPair(PROMPTS[p], COMPLETIONS[w], COMPLETIONS[l], sw, sl) for p, w, l, sw, sl in spec]


def _group_pairs() -> list[TrainPair]:
    """Every pair of three groups (prompts 0, 1, 2; k = 4, 3, 3), with their advantages, as grpo trains."""
    groups = [(0, [0.9, 0.1, 0.5, 0.1]), (1, [1.0, 0.0, 0.5]), (2, [0.25, 0.75, 0.25])]
    out = []
    for prompt, scores in groups:
        for p in group_pairs([Candidate(prompt, j, sc) for j, sc in enumerate(scores)]):
            out.append(TrainPair(PROMPTS[prompt], COMPLETIONS[(p.chosen + prompt) % 5],
                                 COMPLETIONS[(p.rejected + prompt) % 5], p.score_chosen, p.score_rejected,
                                 p.advantage_chosen, p.advantage_rejected, p.weight))
    return out


@pytest.fixture(scope="module")
def backend(tiny_llama, test_device):
    b = load(str(tiny_llama), device=test_device, lora=LoraConfig(rank=4, alpha=8, dropout=0.0), seed=0)
    b.model.to(torch.float64)  # float64 makes the comparisons tight
    return b


# Even in float64, HF's rotary embedding computes cos/sin in float32, whose last bit depends on where a
# position falls in the vectorised loop: so packed and plain differ by ~1e-7 relative, not 1e-15.
REL = 2e-6


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=REL, atol=REL * float(b.abs().max()))


def _randomise(backend, seed: int) -> None:
    """A non-zero adapter (a fresh LoRA's B is zero, which would hide half of the gradients)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in backend.model.named_parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype).to(p.device) * 0.05)


def _lora(backend) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in backend.model.named_parameters() if p.requires_grad}


def _encode(backend, pairs, max_length=2048):
    enc = T.Encoded(backend.fmt, max_length)
    index = [(enc.add(p.prompt, p.chosen), enc.add(p.prompt, p.rejected)) for p in pairs]
    return enc, index


def _plain_train(backend, pairs, cfg: TrainConfig, logprobs=None) -> tuple[list[tuple[float, float, float]], dict]:
    """The straightforward loop: reference and policy log-probs of every sequence in full each step
    (the policy's by `logprobs`(model, seqs, prompt_lens, opening_lens, pad, device) where given)."""
    model, pad, dev = backend.model, backend.tokenizer.pad_token_id, backend.torch_device
    enc, index = _encode(backend, pairs, cfg.max_length)
    model.eval()
    with torch.no_grad():
        if cfg.loss == "grpo":  # the ratio is to the generator as training begins: adapter on
            ref = T.plain_sequence_logprobs(model, enc.seqs, enc.prompt_lens, pad, dev)
        else:
            with model.disable_adapter():
                ref = T.plain_sequence_logprobs(model, enc.seqs, enc.prompt_lens, pad, dev)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.0)
    model.train()
    out = []
    for ks in steps_of(pairs, cfg):
        w, l = [index[k][0] for k in ks], [index[k][1] for k in ks]
        ids = w + l
        if logprobs is None:
            lp = T.plain_sequence_logprobs(model, [enc.seqs[i] for i in ids], [enc.prompt_lens[i] for i in ids], pad, dev)
        else:
            lp = logprobs(model, [enc.seqs[i] for i in ids], [enc.prompt_lens[i] for i in ids],
                          [enc.opening_lens[i] for i in ids], pad, dev)
        sw = torch.tensor([pairs[k].score_chosen for k in ks], dtype=lp.dtype, device=dev)
        sl = torch.tensor([pairs[k].score_rejected for k in ks], dtype=lp.dtype, device=dev)
        ntok = torch.tensor([len(enc.seqs[i]) - enc.prompt_lens[i] for i in w], dtype=lp.dtype, device=dev)
        pl = ref[l] if cfg.loss == "sft" else lp[len(w):]
        if cfg.loss == "grpo":
            ntok_l = torch.tensor([len(enc.seqs[i]) - enc.prompt_lens[i] for i in l], dtype=lp.dtype, device=dev)
            loss, st = group_relative_loss(cfg.clip, cfg.beta, lp[:len(w)], pl, ref[w], ref[l], ntok, ntok_l,
                                           [pairs[k].advantage_chosen for k in ks],
                                           [pairs[k].advantage_rejected for k in ks], [pairs[k].weight for k in ks])
        else:
            loss, st = preference_loss(cfg.loss, cfg.beta, lp[:len(w)], pl, ref[w], ref[l], sw, sl, ntok)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        out.append((loss.item(), float(st["margin"]), float(norm)))
    model.eval()
    return out, _lora(backend)


def test_packed_logprobs_equal_plain(backend):
    _randomise(backend, 1)
    pairs = _pairs()
    enc, _ = _encode(backend, pairs)
    pad = backend.tokenizer.pad_token_id
    with torch.no_grad():
        plain = T.plain_sequence_logprobs(backend.model, enc.seqs, enc.prompt_lens, pad, backend.torch_device)
        fast = T.sequence_logprobs(backend.model, enc.seqs, enc.prompt_lens, pad, backend.torch_device)
    assert len(set(map(tuple, enc.seqs))) == len(enc.seqs) == 11
    _close(fast, plain)
    # and through the public API, adapter on and off
    items = [(p.prompt, p.chosen) for p in pairs] + [(p.prompt, p.rejected) for p in pairs]
    on, off = backend.logprobs(items), backend.logprobs(items, adapter=False)
    assert on != off
    with torch.no_grad():
        again = T.plain_sequence_logprobs(backend.model, enc.seqs, enc.prompt_lens, pad, backend.torch_device)
    assert sorted(set(on)) == pytest.approx(sorted(set(again.tolist())), rel=REL)


@pytest.mark.parametrize("budget", [0, 10**6])
def test_packed_rows_split_and_padded_equal_plain(backend, budget, monkeypatch):
    """No-grad rows split at a small token limit, and several padded rows per micro-batch (the GPU path)."""
    _randomise(backend, 2)
    monkeypatch.setattr(T, "NOGRAD_ROW_TOKENS", 60)
    monkeypatch.setattr(T, "CPU_TOKEN_BUDGET", budget)
    enc, _ = _encode(backend, _pairs())
    pad = backend.tokenizer.pad_token_id
    rows = T.group_trees(enc.seqs, enc.prompt_lens, range(len(enc.seqs)), 60)
    assert len(rows) > 3  # some prompt's completions were split over rows
    with torch.no_grad():
        plain = T.plain_sequence_logprobs(backend.model, enc.seqs, enc.prompt_lens, pad, backend.torch_device)
        fast = T.sequence_logprobs(backend.model, enc.seqs, enc.prompt_lens, pad, backend.torch_device)
    _close(fast, plain)


def test_packed_logprobs_float32_close_to_plain(tiny_llama, test_device):
    b = load(str(tiny_llama), device=test_device, lora=LoraConfig(rank=4, alpha=8, dropout=0.0), seed=0)
    _randomise(b, 3)
    enc, _ = _encode(b, _pairs())
    pad = b.tokenizer.pad_token_id
    with torch.no_grad():
        plain = T.plain_sequence_logprobs(b.model, enc.seqs, enc.prompt_lens, pad, b.torch_device)
        fast = T.sequence_logprobs(b.model, enc.seqs, enc.prompt_lens, pad, b.torch_device)
    torch.testing.assert_close(fast, plain, rtol=0, atol=2e-4)


@pytest.mark.parametrize("loss,batch_size,budget,checkpointing", [
    ("score-dpo", 1, None, False),
    ("score-dpo", 3, None, False),
    ("score-dpo", 4, 10**6, False),  # padded multi-row micro-batches
    ("score-dpo", 3, None, True),
    ("score-dpo", 3, None, 0.5),  # the first half of the layers recompute, the rest keep their activations
    ("dpo", 2, None, False),
    ("sft", 3, None, False),
    ("grpo", 1, None, False),  # a step per group
    ("grpo", 2, 10**6, False),
])
def test_train_equals_plain_loop(backend, loss, batch_size, budget, checkpointing):
    pairs = _group_pairs() if loss == "grpo" else _pairs()
    share = 1.0 if isinstance(checkpointing, bool) else checkpointing
    cfg = TrainConfig(loss=loss, beta=0.5, learning_rate=5e-3, batch_size=batch_size, max_grad_norm=0.5,
                      gradient_checkpointing=bool(checkpointing), recompute_share=share)
    _randomise(backend, 4)
    expected, lora_plain = _plain_train(backend, pairs, cfg)
    _randomise(backend, 4)
    layers = T._parts(backend.model)[0].layers
    recomputing = []  # per step, which layers recompute

    def on_step(info) -> None:
        recomputing.append([bool(layer.gradient_checkpointing) for layer in layers])

    stats = T.train(backend.model, backend.fmt, backend.tokenizer.pad_token_id, backend.torch_device, pairs, cfg,
                    on_step, token_budget=budget)
    n = round(share * len(layers)) if checkpointing else 0
    assert recomputing and all(r == [True] * n + [False] * (len(layers) - n) for r in recomputing)
    assert not any(layer.gradient_checkpointing for layer in layers)  # as before, once trained
    got = [(h.loss, h.margin, h.grad_norm) for h in stats.history]
    assert len(got) == len(expected) == len(steps_of(pairs, cfg))
    assert [x for t in got for x in t] == pytest.approx([x for t in expected for x in t], rel=REL, abs=1e-9)
    assert any(abs(m) > 1e-3 for _, m, _ in got) or loss == "sft"
    if loss == "grpo":  # the ratio starts at 1 (loss 0), then moves: the later steps' losses are not 0
        assert abs(got[0][0]) < 1e-9 and got[0][2] > 0 and any(abs(x) > 1e-6 for x, _, _ in got[1:])
    lora_fast = _lora(backend)
    for n in lora_plain:
        _close(lora_fast[n], lora_plain[n])


def test_step_gradients_equal_plain(backend):
    """Gradients of one batch (no clipping, no update) entry by entry."""
    pairs = _pairs()[:5]
    cfg = TrainConfig(beta=0.3, learning_rate=0.0, batch_size=5, max_grad_norm=0.0)
    _randomise(backend, 5)
    T.train(backend.model, backend.fmt, backend.tokenizer.pad_token_id, backend.torch_device, pairs, cfg)
    fast = {n: p.grad.clone() for n, p in backend.model.named_parameters() if p.requires_grad}
    _randomise(backend, 5)
    _plain_train(backend, pairs, TrainConfig(beta=0.3, learning_rate=0.0, batch_size=5, max_grad_norm=float("inf")))
    for n, p in backend.model.named_parameters():
        if p.requires_grad:
            assert p.grad.abs().max() > 0
            _close(fast[n], p.grad)


def _opening_held_logprobs(model, seqs, prompt_lens, opening_lens, pad, dev) -> torch.Tensor:
    """Each sequence alone through transformers' own cache: its opening under no_grad, then the rest."""
    from transformers import DynamicCache

    decoder, head, _ = T._parts(model)
    out = []
    for s, p, o in zip(seqs, prompt_lens, opening_lens):
        assert 0 < o < p
        cache = DynamicCache()
        kw = {T.forward_keywords(model)[0]: cache}
        with torch.no_grad():
            decoder(input_ids=torch.tensor([s[:o]], device=dev), use_cache=True, **kw)
        hidden = decoder(input_ids=torch.tensor([s[o:]], device=dev), position_ids=torch.arange(o, len(s), device=dev)[None],
                         use_cache=True, **kw).last_hidden_state[0]
        logits = head(hidden[p - 1 - o:len(s) - 1 - o])
        out.append(logits.log_softmax(-1).gather(1, torch.tensor(s[p:], device=dev)[:, None]).sum())
    return torch.stack(out)


def test_opening_without_gradient_equals_transformers_cache(backend):
    """train.opening_gradient = false: each step's gradient is the one of log-probs whose shared opening
    ran under no_grad (here: each sequence alone through transformers' cache), the log-probs unchanged;
    and it differs from the exact gradient (the path through the opening's keys and values is dropped)."""
    pairs = [p for p in _pairs() if p.prompt is not PROMPTS[1]]  # prompts 0 and 2: one opening, a rest each
    cfg = TrainConfig(beta=0.3, learning_rate=0.0, batch_size=len(pairs), max_grad_norm=0.0, opening_gradient=False)
    grads = {}
    for held in (True, False):
        _randomise(backend, 7)
        stats = T.train(backend.model, backend.fmt, backend.tokenizer.pad_token_id, backend.torch_device, pairs,
                        replace(cfg, opening_gradient=not held))
        grads[held] = {n: p.grad.clone() for n, p in backend.model.named_parameters() if p.requires_grad}
        if held:
            loss = stats.history[0].loss
    _randomise(backend, 7)
    plain, _ = _plain_train(backend, pairs, replace(cfg, max_grad_norm=float("inf")), _opening_held_logprobs)
    assert loss == pytest.approx(plain[0][0], rel=REL)
    differ = 0
    for n, p in backend.model.named_parameters():
        if p.requires_grad:
            assert p.grad.abs().max() > 0
            _close(grads[True][n], p.grad)
            differ += not torch.allclose(grads[True][n], grads[False][n], rtol=1e-3, atol=0)
    assert differ > 0


def test_reference_once_per_unique_sequence_and_prompt(backend, monkeypatch):
    seen_rows: list[T.Tree] = []
    real = T.packed_logprobs

    def spy(model, rows, n_out, pad_id, device, *rest):
        if not torch.is_grad_enabled():
            seen_rows.extend(rows)
        return real(model, rows, n_out, pad_id, device, *rest)

    monkeypatch.setattr(T, "packed_logprobs", spy)
    pairs = _pairs()
    T.train(backend.model, backend.fmt, backend.tokenizer.pad_token_id, backend.torch_device, pairs,
            TrainConfig(batch_size=2, learning_rate=0.0))
    completions = [tuple(c) for t in seen_rows for c in t.completions]
    prompts = [tuple(t.opening + r.prompt) for t in seen_rows for r in t.rows]
    openings = [tuple(t.opening) for t in seen_rows]
    assert len(openings) == len(set(openings)) < len(PROMPTS)  # prompts 0 and 2 share the chat opening
    unique_pairs = {(str(p.prompt), c) for p in pairs for c in (p.chosen, p.rejected)}
    assert len(completions) == len(unique_pairs) == 11
    assert len(prompts) == len(set(prompts)) == len(PROMPTS)


def test_training_rows_run_each_prompt_once_per_step(backend):
    pairs = _pairs()
    enc, index = _encode(backend, pairs)
    micro = list(T._micro_batches(enc, index, [0, 1, 3, 2], sft=False, budget=0))
    # pairs 0, 1 and 3 share prompt 0 (completions 0, 1, 2: three unique), pair 2 has prompt 1
    assert len(micro) == 2
    widths = sorted(len(rows[0].completions) for rows, *_ in micro)
    assert widths == [2, 3]
    assert sorted(len(m[2]) for m in micro) == [1, 3]
    # pairs 0 and 4 (prompts 0 and 2) differ only in their last message: one tree, the opening run once
    [(trees, *_)] = list(T._micro_batches(enc, index, [0, 4], sft=False, budget=0))
    assert len(trees) == 1 and len(trees[0].rows) == 2 and len(trees[0].opening) > 0


def test_attention_by_segments_equals_mask(backend, monkeypatch):
    """On CPU a lone packed row's attention runs by segments (prompt causal, each completion over the
    prompt and itself): the same log-probs and gradients as the row's custom mask."""
    from scoreflow.backends.cuda import attention

    pairs = _pairs()
    enc, _ = _encode(backend, pairs)
    rows = T.group_trees(enc.seqs, enc.prompt_lens, range(len(enc.seqs)), None, enc.opening_lens)
    row = max(rows, key=lambda t: (len(t.rows), len(t.completions)))
    assert len(row.rows) >= 2 and len(row.completions) >= 3  # several prompts after one opening
    if backend.torch_device.type != "cpu":
        pytest.skip("attention by segments is for CPU")
    calls = []
    real = attention.segment_attention

    def spy(*a, segments=None, **k):
        calls.append(segments)
        return real(*a, segments=segments, **k)

    monkeypatch.setattr(attention, "segment_attention", spy)
    attention._registered.discard(attention.NAME)  # register the spy
    _randomise(backend, 7)
    model, pad, dev = backend.model, backend.tokenizer.pad_token_id, backend.torch_device
    model.train()
    out = {}
    try:
        for mode in ("segments", "mask"):
            if mode == "mask":
                monkeypatch.setattr(T, "_segments", lambda *a: None)
            model.zero_grad(set_to_none=True)
            lp = T.packed_logprobs(model, [row], len(enc.seqs), pad, dev)[row.out]
            (lp * torch.linspace(1, -1, len(lp), dtype=lp.dtype)).sum().backward()
            out[mode] = (lp.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    finally:
        model.eval()
        monkeypatch.undo()
        attention._registered.discard(attention.NAME)
    assert calls and all(s == row.segments() for s in calls)
    assert model.get_base_model().config._attn_implementation == "sdpa"  # restored
    _close(out["segments"][0], out["mask"][0])
    for n, g in out["mask"][1].items():
        assert g.abs().max() > 0
        _close(out["segments"][1][n], g)


@pytest.mark.parametrize("mode", ["eager", "unpacked"])
def test_other_attention_paths_equal_plain(backend, mode, monkeypatch):
    """Eager attention takes an additive mask; kernels with no custom masks fall back to one sequence a row."""
    base = backend.model.get_base_model()
    if mode == "eager":
        base.set_attn_implementation("eager")
    else:
        monkeypatch.setattr(T, "PACKABLE", ())
    try:
        pairs = _pairs()[:4]
        cfg = TrainConfig(beta=0.5, learning_rate=5e-3, batch_size=2, max_grad_norm=0.5)
        _randomise(backend, 6)
        expected, lora_plain = _plain_train(backend, pairs, cfg)
        _randomise(backend, 6)
        stats = T.train(backend.model, backend.fmt, backend.tokenizer.pad_token_id, backend.torch_device, pairs, cfg)
        got = [x for h in stats.history for x in (h.loss, h.margin, h.grad_norm)]
        assert got == pytest.approx([x for t in expected for x in t], rel=REL, abs=1e-9)
        lora_fast = _lora(backend)
        for n in lora_plain:
            _close(lora_fast[n], lora_plain[n])
    finally:
        base.set_attn_implementation("sdpa")


def test_completions_cut_at_max_length_are_counted(backend):
    """A completion cut at train.max_length loses the end where a pair's workflows differ; training
    counts such sequences (the loop warns), and none at a limit that holds them all."""
    pairs = _pairs()
    enc, _ = _encode(backend, pairs)
    longest_prompt = max(enc.prompt_lens)
    limit = longest_prompt + 8  # every prompt fits; completions longer than 8 tokens after the longest are cut
    cut = {(backend.fmt.render(p.prompt), c) for p in pairs for c in (p.chosen, p.rejected)
           if len(backend.fmt.encode_text(backend.fmt.render(p.prompt))) + len(backend.fmt.completion_ids(c)) > limit}
    assert cut
    cfg = TrainConfig(loss="score-dpo", learning_rate=1e-4, max_length=limit)
    assert T.train(backend.model, backend.fmt, backend.tokenizer.pad_token_id, backend.torch_device, pairs,
                   cfg).truncated == len(cut)
    cfg = TrainConfig(loss="score-dpo", learning_rate=1e-4, max_length=2048)
    assert T.train(backend.model, backend.fmt, backend.tokenizer.pad_token_id, backend.torch_device, pairs,
                   cfg).truncated == 0


@pytest.mark.parametrize("shape", ["opening, two prompts", "no opening, two prompts", "opening cached"])
def test_segment_attention_equals_the_full_mask(shape):
    """attention.segment_attention (causal openings, one call per prompt's rest and its completions)
    against SDPA over the whole row with its (W, W) mask: outputs and gradients, on random tensors;
    with a cached opening, the queries are the row's tokens after it."""
    from types import SimpleNamespace

    from scoreflow.backends.cuda import attention

    seqs = [[1] * 7 + [2] * 3 + [3] * 4, [1] * 7 + [2] * 3 + [4] * 2, [1] * 7 + [5] * 5 + [6] * 3]
    prompts = [10, 10, 12]
    opening = 0 if shape.startswith("no opening") else 7
    tree, = T.group_trees(seqs, prompts, range(3), None, [opening] * 3)
    segments = tree.segments()
    width = tree.width
    owner = torch.zeros(width, dtype=torch.long)
    for k, (at, n, _) in enumerate(segments):
        owner[at:at + n] = k
    allowed = torch.zeros(width, width, dtype=torch.bool)
    for q in range(width):
        at, n, seen = segments[owner[q]]
        for s, m in seen:
            allowed[q, s:s + m] = True
        allowed[q, at:q + 1] = True
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, h, width, 8, generator=g, dtype=torch.float64, requires_grad=True) for h in (4, 2, 2))
    module = SimpleNamespace(num_key_value_groups=2, is_causal=True, training=False)
    cached = opening if shape == "opening cached" else 0
    got = attention.segment_attention(module, q[:, :, cached:], k, v, None, segments=segments)[0]
    want = torch.nn.functional.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1),
                                                            attn_mask=allowed).transpose(1, 2)[:, cached:]
    torch.testing.assert_close(got, want)
    w = torch.randn(want.shape, generator=g, dtype=torch.float64)
    grads = [torch.autograd.grad((x * w).sum(), (q, k, v)) for x in (got, want)]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
