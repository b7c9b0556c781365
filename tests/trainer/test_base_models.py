"""Base model preparation: the embedded GGUF converts once; local directories pass through."""

from __future__ import annotations

import json

import pytest

from tuneforge.base_models import (
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


def test_s3_base_model_is_downloaded_once_from_its_own_bucket(model_dir, tmp_path, s3):
    """A base model registered at `s3://bucket/prefix` comes from that bucket (not the
    TuneForge bucket), lands in the cache atomically, and is reused."""
    from minio import Minio

    client = Minio(s3.endpoint, access_key=s3.access_key,
                   secret_key=s3.secret_key.get_secret_value(), secure=False)
    bucket = "team-models"
    if not client.bucket_exists(bucket):
        client.make_bucket(bucket)
    files = [f for f in model_dir.iterdir() if f.is_file() and not f.name.startswith(".")]
    for f in files:
        client.fput_object(bucket, f"smol/v1/{f.name}", str(f))

    local = prepare_base_model("smol-s3", f"s3://{bucket}/smol/v1", tmp_path, s3)

    assert local == tmp_path / "smol-s3"
    assert sorted(p.name for p in local.iterdir() if not p.name.startswith(".")) == sorted(
        f.name for f in files)
    assert (local / "model.safetensors").read_bytes() == (
        model_dir / "model.safetensors").read_bytes()
    before = (local / "config.json").stat().st_mtime_ns
    assert prepare_base_model("smol-s3", f"s3://{bucket}/smol/v1", tmp_path, s3) == local
    assert (local / "config.json").stat().st_mtime_ns == before
    assert not [p for p in tmp_path.iterdir() if p.is_dir() and p.name.startswith(".smol-s3.")]


def test_s3_base_model_without_weights_is_refused_and_leaves_nothing(tmp_path, s3):
    with pytest.raises(BaseModelError, match=r"no config\.json"):
        prepare_base_model("empty", "s3://tuneforge-test/no/such/model", tmp_path, s3)
    assert not (tmp_path / "empty").exists()
    assert not [p for p in tmp_path.iterdir() if p.is_dir() and p.name.startswith(".empty.")]
    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        prepare_base_model("bad", "s3://only-a-bucket", tmp_path, s3)
