"""Checks that run before any model loads: everything a user can get wrong that can be seen in seconds.

The data splits parse; the generator model is a whole GGUF file (magic bytes, header, tensors within
the file), an HF folder with its config and complete weights, or a hub id that is cached or on the
hub; the OpenAI-compatible executor has its key variable, a URL, and a server that answers GET
/models, serving the model asked for when it lists its models. Each check raises a one-line UserError.
"""

from __future__ import annotations

import json
import mmap
import os
import re
import socket
import struct
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterable

from scoreflow.errors import UserError, one_line

SERVER_TIMEOUT_S = 5.0
HUB_TIMEOUT_S = 5.0
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
OPENAI_URL = "https://api.openai.com/v1"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def preflight(cfg, splits: Iterable[str] = ("validate",), *, model: bool = True, executor: bool = True,
              network: bool = True):
    """Check `cfg` for a command that reads `splits` and loads the generator model; return the task.
    `network` False: only what can be checked offline (a dry run checks the rest after its plan,
    with `network_checks`)."""
    from scoreflow.run.session import make_task

    task = make_task(cfg)
    for split in splits:
        task.problems(split)
    if model:
        check_model(cfg.generator.model, network=network)
    if executor:
        check_executor(cfg.executor, server=network)
    return task


def network_checks(cfg, *, model: bool = True, executor: bool = True) -> None:
    """The checks that need the network: a hub model that is not cached, the executor's server."""
    from scoreflow.model.source import resolve_model

    if model:
        source = resolve_model(cfg.generator.model)
        if source.kind == "hub":
            check_hub(source.path)
    if executor and cfg.executor.kind == "openai":
        ex = cfg.executor
        served = list_models(ex.base_url or OPENAI_URL, api_key(ex.api_key_env, required=False), ex.api_key_env)
        if served and not serves(served, ex.model):
            raise UserError(not_served(ex, served))


# ---- the generator model -----------------------------------------------------------------------

def check_model(spec: str, *, network: bool = True) -> None:
    from scoreflow.model.source import resolve_model

    source = resolve_model(spec)
    if source.kind == "gguf":
        check_gguf(Path(source.path), source.spec)
    elif source.kind == "folder":
        check_hf_folder(Path(source.path), source.spec)
    elif network:
        check_hub(source.path)


class _Truncated(Exception):
    pass


