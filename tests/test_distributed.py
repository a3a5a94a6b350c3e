"""Data-parallel training in the PyTorch backend (CPU, gloo): two ranks take the steps one process takes
on the whole batch, `scoreflow optimize`'s train.processes path runs them under `accelerate launch`,
and `scoreflow train-adapter` (through it) writes an adapter the backend loads."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("accelerate")

from scoreflow.model.backend import LoraConfig, TrainConfig, TrainPair  # noqa: E402
from scoreflow.backends.cuda import distributed, load  # noqa: E402

LORA = LoraConfig(rank=4, alpha=8, dropout=0.0)  # no dropout: its masks depend on each rank's RNG
# 7 pairs, 3 per step: over 2 ranks the shares are 1+2, 1+2 and 0+1 pairs (a rank with none included).
CFG = TrainConfig(beta=0.5, learning_rate=5e-3, batch_size=3, checkpoint_every=1)
# fp32. A rank packs its completions into other rows than one process does, and sums gradients in
# another order: summed log-probs (~ -300 here) then differ in the last bit (~3e-5), rewards by beta times that.
TOL = dict(rtol=1e-5, atol=2e-6)  # LoRA weights of magnitude ~0.15 (measured: at most 8e-7 apart)
STATS = dict(rel=1e-5, abs=2e-5)

PROMPTS = [
    [{"role": "user", "content": "Write a workflow for: Ava has 3 apples and gets 4 more."}],
    [{"role": "system", "content": "You design workflows."}, {"role": "user", "content": "Solve 12 * 7 with code."}],
    [{"role": "user", "content": "How many marbles are left?"}],
]
TEXTS = [
    "<graph>async def run_workflow(self):\n    return await self.custom(input=self.problem)</graph>",
    "I think the answer is 7.",
    "<graph>async def run_workflow(self):\n    s = await self.programmer(problem=self.problem)\n    return s</graph>",
    "No.",
    "The total is 84 because twelve sevens are eighty-four, see the table above.",
]


def _pairs() -> list[TrainPair]:
    spec = [(0, 0, 1, 0.9, 0.1), (0, 2, 1, 0.6, 0.1), (1, 4, 3, 1.0, 0.0), (0, 0, 1, 0.9, 0.1),
            (2, 3, 0, 0.75, 0.25), (1, 2, 4, 0.5, 0.4), (2, 1, 2, 0.7, 0.3)]
    return [TrainPair(PROMPTS[p], TEXTS[w], TEXTS[l], sw, sl) for p, w, l, sw, sl in spec]


def _backend(model: str):
    b = load(model, device="cpu", lora=LORA, seed=0)
    g = torch.Generator().manual_seed(7)  # a non-zero adapter: a fresh LoRA's zero B hides half the gradients
    with torch.no_grad():
        for p in b.model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return b


def _lora(b) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in b.model.named_parameters() if p.requires_grad}


def _same_steps(got, expected) -> None:
    assert len(got) == len(expected) == 3
    for a, e in zip(got, expected):
        assert (a.step, a.total) == (e.step, e.total)
        assert [a.loss, a.margin, a.chosen_reward, a.rejected_reward, a.grad_norm] == pytest.approx(
            [e.loss, e.margin, e.chosen_reward, e.rejected_reward, e.grad_norm], **STATS)


def _same_lora(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert got.keys() == expected.keys()
    for n in expected:
        torch.testing.assert_close(got[n], expected[n], **TOL)


@pytest.fixture(scope="module")
def single(tiny_llama):
    """One process on the whole batch: the steps and the adapter every data-parallel run must reproduce."""
    b = _backend(str(tiny_llama))
    start = _lora(b)
    stats = b.train(_pairs(), CFG)
    end = _lora(b)
    assert any(not torch.equal(start[n], end[n]) for n in end)
    return stats.history, end


def test_shares_split_each_batch_in_order():
    for n in range(0, 9):
        for world in (1, 2, 3, 4):
            shares = [distributed.shard(list(range(n)), r, world) for r in range(world)]
            assert sum(shares, []) == list(range(n))
            assert max(map(len, shares)) - min(map(len, shares)) <= 1


def _rank(rank: int, world: int, model: str, out: str) -> None:
    """One rank of a data-parallel run in a spawned process; records its own and the summed gradients."""
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{out}/rendezvous", rank=rank, world_size=world)
    seen: dict[str, list[torch.Tensor]] = {}
    reduce = distributed.all_reduce_grads

    def spy(params):
        if not seen:  # the first step
            seen["own"] = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]
            reduce(params)
            seen["summed"] = [p.grad.clone() for p in params]
        else:
            reduce(params)

    distributed.all_reduce_grads = spy  # train.py calls it through the module
    b = _backend(model)
    stats = b.train(_pairs(), CFG, checkpoint_dir=Path(out) / f"checkpoints-{rank}")
    torch.save({"lora": _lora(b), "history": [asdict(h) for h in stats.history], **seen}, f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_two_ranks_take_the_single_process_steps(tiny_llama, single, tmp_path):
    torch.multiprocessing.spawn(_rank, args=(2, str(tiny_llama), str(tmp_path)), nprocs=2)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    history, lora = single
    from scoreflow.model.backend import StepInfo

    for r in (r0, r1):
        _same_steps([StepInfo(**h) for h in r["history"]], history)
        _same_lora(r["lora"], lora)
    for n in lora:
        assert torch.equal(r0["lora"][n], r1["lora"][n])  # the ranks never drift apart
    # The reduction is what makes this work: each rank's own gradient is only its share of the batch's.
    for own0, own1, summed0, summed1 in zip(r0["own"], r1["own"], r0["summed"], r1["summed"]):
        assert torch.equal(summed0, summed1)
        torch.testing.assert_close(own0 + own1, summed0, **TOL)
    differ = [not torch.allclose(own, summed, rtol=1e-3, atol=1e-6)
              for r in (r0, r1) for own, summed in zip(r["own"], r["summed"])]
    assert all(differ)
    # only rank 0 writes checkpoints
    assert [p.name for p in (tmp_path / "checkpoints-0").glob("step-*")] == ["step-000002"]
    assert not (tmp_path / "checkpoints-1").exists()


def test_train_adapter_cli_on_two_ranks(tiny_llama, single, tmp_path, monkeypatch, capsys):
    """`scoreflow train-adapter --pairs` with train.processes = 2 (config train.processes) on CPU, through
    cli.main in this process: the backend it builds launches two ranks with accelerate, follows their
    steps (the command prints each), loads the adapter they wrote, and the command saves it. Each step,
    the backend's adapter and the saved one are the single process's. (One launch checks both the
    backend's train.processes path and the command; a spy on the command's backend records its steps.)"""
    from scoreflow.model.backend import StepInfo
    from scoreflow.cli import main as cli
    from scoreflow.run import session

    b = _backend(str(tiny_llama))
    b.save_adapter(tmp_path / "init")
    with open(tmp_path / "pairs.jsonl", "w") as f:
        for p in _pairs():
            f.write(json.dumps(asdict(p)) + "\n")
    seen: dict = {}
    make_backend = session.make_backend

    def spied(cfg):  # the command's backend, its train call's steps and result recorded
        policy = seen["policy"] = make_backend(cfg)
        train = policy.train

        def recorded(pairs, train_cfg, on_step=None, **kw):
            seen["processes"], seen["steps"] = train_cfg.processes, []

            def step(info: StepInfo) -> None:
                seen["steps"].append(info)
                on_step(info)

            seen["stats"] = train(pairs, train_cfg, on_step=step, **kw)
            return seen["stats"]

        policy.train = recorded
        return policy

    monkeypatch.setattr(session, "make_backend", spied)
    rc = cli.main(["train-adapter", "--backend", "cuda", "--device", "cpu",
                   "--pairs", str(tmp_path / "pairs.jsonl"), "--model", str(tiny_llama), "--out", str(tmp_path / "adapter"),
                   "--init-adapter", str(tmp_path / "init"), "--set", "train.processes=2",
                   "--set", "lora.rank=4", "--set", "lora.alpha=8", "--set", "lora.dropout=0",
                   "--set", "train.beta=0.5", "--set", "train.learning_rate=5e-3", "--set", "train.lr_schedule=constant",
                   "--set", "train.batch_size=3"])
    out, err = capsys.readouterr()
    assert rc == 0, err[-3000:]
    lines = out.splitlines()
    assert sum(line.startswith("step ") for line in lines) == 3 and lines[-1].startswith("adapter: ")
    history, lora = single
    stats = seen["stats"]
    assert seen["processes"] == 2
    _same_steps(seen["steps"], history)  # followed as the ranks took them
    _same_steps(stats.history, history)
    assert stats.steps == 3 and stats.tokens > 0
    _same_lora(_lora(seen["policy"]), lora)  # the backend loaded what the ranks wrote
    fresh = load(str(tiny_llama), device="cpu", lora=LORA, seed=1)
    fresh.load_adapter(tmp_path / "adapter")
    _same_lora(_lora(fresh), lora)


def test_run_dir_gives_the_loops_pairs_seed_and_adapter(tmp_path):
    """--run-dir RUN --iteration N trains on what the loop trained iteration N on: the latest attempt
    of each paired workflow under the generator prompt, the loop's seed, from iteration N-1's adapter."""
    from scoreflow.cli import main as cli
    from scoreflow import config as C
    from scoreflow.loop.prompts import generator_messages
    from scoreflow.cli.train_adapter import job_from_args
    from scoreflow.run.session import make_task, select

    cfg = C.build({"run": {"task": "arith", "problems": 3, "seed": 5}, "generator": {"model": "some/model"},
                   "lora": {"rank": 4}})
    run = tmp_path / "run"
    (run / "adapters" / "iter-1").mkdir(parents=True)
    (run / "config.toml").write_text(C.to_toml(cfg))
    workflows = [{"iteration": it, "problem": p, "slot": s, "attempt": a, "valid": a == 1, "tokens": 1,
                  "text": f"it{it} p{p} s{s} a{a}"}
                 for it in (1, 2) for p in range(3) for s in range(2) for a in range(2)]
    pairs = [{"iteration": 1, "problem": 0, "chosen": 0, "rejected": 1, "score_chosen": 1.0, "score_rejected": 0.0},
             {"iteration": 2, "problem": 1, "chosen": 0, "rejected": 1, "score_chosen": 1.0, "score_rejected": 0.5},
             {"iteration": 2, "problem": 2, "chosen": 1, "rejected": 0, "score_chosen": 0.5, "score_rejected": 0.0}]
    for name, records in (("workflows", workflows), ("pairs", pairs)):
        (run / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    args = cli.parser().parse_args(["train-adapter", "--run-dir", str(run), "--iteration", "2",
                                    "--out", str(tmp_path / "a"), "--set", "train.beta=0.3"])
    job = job_from_args(args)
    got = job.pairs
    task = make_task(cfg)
    problems = select(task.problems("validate"), 3, 5)
    assert got == [TrainPair(generator_messages(task, problems[1]), "it2 p1 s0 a1", "it2 p1 s1 a1", 1.0, 0.5),
                   TrainPair(generator_messages(task, problems[2]), "it2 p2 s1 a1", "it2 p2 s0 a1", 0.5, 0.0)]
    assert job.init_adapter == run / "adapters" / "iter-1"
    assert (job.cfg.generator.model, job.train.seed, job.train.beta, job.cfg.lora.rank) == ("some/model", 7, 0.3, 4)
