"""Real services for the test suite: S3 (`weed mini`), Redis (the machine's, else a
`valkey-server` we start), SQLite and PostgreSQL, and the API server as a real subprocess.

Every process started here is stopped by PID at the end of the session.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import secrets
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis as redis_sync

from tuneforge.processes import (
    ManagedProcess,
    free_port,
    port_answers,
    spawn,
    start_redis,
    start_s3,
    wait_until,
)
from tuneforge.settings import S3Settings, Settings, TrackingSettings

REPO = Path(__file__).resolve().parent.parent
PG_ADMIN_DSN = os.environ.get("TUNEFORGE_TEST_PG", "postgresql://root@127.0.0.1:5432/test")
# Converted base models are cached across test sessions (conversion takes ~20 s).
MODEL_CACHE = Path(os.environ.get("TUNEFORGE_MODEL_CACHE", REPO / ".tuneforge" / "models"))
# The machine's Redis is shared: tests use their own database index and flush only it.
# Two test sessions on one machine need different indexes (TUNEFORGE_TEST_REDIS_DB).
REDIS_TEST_DB = int(os.environ.get("TUNEFORGE_TEST_REDIS_DB", "11"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import importlib.util

    has_cuda = False
    if importlib.util.find_spec("torch") is not None:
        import torch

        has_cuda = torch.cuda.is_available()
    once = pytest.mark.skip(reason="its subject does not depend on the database: run once, "
                                   "on SQLite")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
        if _on_postgres(item) and not _runs_on_both_databases(item):
            item.add_marker(once)


# Where the database is the subject (state, transactions, races, the API's queries), tests
# run on SQLite and PostgreSQL; training, serving, clients and the dashboard run once: they
# reach the database only through the code these already check on both.
_ON_BOTH_DATABASES = ("tests/store/", "tests/api/", "tests/grpc/", "tests/faults/",
                      "tests/worker/test_races.py", "tests/worker/test_worker_crash.py",
                      "tests/worker/test_background_writes.py")


def _on_postgres(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    return callspec is not None and callspec.params.get("database_url") == "postgresql"


def _runs_on_both_databases(item: pytest.Item) -> bool:
    return item.nodeid.startswith(_ON_BOTH_DATABASES)


@pytest.fixture(scope="session")
def tmp_root() -> Iterator[Path]:
    """The session's state (databases, S3 data, logs). Not pytest's basetemp, which a
    concurrent pytest session may rotate away; kept with TUNEFORGE_KEEP_TEST_DATA=1."""
    root = Path(tempfile.mkdtemp(prefix="tuneforge-test-"))
    yield root
    if not os.environ.get("TUNEFORGE_KEEP_TEST_DATA"):
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def s3(tmp_root: Path) -> Iterator[S3Settings]:
    access_key, secret_key = "tf" + secrets.token_hex(8), secrets.token_urlsafe(24)
    port = free_port()
    process = start_s3(tmp_root / "s3", access_key, secret_key, port)
    settings = S3Settings(endpoint=f"127.0.0.1:{port}", access_key=access_key,
                          secret_key=secret_key, bucket="tuneforge-test")
    _wait_for_s3_writes(settings)
    yield settings
    process.stop()


def _wait_for_s3_writes(settings: S3Settings) -> None:
    import io

    from minio import Minio

    client = Minio(settings.endpoint, access_key=settings.access_key,
                   secret_key=settings.secret_key.get_secret_value(), secure=False)

    def can_write() -> bool:
        if not client.bucket_exists(settings.bucket):
            client.make_bucket(settings.bucket)
        client.put_object(settings.bucket, "probe", io.BytesIO(b"ok"), 2)
        return True

    wait_until(can_write, 60, "weed mini S3 writes")


@pytest.fixture(scope="session")
def redis_url(tmp_root: Path) -> Iterator[str]:
    if port_answers(6379):
        url = f"redis://127.0.0.1:6379/{REDIS_TEST_DB}"
        redis_sync.Redis.from_url(url).flushdb()
        yield url
        redis_sync.Redis.from_url(url).flushdb()
        return
    port, password = free_port(), secrets.token_hex(16)
    process = start_redis(tmp_root / "redis", port, password)
    yield f"redis://:{password}@127.0.0.1:{port}/0"
    process.stop()


def _postgres_available() -> bool:
    return port_answers(5432)


@pytest.fixture(scope="session", params=["sqlite", pytest.param("postgresql",
                                                                 marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_root: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_root / f'state-{uuid.uuid4().hex[:8]}.db'}"
        return
    if not _postgres_available():
        if os.environ.get("CI"):
            pytest.fail("CI must run the PostgreSQL tests, but 127.0.0.1:5432 does not answer")
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    name = f"tuneforge_test_{uuid.uuid4().hex[:10]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    yield f"postgresql+asyncpg://root@127.0.0.1:5432/{name}"
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _pg_admin(statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def settings(tmp_root: Path, database_url: str, redis_url: str, s3: S3Settings) -> Settings:
    from server.db.migrate import upgrade

    data_dir = tmp_root / f"data-{uuid.uuid4().hex[:6]}"
    data_dir.mkdir()
    result = Settings(
        data_dir=data_dir, database_url=database_url, redis_url=redis_url, s3=s3,
        port=free_port(), grpc_port=free_port(), queue_name=f"tf-test-{uuid.uuid4().hex[:6]}",
        reconcile_interval_seconds=1.0, max_upload_bytes=2 * 1024**3,
        worker_lease_seconds=9, resume_wait_seconds=5.0, model_cache_dir=MODEL_CACHE,
        # W&B without network or key; MLflow integrations bring the URI of a test server.
        tracking=TrackingSettings(wandb_mode="offline", mlflow_allow_integration_uri=True,
                                  mlflow_request_timeout_seconds=2, mlflow_request_retries=0),
    )
    upgrade(database_url)
    return result


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a `tuneforge` subprocess use these settings."""
    return settings.to_env()


