"""Helpers shared by the benchmarks: the machine's description, peak memory, one JSON line out."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import resource
import sys
from pathlib import Path
from typing import Any

# Set before torch starts OpenMP (as scoreflow.backends.cuda does): spinning worker threads collapse
# throughput on a shared machine, and both sides of every comparison must run alike.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def device_info(device: str = "cpu") -> str:
    if device.startswith("cuda"):
        import torch

        return f"{torch.cuda.get_device_name(0)} (CUDA)"
    cpu = platform.processor() or platform.machine()
    try:
        load = os.getloadavg()[0]
        load_s = f", load average {load:.1f} at start"
    except OSError:
        load_s = ""
    return f"{platform.system()} {cpu}, {os.cpu_count()} cores{load_s}"


def today() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return peak_rss_mb()


def emit(obj: dict[str, Any], out: Path | None = None) -> None:
    """Print the result as one JSON line; with `out`, also write it there (indented)."""
    print(json.dumps(obj, sort_keys=False), flush=True)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(obj, indent=1) + "\n")


def last_json(text: str) -> dict[str, Any]:
    """The last line of a child's stdout that parses as a JSON object."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise RuntimeError(f"no JSON result in output:\n{text[-2000:]}")


# Architectures for `--model random:NAME`: the real shapes with random weights, for machines that
# cannot download the checkpoint (a bare GPU box). Throughput and memory depend on the shape alone;
# losses and generated text do not mean anything then.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192,
                         rope_theta=100000.0, tie_word_embeddings=True),
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, max_position_embeddings=131072,
                         rope_theta=500000.0, tie_word_embeddings=False),
}


def default_tokenizer() -> str:
    """The embedded SmolLM2's tokenizer, as an HF folder (converted once)."""
    from scoreflow.backends.cuda.model import convert_gguf
    from scoreflow.model.source import embedded_gguf

    return str(convert_gguf(str(embedded_gguf())))


def model_folder(spec: str | None, tokenizer: str | None = None, dtype: str = "float32") -> str:
    """An HF folder for --model: None is the embedded SmolLM2 (converted); `random:NAME` writes a
    randomly initialised model of a known architecture once (under $SCOREFLOW_CACHE), with the
    tokenizer of --tokenizer or SmolLM2; anything else is returned unchanged."""
    if not spec:
        return default_tokenizer()
    if not spec.startswith("random:"):
        return spec
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from scoreflow.model.source import cache_dir

    name = spec.split(":", 1)[1]
    if name not in ARCHITECTURES:
        raise SystemExit(f"unknown architecture {name!r}: choose from {', '.join(ARCHITECTURES)}")
    folder = cache_dir() / "models" / f"random-{name}-{dtype}"
    if (folder / "config.json").is_file():
        return str(folder)
    tok = AutoTokenizer.from_pretrained(tokenizer or default_tokenizer())
    cfg = LlamaConfig(**ARCHITECTURES[name], rms_norm_eps=1e-5, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    where = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(where):  # initialising 8B parameters on a GPU takes seconds, on a CPU minutes
        model = AutoModelForCausalLM.from_config(cfg, dtype=getattr(torch, dtype))
    tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    model.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    del model
    os.replace(tmp, folder)
    return str(folder)