class _Header:
    """A little-endian (or big-endian) cursor over a GGUF header; reading past the end raises _Truncated."""

    FIXED = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}

    def __init__(self, buf: Any, order: str):
        self.buf, self.order, self.pos = buf, order, 0

    def take(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise _Truncated
        (value,) = struct.unpack_from(self.order + fmt, self.buf, self.pos)
        self.pos += size
        return value

    def string(self) -> bytes:
        n = self.take("Q")
        if self.pos + n > len(self.buf):
            raise _Truncated
        self.pos += n
        return bytes(self.buf[self.pos - n:self.pos])

    def value(self, kind: int) -> Any:
        if kind in self.FIXED:
            return self.take(self.FIXED[kind])
        if kind == 8:
            return self.string()
        if kind == 9:
            item, count = self.take("I"), self.take("Q")
            if item in self.FIXED:  # skip fixed-size items without reading them
                size = struct.calcsize(self.FIXED[item]) * count
                if self.pos + size > len(self.buf):
                    raise _Truncated
                self.pos += size
            else:
                for _ in range(count):
                    self.value(item)
            return None
        raise ValueError(f"unknown metadata value type {kind}")


def check_gguf(path: Path, spec: str = "") -> None:
    """The header parses and every tensor lies inside the file (an interrupted download fails here)."""
    name = spec or str(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if f.read(4) != b"GGUF":
                raise UserError(f"model {name} is not a GGUF file (it does not start with the GGUF magic bytes)")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                end = _gguf_tensors_end(buf, name)
    except OSError as e:
        raise UserError(f"cannot read model {name}: {e.strerror or e}") from None
    except _Truncated:
        raise UserError(f"model {name} is cut short inside its header ({size} bytes): download it again") from None
    except (ValueError, struct.error, OverflowError) as e:
        raise UserError(f"model {name} has a corrupt GGUF header ({e})") from None
    if end > size:
        raise UserError(f"model {name} is cut short: its tensors need {end} bytes, the file has {size} "
                        "(an interrupted download?): download it again")


def _gguf_tensors_end(buf: Any, name: str) -> int:
    """The byte offset where the last tensor's data ends."""
    import gguf

    if len(buf) < 24:
        raise _Truncated
    order = "<" if struct.unpack_from("<I", buf, 4)[0] < 0x10000 else ">"
    h = _Header(buf, order)
    h.pos = 4
    version = h.take("I")
    if version < 2:
        raise UserError(f"model {name} is a GGUF version {version} file, which is not supported: convert it again")
    n_tensors, n_kv = h.take("Q"), h.take("Q")
    if n_tensors > 1 << 20 or n_kv > 1 << 20:
        raise ValueError(f"{n_tensors} tensors, {n_kv} metadata keys")
    alignment = 32
    for _ in range(n_kv):
        key, kind = h.string(), h.take("I")
        value = h.value(kind)
        if key == b"general.alignment" and isinstance(value, int) and value > 0:
            alignment = value
    ends = [0]
    for _ in range(n_tensors):
        h.string()
        dims = [h.take("Q") for _ in range(h.take("I"))]
        kind, offset = h.take("I"), h.take("Q")
        try:
            block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(kind)]
        except (ValueError, KeyError):
            raise ValueError(f"unknown tensor type {kind}") from None
        count = 1
        for d in dims:
            count *= d
        ends.append(offset + count // block * type_size)
    data_start = -(-h.pos // alignment) * alignment
    return data_start + max(ends)


WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
TOKENIZER = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


def check_hf_folder(path: Path, spec: str = "") -> None:
    name = spec or str(path)
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"model folder {name}: config.json does not parse ({one_line(str(e), 120)})") from None
    if not isinstance(config, dict):
        raise UserError(f"model folder {name}: config.json is not a JSON object")
    present = [w for w in WEIGHTS if (path / w).is_file()]
    if not present:
        raise UserError(f"model folder {name} holds no weights (model.safetensors, pytorch_model.bin or a "
                        "sharded index)")
    if not any((path / t).is_file() for t in TOKENIZER):
        raise UserError(f"model folder {name} holds no tokenizer (tokenizer.json or tokenizer.model)")
    for w in present:
        if w.endswith(".index.json"):
            _check_shards(path, w, name)
        elif w.endswith(".safetensors"):
            check_safetensors(path / w, name)


def _check_shards(path: Path, index: str, name: str) -> None:
    try:
        shards = set(json.loads((path / index).read_text(encoding="utf-8"))["weight_map"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise UserError(f"model folder {name}: {index} does not parse") from None
    missing = sorted(s for s in shards if not (path / s).is_file())
    if missing:
        raise UserError(f"model folder {name} lacks {len(missing)} weight shard(s) named in {index}, "
                        f"e.g. {missing[0]}")
    for s in sorted(shards):
        if s.endswith(".safetensors"):
            check_safetensors(path / s, name)


def check_safetensors(file: Path, name: str) -> None:
    """The header parses and the tensors it describes fit the file."""
    try:
        size = file.stat().st_size
        with open(file, "rb") as f:
            raw = f.read(8)
            n = struct.unpack("<Q", raw)[0] if len(raw) == 8 else -1
            if not 0 < n <= min(size - 8, 100 << 20):
                raise ValueError("no header")
            header = json.loads(f.read(n))
        end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
    except OSError as e:
        raise UserError(f"cannot read {file.name} of model {name}: {e.strerror or e}") from None
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, struct.error):
        raise UserError(f"model {name}: {file.name} is not a valid safetensors file") from None
    if 8 + n + end > size:
        raise UserError(f"model {name}: {file.name} is cut short ({size} of {8 + n + end} bytes): download it again")


def check_hub(repo_id: str) -> None:
    """A hub id is fine when cached; otherwise it must exist on a reachable hub."""
    from huggingface_hub import HfApi, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    # The environment as it is now (huggingface_hub reads it once, at import).
    if isinstance(try_to_load_from_cache(repo_id, "config.json", cache_dir=os.environ.get("HF_HUB_CACHE")), str):
        return
    offline = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    if any(os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE") for v in offline):
        raise UserError(f"model {repo_id} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set: "
                        "download it first, or give a local path")
    try:
        HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None).model_info(repo_id, timeout=HUB_TIMEOUT_S)
    except GatedRepoError:
        raise UserError(f"model {repo_id} is gated on the Hugging Face Hub: accept its terms there and set "
                        "HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise UserError(f"no model {repo_id} on the Hugging Face Hub (if it is private, set HF_TOKEN)") from None
    except Exception as e:
        raise UserError(f"model {repo_id} is not in the local cache and the Hugging Face Hub cannot be reached "
                        f"({one_line(f'{type(e).__name__}: {e}', 160)})") from None


# ---- the executor ------------------------------------------------------------------------------

def check_executor(ex, *, server: bool = True) -> None:
    """An OpenAI-compatible executor: its model named, its key variable set, its server answering
    (`server` False: not asked)."""
    if ex.kind != "openai":
        return
    if not ex.model:
        raise UserError("executor.kind = openai needs the model name to request: --executor-model NAME")
    if ex.base_url:
        check_url(ex.base_url)
    key = api_key(ex.api_key_env, required=not ex.base_url or ex.api_key_env != DEFAULT_KEY_ENV)
    if not server:
        return
    served = list_models(ex.base_url or OPENAI_URL, key, ex.api_key_env)
    if served and not serves(served, ex.model):
        raise UserError(not_served(ex, served))


def not_served(ex, served: list[str]) -> str:
    shown = ", ".join(served[:6]) + (", ..." if len(served) > 6 else "")
    return (f"the executor server {ex.base_url or OPENAI_URL} does not serve model {ex.model!r} "
            f"(it lists: {shown}): fix --executor-model")


def api_key(env: str, *, required: bool) -> str:
    if not _ENV_NAME.match(env or ""):
        raise UserError("executor.api_key_env (--api-key-env) takes the name of an environment variable, "
                        "not the key itself")
    key = os.environ.get(env, "")
    if required and not key:
        raise UserError(f"the API key variable {env} is not set (executor.api_key_env): export {env}=... first")
    return key


def check_url(url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"executor base URL {url!r} is not an http(s) URL, e.g. http://127.0.0.1:8000/v1")
    try:
        parts.port
    except ValueError:
        raise UserError(f"executor base URL {url!r} has a bad port") from None


def list_models(base_url: str, key: str, env: str, timeout: float = SERVER_TIMEOUT_S) -> list[str] | None:
    """The model ids the server lists, or None when it answers without a list (not every server has one).
    A server that is down, silent, or refuses the key fails."""
    url = base_url.rstrip("/") + "/models"
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    where = f"the executor server {base_url}"
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read(4 << 20)
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            how = f"the key in {env}" if key else f"a request without a key ({env} is not set)"
            raise UserError(f"{where} refused {how} (HTTP {e.code}): check the key and executor.api_key_env") from None
        return None  # it answered: the chat endpoint may still work
    except (TimeoutError, socket.timeout):
        raise UserError(f"{where} did not answer GET /models within {timeout:g} s") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, (TimeoutError, socket.timeout)):
            raise UserError(f"{where} did not answer GET /models within {timeout:g} s") from None
        text = getattr(reason, "strerror", None) or str(reason)
        raise UserError(f"{where} cannot be reached ({one_line(text, 120)}): is it running, and is the URL "
                        "right?") from None
    try:
        data = json.loads(body)
    except ValueError:
        raise UserError(f"{where} is not an OpenAI-compatible API (GET /models is not JSON): "
                        "check the base URL (it usually ends in /v1)") from None
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return None
    return [str(m["id"]) for m in items if isinstance(m, dict) and m.get("id")]


def serves(served: list[str], model: str) -> bool:
    return model in served or f"{model}:latest" in served
