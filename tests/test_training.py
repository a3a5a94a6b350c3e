"""The one training skeleton (scoreflow/model/training.py): its batching rule, step bookkeeping and
checkpoints on a fake backend, and both real backends taking the same pairs in the same steps."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from helpers import Fmt
from scoreflow.model import training
from scoreflow.model.backend import LoraConfig, StepInfo, TrainConfig, TrainPair

QUESTIONS = ("Ava has 3 apples and gets 4 more. How many now?", "Solve 12 * 7 with code.", "Hi")
PROMPTS = [[{"role": "user", "content": q}] for q in QUESTIONS]
GRAPH = "<graph>async def run_workflow(self):\n    return await self.{}(problem=self.problem)</graph>"
TEXTS = [GRAPH.format("custom"), "I think the answer is 7.", GRAPH.format("programmer") + "\n# one more line", "No.",
         "The total is 84 because twelve sevens are eighty-four, see the table above."]


def pairs() -> list[TrainPair]:
    """Long and short pairs interleaved, prompts shared and repeated: grouping by length or by prompt
    would change which pairs share a step."""
    spec = [(0, 4, 3, 0.9, 0.1), (1, 3, 1, 0.6, 0.2), (0, 0, 2, 1.0, 0.0), (2, 1, 3, 0.75, 0.25),
            (1, 2, 4, 0.5, 0.0), (0, 3, 1, 0.625, 0.125), (2, 0, 4, 1.0, 0.5)]
    return [TrainPair(PROMPTS[p], TEXTS[w], TEXTS[l], sw, sl) for p, w, l, sw, sl in spec]


CFG = TrainConfig(beta=0.1, learning_rate=1e-3, batch_size=3, epochs=2, checkpoint_every=0)
STEPS = [[0, 1, 2], [3, 4, 5], [6]] * 2  # the rule: in order, 3 per step, the last one short, per epoch


def test_batching_rule():
    assert training.batches(7, 3, 2) == STEPS
    assert training.batches(4, 1, 1) == [[0], [1], [2], [3]]
    assert training.batches(5, 8, 1) == [[0, 1, 2, 3, 4]]
    assert training.batches(0, 2, 3) == [] and training.batches(3, 2, 0) == []
    for n in range(12):
        for size in (1, 2, 3, 5):
            steps = training.batches(n, size, 2)
            assert sum(steps, []) == list(range(n)) * 2
            assert all(0 < len(s) <= size for s in steps)


def test_group_relative_steps_hold_whole_groups():
    """Under grpo a step holds batch_size whole groups (consecutive pairs of one prompt), however many
    pairs each has; the other losses keep batch_size pairs."""
    spec = [0, 0, 0, 1, 2, 2, 0]  # prompt of each pair; the last 0 is a new group (not consecutive)
    ps = [TrainPair(PROMPTS[p], TEXTS[0], TEXTS[1], 1.0, 0.0) for p in spec]
    grpo = TrainConfig(loss="grpo", batch_size=1, epochs=2)
    assert training.steps_of(ps, grpo) == [[0, 1, 2], [3], [4, 5], [6]] * 2
    assert training.steps_of(ps, TrainConfig(loss="grpo", batch_size=2)) == [[0, 1, 2, 3], [4, 5, 6]]
    assert training.steps_of(ps, TrainConfig(loss="score-dpo", batch_size=2)) == [[0, 1], [2, 3], [4, 5], [6]]
    assert training.steps_of([], grpo) == []


# -- the skeleton on a fake backend ----------------------------------------------------------------

class FakeWork:
    """One pass per pair; a pair's loss is its index. Records what each step ran."""

    def __init__(self):
        self.steps: list[list[int]] = []
        self.updates = 0
        self.loaded: list[Path] = []

    def zero_grad(self):
        self.steps.append([])

    def passes(self, pairs):
        return [training.Pass([k]) for k in reversed(pairs)]  # any order inside a step

    def backward(self, p, weight):
        self.steps[-1] += p.pairs
        k = p.pairs[0]
        return {"loss": float(k), "margin": 2.0 * k, "chosen_reward": 1.0, "rejected_reward": -1.0}

    def update(self, max_norm, learning_rate):
        self.updates += 1
        return float(self.updates)

    def save(self, adapter, optimizer):
        adapter.write_text(json.dumps({"updates": self.updates}))
        optimizer.write_text("{}")

    def load(self, adapter, optimizer):
        self.updates = json.loads(adapter.read_text())["updates"]
        self.loaded.append(adapter.parent)


