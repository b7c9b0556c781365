"""The web dashboard in a real browser (headless Debian Chromium through Playwright) against
the real API subprocess: sign in, upload, a job's live loss curve, pause/resume/cancel, one
organization never sees another's data, and the API docs work offline."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest
from playwright.async_api import Browser

from tests.api.data import chat_jsonl
from tests.conftest import ApiServer, Tenant
from tests.dashboard.browser import Tab, chromium, open_tab, sign_in
from tuneforge.domain import EventType, JobStatus

WORKER = "tests-dashboard"


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


def root_of(api_server: ApiServer) -> str:
    return api_server.base_url.removesuffix("/v1")


@pytest.fixture
async def tab(browser: Browser, api_server: ApiServer) -> AsyncIterator[Tab]:
    tab = await open_tab(browser, root_of(api_server))
    yield tab
    await tab.close()
    assert tab.outside == [], f"the page reached outside the server: {tab.outside}"
    assert tab.errors == [], f"script errors: {tab.errors}"


async def metrics(services, job_id: str, step: int, total: int) -> None:  # type: ignore[no-untyped-def]
    """A metrics event as the worker writes it (trainer/job_runner.py:_metrics)."""
    data = {"step": step, "total_steps": total, "train_loss": 2.5 / step,
            "train_mean_token_accuracy": 0.4 + step / 100,
            "valid_loss": 2.6 / step if step % 2 == 0 else None,
            "valid_mean_token_accuracy": None, "learning_rate": 1e-4}
    await services.protocol.add_event(
        job_id, f"Step {step}/{total}: train_loss={data['train_loss']:.4f}",
        type=EventType.METRICS, data=data, worker_id=WORKER)


async def start_running(services, job_id: str) -> None:  # type: ignore[no-untyped-def]
    """Take the job as a worker would (once the API has let go of it, should it validate
    the files itself) and start it, with no training behind it."""
    for _ in range(100):
        if await services.protocol.claim(job_id, WORKER, 3600):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"could not claim {job_id}")
    assert await services.protocol.advance(
        job_id, [JobStatus.VALIDATING_FILES, JobStatus.QUEUED], JobStatus.RUNNING,
        worker_id=WORKER)


async def points(tab: Tab, chart: str = "#loss-chart") -> int:
    value = await tab.page.get_attribute(chart, "data-points")
    return int(value or 0)


async def wait_points(tab: Tab, n: int, chart: str = "#loss-chart") -> None:
    await tab.page.wait_for_selector(f"{chart}[data-points='{n}'] .uplot")


def test_page_and_assets_are_static_unauthenticated_and_not_in_the_schema(
        api_server: ApiServer) -> None:
    root = root_of(api_server)
    page = httpx.get(f"{root}/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy
    for asset in ("app.js", "vendor/preact/preact.module.js", "vendor/uplot/uPlot.esm.js",
                  "vendor/swagger-ui/swagger-ui-bundle.js"):
        response = httpx.get(f"{root}/dashboard/{asset}", timeout=10)
        assert response.status_code == 200, asset
    missing = httpx.get(f"{root}/dashboard/nothing.js", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_url"
    # The data stays behind the key.
    assert httpx.get(f"{root}/v1/files", timeout=10).status_code == 401
    document = httpx.get(f"{root}/schema/openapi.json", timeout=10).json()
    assert not [p for p in document["paths"] if not p.startswith("/v1/")]
    swagger = httpx.get(f"{root}/schema/swagger", timeout=10).text
    assert "cdn." not in swagger and "/dashboard/vendor/swagger-ui/" in swagger


async def test_sign_in_upload_with_progress_and_create_a_job(
        tab: Tab, client: openai.OpenAI, tenant_a: Tenant, tmp_path: Path) -> None:
    page = tab.page
    await page.goto(f"{tab.root}/")
    await page.fill("#api-key", "tf-not-a-key")
    await page.click("#sign-in")
    await page.wait_for_selector("text=That API key was not accepted.")
    await tab.shot(tmp_path, "sign-in-refused")

    await sign_in(tab, tenant_a.api_key, "#/files")
    stored = await page.evaluate(
        "[sessionStorage.getItem('tuneforge.apiKey'), localStorage.length, document.cookie]")
    assert stored == [tenant_a.api_key, 0, ""]

    upload = tmp_path / "dashboard-train.jsonl"
    upload.write_bytes(chat_jsonl(400))
    await page.set_input_files("#upload-file", str(upload))
    await page.click("#upload-submit")
    row = page.locator("#files-table tr", has_text="dashboard-train.jsonl")
    await row.first.wait_for()
    assert "fine-tune" in await row.first.inner_text()
    # XHR reported the upload's progress up to the whole file.
    assert await page.get_attribute("#upload-form", "data-progress") == "100"
    await tab.shot(tmp_path, "files", share=True)

    # A job from that file.
    file_id = await row.first.get_attribute("data-id")
    await page.click("#nav-jobs")
    await page.select_option("#job-training-file", file_id)
    await page.fill("#job-suffix", "from-ui")
    await page.fill("#job-epochs", "2")
    await page.click("#job-create")
    await page.wait_for_selector("#hyperparameters")  # the new job's page
    job_id = page.url.rsplit("/", 1)[1]
    job = client.fine_tuning.jobs.retrieve(job_id)
    assert (job.training_file, job.suffix) == (file_id, "from-ui")
    assert job.method.supervised.hyperparameters.n_epochs == 2
    client.fine_tuning.jobs.cancel(job_id)

    # Signing out forgets the key.
    await page.click("#sign-out")
    await page.wait_for_selector("#api-key")
    assert await page.evaluate("sessionStorage.length") == 0


async def test_live_loss_curve_and_job_controls(
        tab: Tab, client: openai.OpenAI, services, tenant_a: Tenant,  # type: ignore[no-untyped-def]
        tmp_path: Path) -> None:
    file_id = client.files.create(file=("curve.jsonl", io.BytesIO(chat_jsonl())),
                                  purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(model="SmolLM2-135M-Instruct", training_file=file_id,
                                         suffix="curve")
    await start_running(services, job.id)
    for step in (1, 2, 3):
        await metrics(services, job.id, step, 12)

    await sign_in(tab, tenant_a.api_key, "#/jobs")
    page = tab.page
    await page.select_option("#jobs-status-filter", "running")
    await page.click(f"#jobs-table a:text('{job.id}')")
    await wait_points(tab, 3)
    assert await points(tab, "#accuracy-chart") == 3
    # The worker goes on: the open page's curve grows without a reload.
    for step in range(4, 9):
        await metrics(services, job.id, step, 12)
        await asyncio.sleep(0.2)
    await wait_points(tab, 8)
    assert "live (event stream)" in await page.inner_text("main")
    await page.wait_for_selector("#events-table >> text=Step 8/12")
    assert "lora.rank" in await page.inner_text("#hyperparameters")
    await tab.shot(tmp_path, "job-running", share=True)

    await page.click("#job-pause")
    await page.wait_for_selector("h1 .status.paused")
    assert client.fine_tuning.jobs.retrieve(job.id).status == "paused"
    await services.protocol.release(job.id, WORKER)  # the paused run lets go
    await page.click("#job-resume")
    await page.wait_for_selector("h1 .status.queued")
    await page.click("#job-cancel")  # the confirm() dialog is accepted (browser.py)
    await page.wait_for_selector("h1 .status.cancelled")
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    assert await page.is_disabled("#job-cancel")
    await tab.shot(tmp_path, "job-cancelled")


async def test_the_curve_follows_by_polling_where_the_event_stream_is_blocked(
        tab: Tab, client: openai.OpenAI, services, tenant_a: Tenant) -> None:  # type: ignore[no-untyped-def]
    """A proxy that drops Server-Sent Events (or a server without them): the page polls
    `…/events` every second instead."""
    file_id = client.files.create(file=("poll.jsonl", io.BytesIO(chat_jsonl())),
                                  purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(model="SmolLM2-135M-Instruct", training_file=file_id)
    await start_running(services, job.id)
    await metrics(services, job.id, 1, 4)
    await tab.page.route("**/events?stream=true*", lambda route: route.abort())
    await sign_in(tab, tenant_a.api_key, f"#/jobs/{job.id}")
    await wait_points(tab, 1)
    for step in (2, 3):
        await metrics(services, job.id, step, 4)
    await wait_points(tab, 3)
    assert "live (polling)" in await tab.page.inner_text("main")
    client.fine_tuning.jobs.cancel(job.id)


async def test_another_organization_sees_nothing(
        tab: Tab, client: openai.OpenAI, tenant_b: Tenant, tmp_path: Path) -> None:
    secret = "acme-private-data.jsonl"
    file_id = client.files.create(file=(secret, io.BytesIO(chat_jsonl())),
                                  purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(model="SmolLM2-135M-Instruct", training_file=file_id,
                                         suffix="private")
    await sign_in(tab, tenant_b.api_key, "#/files")
    page = tab.page
    for route, ready in (("#/files", "h1:text('Files')"), ("#/jobs", "#jobs-status-filter"),
                         ("#/models", "#models-table"), ("#/playground", "#playground-prompt")):
        await page.goto(f"{tab.root}/{route}")
        await page.wait_for_selector(ready)
        await page.wait_for_load_state("networkidle")
        text = await page.inner_text("body")
        for private in (secret, file_id, job.id, "private", "acme"):
            assert private not in text, (route, private)
    # Nor by its address: the job is a 404 to this organization.
    await page.goto(f"{tab.root}/#/jobs/{job.id}")
    await page.wait_for_selector("[role=alert]")
    assert "acme" not in await page.inner_text("body")
    await tab.shot(tmp_path, "other-org")
    client.fine_tuning.jobs.cancel(job.id)


async def test_api_docs_render_offline(tab: Tab, tmp_path: Path) -> None:
    page = tab.page
    await page.goto(f"{tab.root}/schema/swagger")
    await page.wait_for_selector(".swagger-ui .opblock-tag")
    assert "/v1/fine_tuning/jobs" in await page.inner_text(".swagger-ui")
    await tab.shot(tmp_path, "swagger")
