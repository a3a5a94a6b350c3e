"""`--preset paper` equals the table of docs/paper.md, and the learning-rate schedule it takes from the
reference: the training skeleton's per-step rate on hand-computed values, and the PyTorch backend's
optimiser stepping at it (the MLX backend's: tests/test_mlx_schedule.py, under -m mlx)."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest

from helpers import Fmt
from scoreflow import config as C
from scoreflow.errors import UserError
from scoreflow.model import training
from scoreflow.model.backend import LoraConfig, TrainConfig, TrainPair

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "paper.md"
SETTING = re.compile(r"^(?:(\w+): )?(\w+)\.(\w+)=(.+)$")  # `[task: ]section.key=value`
CITED = re.compile(r"\w\.(?:py|yaml|txt|md)`?:\d+")  # a file and line, e.g. `optimize.py:68`


def table() -> list[dict[str, str]]:
    """The rows of the settings table, by column header."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## The settings", 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    out = []
    for ln in rows[2:]:
        cells = [c.strip() for c in ln.strip().strip("|").split("|")]
        assert len(cells) == len(header), f"a row of {len(cells)} cells: {ln}"
        out.append(dict(zip(header, cells)))
    return out


def preset_cells(rows: list[dict[str, str]]) -> list[tuple[str, str, str, str, str]]:
    """(setting, task or '', section, key, value) for every `section.key=value` of the preset column."""
    out = []
    for row in rows:
        for span in re.findall(r"`([^`]+)`", row["`--preset paper`"]):
            m = SETTING.match(span)
            if m:
                out.append((row["setting"], m.group(1) or "", *m.group(2, 3, 4)))
    return out


def paper(task: str = "gsm8k", **sections) -> C.Config:
    return C.build({"run": {"preset": "paper", "task": task}, **sections})


def test_every_row_cites_the_reference_and_every_cell_is_parsed():
    rows = table()
    assert len(rows) >= 25, "the table lost rows, or the parser broke"
    for row in rows:
        assert row["paper"], row["setting"]
        assert CITED.search(row["reference code"]), f"{row['setting']}: no file:line of the reference"
        assert row["`--preset paper`"], row["setting"]
    # every flag named as a restore is a valid --set
    for row in rows:
        for item in re.findall(r"`--set ([^`]+)`", row["why it differs; the flag that restores the reference's"]):
            C.build({"run": {"preset": "paper"}, **C.parse_set([item])})


def test_the_preset_equals_the_table():
    cells = preset_cells(table())
    assert len(cells) >= 20
    for setting, task, section, key, value in cells:
        got = getattr(getattr(paper(task or "gsm8k"), section), key)
        want = getattr(getattr(paper(task or "gsm8k", **{section: {key: value}}), section), key)  # --set's coercion
        assert got == want, f"{setting}: --preset paper gives {section}.{key} = {got!r}, the table {value!r}"
    named = {(task, section, key) for _, task, section, key, _ in cells}
    for section, values in C.PRESETS["paper"].items():
        for key in values:
            assert ("", section, key) in named, f"the preset sets {section}.{key}; the table does not say so"
    for task, layer in C.PRESET_TASKS["paper"].items():
        for section, values in layer.items():
            for key in values:
                assert (task, section, key) in named, f"the preset sets {section}.{key} for {task}; the table does not"


def test_per_task_values_sit_between_the_preset_and_the_user():
    assert paper("humaneval").train.pairs == 600
    assert {paper(t).train.pairs for t in ("gsm8k", "math", "mbpp", "hotpotqa", "drop")} == {2000}
    assert paper("humaneval", train={"pairs": "50"}).train.pairs == 50  # a flag still wins
    assert C.build({"run": {"preset": "demo", "task": "humaneval"}}).train.pairs == C.PRESETS["demo"]["train"]["pairs"]


def test_the_paper_preset_leaves_the_demo_alone():
    """Every key the paper preset sets resolves under demo to the default or to demo's own value."""
    demo, default = C.build({"run": {"preset": "demo"}}), C.Config()
    for section, values in C.PRESETS["paper"].items():
        for key in values:
            want = C.PRESETS["demo"].get(section, {}).get(key, getattr(getattr(default, section), key))
            assert getattr(getattr(demo, section), key) == want, f"{section}.{key}"
    assert default.train.lr_schedule == "constant"


def test_scoreflow_config_prints_the_reference_rate_and_schedule():
    from scoreflow.cli.main import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["config", "--preset", "paper"]) == 0
    text = out.getvalue()
    assert re.search(r"^learning_rate = 1e-06$", text, re.M)
    assert re.search(r'^lr_schedule = "linear"$', text, re.M)