def test_steps_and_logged_statistics():
    plan = training.TrainPlan.make(Fmt(), pairs(), CFG)
    assert plan.steps == STEPS
    # grouping by length (the MLX backend's rule before the skeleton) would have made other steps
    by_length = sorted(range(7), key=lambda k: max(len(plan.enc.seqs[i]) for i in plan.index[k]))
    assert sorted(by_length[:3]) not in plan.steps
    assert len(plan.enc.seqs) == len({(str(p.prompt), t) for p in pairs() for t in (p.chosen, p.rejected)})
    work, seen = FakeWork(), []
    stats = training.train(plan, CFG, work, on_step=seen.append)
    assert [sorted(s) for s in work.steps] == STEPS
    assert seen == stats.history and [(h.step, h.total) for h in seen] == [(i, 6) for i in range(1, 7)]
    # the step's statistics are means over its pairs, whatever its passes
    assert [h.loss for h in seen] == pytest.approx([1.0, 4.0, 6.0] * 2)
    assert [h.margin for h in seen] == pytest.approx([2.0, 8.0, 12.0] * 2)
    assert [h.grad_norm for h in seen] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert stats.tokens == 2 * sum(len(plan.enc.seqs[i]) for p in plan.index for i in p)
    with pytest.raises(ValueError, match="unknown loss"):
        training.TrainPlan.make(Fmt(), pairs(), TrainConfig(loss="ipo"))


def test_checkpoint_layout_rotation_and_resume(tmp_path):
    cfg = TrainConfig(batch_size=3, epochs=2, checkpoint_every=2)
    plan, ck = training.TrainPlan.make(Fmt(), pairs(), cfg), tmp_path / "ck"

    def boom(info):
        if info.step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        training.train(plan, cfg, FakeWork(), on_step=boom, checkpoint_dir=ck)
    assert [p.name for p in ck.iterdir()] == ["step-000004"]  # step-000002 rotated out
    assert sorted(f.name for f in (ck / "step-000004").iterdir()) == \
        ["adapter.safetensors", "optimizer.safetensors", "state.json"]
    work = FakeWork()
    resumed = training.train(plan, cfg, work, checkpoint_dir=ck)
    assert work.loaded == [ck / "step-000004"] and [sorted(s) for s in work.steps] == STEPS[4:]
    assert [h.step for h in resumed.history] == [1, 2, 3, 4, 5, 6] and resumed.steps == 6
    assert [h.grad_norm for h in resumed.history] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]  # the update count carried over


def test_a_checkpoint_of_the_previous_version_resumes(tmp_path):
    """Written as both backends wrote them before the skeleton (state.json with vars(StepInfo))."""
    ck = tmp_path / "step-000003"
    ck.mkdir()
    (ck / "adapter.safetensors").write_text(json.dumps({"updates": 3}))
    (ck / "optimizer.safetensors").write_text("{}")
    history = [StepInfo(i, 6, 0.5, 0.1, 0.2, 0.1, 1.0, 0.3) for i in (1, 2, 3)]
    (ck / "state.json").write_text(json.dumps({"step": 3, "history": [vars(h) for h in history]}))
    work = FakeWork()
    stats = training.train(training.TrainPlan.make(Fmt(), pairs(), CFG), CFG, work, checkpoint_dir=tmp_path)
    assert stats.history[:3] == history and [sorted(s) for s in work.steps] == STEPS[3:]


# -- both backends take the skeleton's steps --------------------------------------------------------

def record_steps(monkeypatch) -> list[list[int]]:
    """What the backend's tensor work ran, step by step: the pairs of its passes."""
    steps: list[list[int]] = []
    real = training.train

    class Spy:
        def __init__(self, work):
            self.work = work

        def __getattr__(self, name):
            return getattr(self.work, name)

        def zero_grad(self):
            steps.append([])
            self.work.zero_grad()

        def backward(self, p, weight):
            steps[-1].extend(p.pairs)
            return self.work.backward(p, weight)

    monkeypatch.setattr(training, "train", lambda plan, cfg, work, **kw: real(plan, cfg, Spy(work), **kw))
    return steps


