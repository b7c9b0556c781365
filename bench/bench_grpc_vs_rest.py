"""gRPC vs REST on one server: job list/get latency (p50/p99) and a 200 MiB upload (throughput,
server RSS), printed side by side.

Starts its own stack (weed mini S3, valkey, SQLite, `tuneforge server` serving both transports),
all on 127.0.0.1, and stops it at the end. Both sides are measured at the wire: a raw
`tuneforge.v1` stub on one gRPC channel, and httpx on one keep-alive connection; the upload
streams 1 MiB pieces from memory over each (client-streaming `Files.Upload` vs multipart
`POST /v1/files`), alternating, after one uncounted full-size upload over each. Server RSS is
sampled every 10 ms during each upload; growth is the peak over the RSS before that upload.

    .venv/bin/python bench/bench_grpc_vs_rest.py [--mib 200] [--calls 500] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tuneforge_client._pb.tuneforge.v1 import (  # noqa: E402
    files_pb2,
    files_pb2_grpc,
    fine_tuning_pb2,
    fine_tuning_pb2_grpc,
)

from bench.common import MIB, bench_stack, blocks, multipart, percentile  # noqa: E402
from tuneforge.processes import free_port  # noqa: E402
from tuneforge.settings import Settings  # noqa: E402

MODEL = "SmolLM2-135M-Instruct"


def grpc_requests(size: int) -> Iterator[files_pb2.UploadFileRequest]:
    yield files_pb2.UploadFileRequest(metadata=files_pb2.UploadFileMetadata(
        filename="bench.bin", purpose="user_data"))
    for piece in blocks(size):
        yield files_pb2.UploadFileRequest(chunk=piece)


class RssSampler:
    """Peak RSS of a process while a block runs, sampled every 10 ms."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.baseline = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.baseline) / MIB


def timed(call: Callable[[], object], n: int) -> list[float]:
    for _ in range(min(20, n)):  # warm-up
        call()
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=200)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--jobs", type=int, default=50, help="jobs in the listed table")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    size = args.mib * MIB

    with bench_stack() as stack:
        settings = Settings(data_dir=stack.root / "data", redis_url=stack.redis_url,
                            s3=stack.s3, port=free_port(), grpc_port=free_port(),
                            max_upload_bytes=4 * 1024 * MIB)
        api, key, base = stack.start_api(settings)
        run(args, size, base, f"127.0.0.1:{settings.grpc_port}", key, api.pid)


def run(args: argparse.Namespace, size: int, base: str, target: str, key: str,
        pid: int) -> None:
    metadata = (("authorization", f"Bearer {key}"),)
    options = [("grpc.max_send_message_length", 8 * MIB),
               ("grpc.max_receive_message_length", 8 * MIB)]
    with grpc.insecure_channel(target, options=options) as channel, \
            httpx.Client(base_url=base, timeout=600,
                         headers={"Authorization": f"Bearer {key}"}) as rest:
        grpc.channel_ready_future(channel).result(timeout=30)
        files = files_pb2_grpc.FilesStub(channel)
        jobs = fine_tuning_pb2_grpc.FineTuningStub(channel)

        lines = b"\n".join(b'{"messages": [{"role": "user", "content": "hi"}, '
                           b'{"role": "assistant", "content": "hello"}]}' for _ in range(10))
        file_id = rest.post("/files", data={"purpose": "fine-tune"},
                            files={"file": ("t.jsonl", lines)}).json()["id"]
        job_ids = [rest.post("/fine_tuning/jobs", json={
            "model": MODEL, "training_file": file_id, "metadata": {"n": str(i)}}).json()["id"]
            for i in range(args.jobs)]
        job_id = job_ids[len(job_ids) // 2]

        latency = {
            ("job get", "gRPC"): lambda: jobs.Get(
                fine_tuning_pb2.GetJobRequest(fine_tuning_job_id=job_id), metadata=metadata),
            ("job get", "REST"): lambda: rest.get(f"/fine_tuning/jobs/{job_id}").json(),
            ("job list (20)", "gRPC"): lambda: jobs.List(
                fine_tuning_pb2.ListJobsRequest(limit=20), metadata=metadata),
            ("job list (20)", "REST"): lambda: rest.get("/fine_tuning/jobs",
                                                        params={"limit": 20}).json(),
        }
        results = {name: timed(call, args.calls) for name, call in latency.items()}

        def upload_grpc() -> str:
            return files.Upload(grpc_requests(size), metadata=metadata).id

        def upload_rest() -> str:
            boundary = uuid.uuid4().hex
            response = rest.post("/files", content=multipart(size, boundary), headers={
                "Content-Type": f"multipart/form-data; boundary={boundary}"})
            response.raise_for_status()
            return str(response.json()["id"])

        uploads: dict[str, list[tuple[float, float]]] = {"gRPC": [], "REST": []}
        # One full-size warm-up upload each (not counted): the server's allocator grows its
        # arenas on the first big upload, whichever transport carries it.
        for round_ in range(args.rounds + 1):
            for name, upload in (("gRPC", upload_grpc), ("REST", upload_rest)):
                with RssSampler(pid) as rss:
                    start = time.perf_counter()
                    created = upload()
                    elapsed = time.perf_counter() - start
                if round_ > 0:
                    uploads[name].append((args.mib / elapsed, rss.growth_mib))
                files.Delete(files_pb2.DeleteFileRequest(file_id=created), metadata=metadata)

    print(f"gRPC vs REST, one server (pid {pid}); latency over {args.calls} calls after "
          f"warm-up, {args.jobs} jobs in the table")
    print(f"{'':24}{'gRPC':>25}{'REST':>25}")
    for what in ("job get", "job list (20)"):
        cells = []
        for transport in ("gRPC", "REST"):
            samples = results[(what, transport)]
            p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
            cells.append(f"p50 {p50:5.2f}  p99 {p99:5.2f}")
        print(f"{what + ' (ms)':24}{cells[0]:>25}{cells[1]:>25}")
    rate = {n: statistics.median(r for r, _ in v) for n, v in uploads.items()}
    growth = {n: max(g for _, g in v) for n, v in uploads.items()}
    print(f"{f'upload {args.mib} MiB (MiB/s)':24}{rate['gRPC']:>25.1f}{rate['REST']:>25.1f}"
          f"   (median of {args.rounds})")
    print(f"{'server RSS growth (MiB)':24}{growth['gRPC']:>25.1f}{growth['REST']:>25.1f}"
          f"   (peak over baseline, max of {args.rounds})")
    for name, values in uploads.items():
        rounds = ", ".join(f"{r:.1f} MiB/s +{g:.1f} MiB" for r, g in values)
        print(f"  {name} rounds: {rounds}")


if __name__ == "__main__":
    main()
