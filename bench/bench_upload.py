"""Upload throughput through the API vs a raw S3 put of the same bytes, and job-create latency.

Starts its own stack (weed mini S3, valkey, SQLite, the API server), all on 127.0.0.1, and
stops it at the end. Goals: API upload >= 0.9x the raw S3 put; job create p50/p99 printed.
A `fine-tune` JSONL upload of the same size shows the cost of the streaming line check
(`tuneforge.jsonl`) on top of the opaque `user_data` upload.

    .venv/bin/python bench/bench_upload.py [--mib 200] [--jobs 200]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
from minio import Minio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import MIB, bench_stack, blocks, multipart, percentile  # noqa: E402
from tuneforge.processes import free_port  # noqa: E402
from tuneforge.settings import S3Settings, Settings  # noqa: E402


class BlockReader(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self._blocks = blocks(size)
        self._buffer = b""

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buffer) < n:
            try:
                self._buffer += next(self._blocks)
            except StopIteration:
                break
        out, self._buffer = (self._buffer, b"") if n < 0 else (self._buffer[:n], self._buffer[n:])
        return out


def raw_put(s3: S3Settings, size: int) -> float:
    client = Minio(s3.endpoint, access_key=s3.access_key,
                   secret_key=s3.secret_key.get_secret_value(), secure=False)
    start = time.perf_counter()
    client.put_object(s3.bucket, f"bench/raw-{uuid.uuid4().hex}", BlockReader(size), -1,
                      part_size=5 * MIB)
    return time.perf_counter() - start


CHAT_LINE = (b'{"messages": [{"role": "system", "content": "You answer arithmetic questions."}, '
             b'{"role": "user", "content": "What is 1234 + 4321? Show the sum only."}, '
             b'{"role": "assistant", "content": "ANSWER: 5555", "weight": 1}]}\n')


def jsonl_multipart(size: int, boundary: str) -> Iterator[bytes]:
    """A `fine-tune` upload body: whole chat lines, about `size` bytes, generated in 1 MiB
    blocks."""
    yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n"
           f"fine-tune\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
           f"filename=\"bench.jsonl\"\r\n\r\n").encode()
    block = CHAT_LINE * (MIB // len(CHAT_LINE))
    for _ in range(max(1, size // len(block))):
        yield block
    yield f"\r\n--{boundary}--\r\n".encode()


def api_put(base: str, key: str, size: int, pid: int, *, jsonl: bool = False
            ) -> tuple[float, float]:
    boundary = uuid.uuid4().hex
    process = psutil.Process(pid)
    before = process.memory_info().rss
    body = jsonl_multipart(size, boundary) if jsonl else multipart(size, boundary)
    start = time.perf_counter()
    response = httpx.post(f"{base}/files", content=body, timeout=600,
                          headers={"Authorization": f"Bearer {key}",
                                   "Content-Type": f"multipart/form-data; boundary={boundary}"})
    elapsed = time.perf_counter() - start
    response.raise_for_status()
    return elapsed, (process.memory_info().rss - before) / MIB


def job_latencies(base: str, key: str, n: int) -> list[float]:
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        lines = b"\n".join(b'{"messages": [{"role": "user", "content": "hi"}, '
                           b'{"role": "assistant", "content": "hello"}]}' for _ in range(10))
        file_id = client.post("/files", data={"purpose": "fine-tune"},
                              files={"file": ("t.jsonl", lines)}).json()["id"]
        body = {"model": "SmolLM2-135M-Instruct", "training_file": file_id}
        client.post("/fine_tuning/jobs", json=body).raise_for_status()  # warm-up
        samples = []
        for _ in range(n):
            start = time.perf_counter()
            client.post("/fine_tuning/jobs", json=body).raise_for_status()
            samples.append((time.perf_counter() - start) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    size = args.mib * MIB

    with bench_stack() as stack:
        settings = Settings(data_dir=stack.root / "data", redis_url=stack.redis_url,
                            s3=stack.s3, port=free_port(), grpc_port=free_port(),
                            max_upload_bytes=4 * 1024 * MIB)
        api, key, base = stack.start_api(settings)
        s3 = stack.s3
        api_put(base, key, 8 * MIB, api.pid)  # warm-up
        raw_put(s3, 8 * MIB)

        raw, via_api, via_api_jsonl, growth = [], [], [], []
        for _ in range(args.rounds):
            raw.append(raw_put(s3, size))
            elapsed, rss = api_put(base, key, size, api.pid)
            via_api.append(elapsed)
            growth.append(rss)
            elapsed, rss = api_put(base, key, size, api.pid, jsonl=True)
            via_api_jsonl.append(elapsed)
            growth.append(rss)
        raw_rate = args.mib / statistics.median(raw)
        api_rate = args.mib / statistics.median(via_api)
        jsonl_rate = args.mib / statistics.median(via_api_jsonl)
        print(f"upload {args.mib} MiB x{args.rounds} (median)")
        print(f"  raw S3 put (MinIO SDK)   {raw_rate:8.1f} MiB/s")
        print(f"  POST /v1/files (API)     {api_rate:8.1f} MiB/s")
        print(f"  ratio API / raw          {api_rate / raw_rate:8.2f}x   (goal >= 0.90x)")
        print(f"  POST /v1/files fine-tune {jsonl_rate:8.1f} MiB/s   (JSONL checked while "
              "streaming)")
        print(f"  API server RSS growth    {max(growth):8.1f} MiB (max over rounds)")

        samples = job_latencies(base, key, args.jobs)
        print(f"job create x{args.jobs}")
        p50, p99 = percentile(samples, 0.50), percentile(samples, 0.99)
        print(f"  p50 {p50:6.1f} ms   p99 {p99:6.1f} ms   "
              f"mean {statistics.mean(samples):6.1f} ms")


if __name__ == "__main__":
    main()