def torch_steps(tiny_llama, monkeypatch) -> tuple[list[list[int]], list[set], object]:
    """The PyTorch backend's steps: the pairs, and the sequences its packed rows ran with gradients."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("peft")
    from scoreflow.backends.cuda import load
    from scoreflow.backends.cuda import train as T

    steps, seqs = record_steps(monkeypatch), []
    real = T.packed_logprobs

    def spy(model, rows, n_out, pad_id, device, *rest):
        if torch.is_grad_enabled():
            if len(seqs) < len(steps):
                seqs.append(set())
            seqs[-1] |= {tuple(t.opening + r.prompt + c) for t in rows for r in t.rows for c in r.completions}
        return real(model, rows, n_out, pad_id, device, *rest)

    monkeypatch.setattr(T, "packed_logprobs", spy)
    b = load(str(tiny_llama), device="cpu", lora=LoraConfig(rank=4, alpha=8, dropout=0.0), seed=0)
    stats = b.train(pairs(), CFG)
    monkeypatch.undo()
    assert stats.steps == 6
    return steps, seqs, b.fmt


def mlx_steps(tiny_llama, monkeypatch) -> tuple[list[list[int]], list[set], object]:
    """The MLX backend's steps: the pairs, and the sequences its differentiated passes ran."""
    if importlib.util.find_spec("mlx_lm") is None:
        pytest.skip("mlx-lm is not installed")
    from scoreflow.backends import mlx as B  # before mlx.core: preloads OpenBLAS
    from scoreflow.backends.mlx import train as T

    steps, seqs = record_steps(monkeypatch), []
    real = T.sequence_logprobs

    def spy(model, ss, prompt_lens, pad_id, shared=True, *rest):
        if len(seqs) < len(steps):
            seqs.append(set())
        seqs[-1] |= {tuple(s) for s in ss}
        return real(model, ss, prompt_lens, pad_id, shared, *rest)

    monkeypatch.setattr(T, "sequence_logprobs", spy)
    mb = B.load(str(tiny_llama), device="cpu", lora=LoraConfig(rank=4, alpha=8.0, dropout=0.0), seed=0)
    stats = mb.train(pairs(), CFG)
    monkeypatch.undo()
    assert stats.steps == 6
    return steps, seqs, mb.fmt


def expected_sequences(fmt) -> list[set]:
    plan = training.TrainPlan.make(fmt, pairs(), CFG)
    return [{tuple(plan.enc.seqs[i]) for i in plan.sequences(step)} for step in plan.steps]


def test_torch_backend_takes_the_skeletons_steps(tiny_llama, monkeypatch):
    steps, seqs, fmt = torch_steps(tiny_llama, monkeypatch)
    assert [sorted(s) for s in steps] == STEPS and all(len(s) == len(set(s)) for s in steps)
    assert seqs == expected_sequences(fmt)


@pytest.mark.mlx
def test_mlx_backend_takes_the_skeletons_steps(tiny_llama, monkeypatch):
    steps, seqs, fmt = mlx_steps(tiny_llama, monkeypatch)
    assert [sorted(s) for s in steps] == STEPS and all(len(s) == len(set(s)) for s in steps)
    assert seqs == expected_sequences(fmt)


@pytest.mark.mlx
def test_same_pairs_same_seed_same_steps_on_both_backends(tiny_llama, monkeypatch):
    """The same pairs, config and seed: every step holds the same pairs, in the same order of steps,
    and each backend's tensor work runs the same token sequences in it."""
    t_steps, t_seqs, _ = torch_steps(tiny_llama, monkeypatch)
    m_steps, m_seqs, _ = mlx_steps(tiny_llama, monkeypatch)
    assert [sorted(s) for s in t_steps] == [sorted(s) for s in m_steps] == STEPS
    assert t_seqs == m_seqs and len(t_seqs) == 6


def test_the_loop_warns_when_training_sequences_were_cut(tmp_path, monkeypatch, capsys):
    from fake_backend import FakeBackend, write_task

    from scoreflow.cli import main as cli
    from scoreflow.model.backend import TrainStats

    class Cut(FakeBackend):
        def train(self, pairs, cfg, **kw):
            stats = super().train(pairs, cfg, **kw)
            return TrainStats(steps=stats.steps, truncated=3)

    monkeypatch.setattr("scoreflow.run.session.make_backend", lambda cfg: Cut())
    task = write_task(tmp_path)
    assert cli.main(["optimize", *task, "--run-dir", str(tmp_path / "run"), "--iterations", "1", "--problems", "2",
                     "-k", "3", "--no-dashboard", "--set", "train.max_length=512"]) == 0
    out = capsys.readouterr()
    assert "3 training sequences were cut at train.max_length = 512 tokens" in out.out + out.err
