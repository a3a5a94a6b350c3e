"""The model folder scoreflow writes and what it says of a model's source (scoreflow/model/source.py),
read back by transformers' own reader: config.json's reader keys, and the hub id and licence of each kind
of source. (The exported adapter and the model cards: test_export.py.)"""

from __future__ import annotations

import json

from scoreflow.model.source import (
    EMBEDDED_HUB_ID, ModelSource, add_reader_keys, hub_id, license_metadata, reader_keys,
)


# -- config.json keys ----------------------------------------------------------------------------

def test_reader_keys_mirror_rope_parameters():
    flat = {"rope_parameters": {"rope_type": "default", "rope_theta": 100000.0}, "dtype": "float32"}
    assert reader_keys(flat) == {"rope_theta": 100000.0, "torch_dtype": "float32"}
    scaled = {"rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                  "partial_rotary_factor": 0.5}}
    assert reader_keys(scaled) == {"rope_theta": 500000.0, "partial_rotary_factor": 0.5,
                                   "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}
    # transformers 5 takes rope_parameters over a stale top-level value; the readers must too
    assert reader_keys({"rope_theta": 10000.0, "rope_parameters": {"rope_theta": 1e6}}) == {"rope_theta": 1e6}
    assert reader_keys({**flat, "rope_theta": 100000.0, "torch_dtype": "float32"}) == {}
    nested = {"rope_parameters": {"full_attention": {"rope_theta": 1e6}, "sliding_attention": {"rope_theta": 1e4}}}
    assert reader_keys(nested) == {}


def test_converted_folder_and_an_old_cache_carry_the_reader_keys(smollm2_gguf, smollm2_hf, tmp_path, monkeypatch):
    """The folder convert_gguf writes holds rope_theta at the top level, as transformers reads it; a
    cache folder written without it (before this fix) is repaired on its next use."""
    from transformers import AutoConfig

    from scoreflow.backends.cuda.model import convert_gguf, gguf_cache_folder

    cfg = json.loads((smollm2_hf / "config.json").read_text())
    assert cfg["rope_theta"] == cfg["rope_parameters"]["rope_theta"] == 100000.0
    assert AutoConfig.from_pretrained(str(smollm2_hf)).rope_parameters["rope_theta"] == 100000.0

    monkeypatch.setenv("SCOREFLOW_CACHE", str(tmp_path))
    old = gguf_cache_folder(str(smollm2_gguf))
    old.mkdir(parents=True)
    stale = {k: v for k, v in cfg.items() if k not in ("rope_theta", "torch_dtype")}
    (old / "config.json").write_text(json.dumps(stale))
    assert convert_gguf(str(smollm2_gguf)) == old
    repaired = json.loads((old / "config.json").read_text())
    assert repaired == cfg and not add_reader_keys(old)


# -- hub ids and licenses ---------------------------------------------------------------------------

def test_hub_id_and_license_of_each_kind_of_source(tmp_path, smollm2_gguf, monkeypatch):
    import gguf

    assert hub_id(ModelSource("smollm2", "gguf", str(smollm2_gguf), "smollm2-135m")) == EMBEDDED_HUB_ID
    assert hub_id(ModelSource("org/m", "hub", "org/m", "m")) == "org/m"
    snapshot = tmp_path / "hub" / "models--Org--Some-Model.v2" / "snapshots" / "abc123"
    assert hub_id(ModelSource(str(snapshot), "folder", str(snapshot), "abc123")) == "Org/Some-Model.v2"
    plain = tmp_path / "my-model"
    assert hub_id(ModelSource(str(plain), "folder", str(plain), "my-model")) is None
    # a GGUF other than the embedded one: its general.license
    other = tmp_path / "other.gguf"
    writer = gguf.GGUFWriter(str(other), "llama")
    writer.add_license("mit")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert license_metadata(ModelSource(str(other), "gguf", str(other), "other")) == {"license": "mit"}
    plain.mkdir()
    (plain / "config.json").write_text("{}")
    assert license_metadata(ModelSource(str(plain), "folder", str(plain), "my-model")) == {}
    (plain / "README.md").write_text("---\nlicense: other\nlicense_name: house-licence\nlanguage: en\n---\n# M\n")
    assert license_metadata(ModelSource(str(plain), "folder", str(plain), "my-model")) == {
        "license": "other", "license_name": "house-licence"}
    # a hub id: the hub cache's copy of its README.md, offline
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = tmp_path / "hub" / "models--Org--M"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc")
    (repo / "snapshots" / "abc").mkdir(parents=True)
    (repo / "snapshots" / "abc" / "README.md").write_text("---\nlicense: llama3.2\n---\n")
    assert license_metadata(ModelSource("Org/M", "hub", "Org/M", "M")) == {"license": "llama3.2"}
    assert license_metadata(ModelSource("Org/Absent", "hub", "Org/Absent", "Absent")) == {}