def test_train_config_carries_the_schedule():
    cfg = C.train_config(paper(), 2)
    assert (cfg.learning_rate, cfg.lr_schedule, cfg.max_length) == (1e-6, "linear", 10000)


def test_the_opening_gradient_reaches_the_backend_and_not_with_checkpointing():
    assert C.train_config(C.build({}), 1).opening_gradient is True  # exact by default, in every preset
    held = C.train_config(C.build({"train": {"opening_gradient": "false"}}), 1)
    assert held.opening_gradient is False and held.gradient_checkpointing is False  # the demo preset's gives way
    assert C.build({}).train.gradient_checkpointing is True  # the demo preset: recomputed layers, for memory
    with pytest.raises(UserError, match="gradient_checkpointing"):
        C.build({"train": {"opening_gradient": False, "gradient_checkpointing": True}})


# ---- the schedule in the skeleton ----------------------------------------------------------------

def test_learning_rate_at_hand_computed():
    lin = TrainConfig(learning_rate=1e-6, lr_schedule="linear")
    assert [training.learning_rate_at(lin, s, 4) for s in range(4)] == pytest.approx([1e-6, 7.5e-7, 5e-7, 2.5e-7])
    assert training.learning_rate_at(lin, 1999, 2000) == pytest.approx(5e-10)  # the reference's last step
    assert training.learning_rate_at(lin, 0, 1) == 1e-6
    const = TrainConfig(learning_rate=1e-4)
    assert [training.learning_rate_at(const, s, 4) for s in range(4)] == [1e-4] * 4
    with pytest.raises(ValueError, match="schedule"):
        training.learning_rate_at(TrainConfig(lr_schedule="cosine"), 0, 4)


class RateWork:
    """Tensor work that records the learning rate of every optimiser step."""

    def __init__(self):
        self.rates: list[float] = []

    def zero_grad(self):
        pass

    def passes(self, pairs):
        return [training.Pass(pairs)]

    def backward(self, p, weight):
        return dict.fromkeys(training.STATS, 0.0)

    def update(self, max_norm, learning_rate):
        self.rates.append(learning_rate)
        return 0.0

    def save(self, adapter, optimizer):
        adapter.write_text(json.dumps(self.rates))
        optimizer.write_text("{}")

    def load(self, adapter, optimizer):
        self.rates = json.loads(adapter.read_text())


def _pairs(n: int) -> list[TrainPair]:
    return [TrainPair([{"role": "user", "content": f"q{i}"}], "good", "bad", 1.0, 0.0) for i in range(n)]


def test_the_skeleton_steps_at_the_schedule_and_a_resumed_run_continues_it(tmp_path):
    cfg = TrainConfig(learning_rate=0.3, lr_schedule="linear", batch_size=2, epochs=2, checkpoint_every=2)
    plan = training.TrainPlan.make(Fmt(), _pairs(5), cfg)
    assert len(plan.steps) == 6  # 3 steps an epoch: the schedule spans both epochs, as transformers' does
    whole = RateWork()
    training.train(plan, cfg, whole)
    assert whole.rates == pytest.approx([0.3 * (6 - s) / 6 for s in range(6)])

    cut = RateWork()

    def stop(info):
        if info.step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        training.train(plan, cfg, cut, on_step=stop, checkpoint_dir=tmp_path)
    resumed = RateWork()
    training.train(plan, cfg, resumed, checkpoint_dir=tmp_path)  # from the step-2 checkpoint
    assert resumed.rates == pytest.approx(whole.rates)
    with pytest.raises(ValueError, match="schedule"):
        training.TrainPlan.make(Fmt(), _pairs(2), TrainConfig(lr_schedule="cosine"))


# ---- the PyTorch backend steps at the skeleton's rate --------------------------------------------

def test_torch_optimizer_steps_at_the_schedule(tiny_llama, test_device, monkeypatch):
    torch = pytest.importorskip("torch")
    pytest.importorskip("peft")
    from scoreflow.backends.cuda import load

    backend = load(str(tiny_llama), device=test_device, lora=LoraConfig(rank=4, alpha=8, dropout=0.0), seed=0)
    seen: list[float] = []
    step = torch.optim.AdamW.step

    def spy(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    pairs = [TrainPair([{"role": "user", "content": f"Problem {i}"}], "<graph>a</graph>", "No.", 0.9, 0.1)
             for i in range(3)]
    cfg = TrainConfig(learning_rate=1e-3, lr_schedule="linear", checkpoint_every=0)
    backend.train(pairs, cfg)
    assert seen == pytest.approx([1e-3, 1e-3 * 2 / 3, 1e-3 / 3])
