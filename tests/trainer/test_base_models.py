"""Base model preparation: the embedded GGUF converts once; local directories pass through."""

from __future__ import annotations

import json

import pytest

from trainer.base_models import (
    EMBEDDED_MODEL_NAME,
    BaseModelError,
    embedded_gguf_path,
    prepare_base_model,
)


def test_embedded_model_is_a_safetensors_dir(model_dir):
    assert model_dir.name == EMBEDDED_MODEL_NAME
    assert (model_dir / "model.safetensors").is_file()
    config = json.loads((model_dir / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert "quantization_config" not in config
    assert (model_dir / "tokenizer.json").is_file()
    assert "<|im_start|>" in (model_dir / "chat_template.jinja").read_text()


def test_conversion_is_reused(model_dir):
    before = (model_dir / "model.safetensors").stat().st_mtime_ns
    again = prepare_base_model(EMBEDDED_MODEL_NAME, "", model_dir.parent)
    assert again == model_dir
    assert (again / "model.safetensors").stat().st_mtime_ns == before


def test_gguf_is_found_in_the_wheel():
    assert embedded_gguf_path().name.endswith(".gguf")


def test_local_directory_is_used_as_is(model_dir, tmp_path):
    assert prepare_base_model("custom", str(model_dir), tmp_path) == model_dir
    with pytest.raises(BaseModelError):
        prepare_base_model("custom", str(tmp_path / "missing"), tmp_path)
    with pytest.raises(BaseModelError):
        prepare_base_model("custom", "", tmp_path)
    with pytest.raises(BaseModelError):
        prepare_base_model("custom", "s3://bucket/prefix", tmp_path)