@dataclass
class ApiServer:
    process: ManagedProcess
    base_url: str  # ends in /v1

    @property
    def pid(self) -> int:
        return self.process.pid


@pytest.fixture(scope="session")
def api_server(settings: Settings) -> Iterator[ApiServer]:
    """`tuneforge server` as a real subprocess bound to 127.0.0.1."""
    process = spawn(
        "api", [sys.executable, "-m", "stack.cli", "server"],
        settings.data_dir / "api.log", env=settings_env(settings), cwd=REPO,
    )
    base = f"http://127.0.0.1:{settings.port}"
    wait_until(lambda: httpx.get(f"{base}/v1/models").status_code == 401, 60, "API server",
               process)
    yield ApiServer(process=process, base_url=f"{base}/v1")
    process.stop()


@pytest.fixture(scope="session")
async def services(settings: Settings) -> AsyncIterator[object]:
    """The service layer in the test process, on the same DB/S3/queue as the server: used to
    act as a worker would and to create API keys."""
    from server.service import Services
    from server.service.context import Context

    result = Services(Context.from_settings(settings))
    await result.ctx.store.ensure_bucket()
    yield result
    await result.ctx.close()


@dataclass
class Tenant:
    organization_id: str
    api_key: str


async def make_tenant(services: object, name: str) -> Tenant:
    from server.auth import create_key

    async with services.ctx.sessions() as session:  # type: ignore[attr-defined]
        org_id, key = await create_key(session, f"{name}-{uuid.uuid4().hex[:6]}")
    return Tenant(org_id, key)


@pytest.fixture(scope="session")
async def tenant_a(services: object) -> Tenant:
    return await make_tenant(services, "acme")


@pytest.fixture(scope="session")
async def tenant_b(services: object) -> Tenant:
    return await make_tenant(services, "globex")


@pytest.fixture
def client(api_server: ApiServer, tenant_a: Tenant):  # type: ignore[no-untyped-def]
    from openai import OpenAI

    with OpenAI(base_url=api_server.base_url, api_key=tenant_a.api_key, max_retries=0) as c:
        yield c


@pytest.fixture
def client_b(api_server: ApiServer, tenant_b: Tenant):  # type: ignore[no-untyped-def]
    from openai import OpenAI

    with OpenAI(base_url=api_server.base_url, api_key=tenant_b.api_key, max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
async def no_leftover_jobs(services) -> None:  # type: ignore[no-untyped-def]
    """Cancel the jobs earlier test modules left waiting in the shared queue: a worker started
    after them would otherwise train every one of them before the module's own jobs."""
    from sqlalchemy import select

    from server.auth import Principal
    from server.db.models import Job
    from server.service.jobs import CANCELLABLE
    from tuneforge.errors import ApiError

    async with services.ctx.sessions() as session:
        rows = (await session.execute(
            select(Job.id, Job.organization_id).where(Job.status.in_(CANCELLABLE)))).all()
    for job_id, organization_id in rows:
        try:
            await services.jobs.cancel(Principal(organization_id, "tests"), job_id)
        except ApiError:  # it ended meanwhile
            pass


async def until_validated(client: object, job_id: str, within: float = 30.0) -> str:
    """Wait until the API has validated a new job's files (it leaves `validating_files`:
    `queued`, or `failed` for bad data, or `cancelled`); returns that status. `client` is an
    `httpx.AsyncClient` on the API's `/v1`, an `openai.OpenAI`, a TuneForge SDK client, or the
    in-process `services` fixture."""

    async def status() -> str:
        protocol = getattr(client, "protocol", None)
        if protocol is not None:  # the service layer: the worker's view of the job
            return str((await protocol.status(job_id)).value)
        if isinstance(client, httpx.AsyncClient):
            response = await client.get(f"/fine_tuning/jobs/{job_id}")
            response.raise_for_status()
            return str(response.json()["status"])
        fine_tuning = getattr(client, "fine_tuning", None)
        if fine_tuning is not None:  # the openai SDK (blocking)
            job = await asyncio.to_thread(fine_tuning.jobs.retrieve, job_id)
        else:  # the TuneForge SDK, blocking or asyncio
            get = client.jobs.get  # type: ignore[attr-defined]
            job = (await get(job_id) if inspect.iscoroutinefunction(get)
                   else await asyncio.to_thread(get, job_id))
        return str(job.status)

    deadline = asyncio.get_running_loop().time() + within
    while (current := await status()) == "validating_files":
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{job_id} is still validating_files after {within} s")
        await asyncio.sleep(0.05)
    return current
