"""Container health checks for TuneForge's images (standard library, plus grpcio for `api`).

    tuneforge-healthcheck api          readiness: REST GET /readyz (database, Redis, S3,
                                       serving) and gRPC grpc.health.v1 (service "") on
                                       TUNEFORGE_PORT / TUNEFORGE_GRPC_PORT
    tuneforge-healthcheck alive        liveness: REST GET /healthz on TUNEFORGE_PORT
    tuneforge-healthcheck vllm         vLLM's GET /health on SERVE_PORT
    tuneforge-healthcheck http URL     any URL answering 2xx
    tuneforge-healthcheck grpc H:P     any gRPC server reporting SERVING

Exit status 0 when healthy, 1 otherwise (with the reason on stderr), as Docker's HEALTHCHECK
and compose's healthcheck expect.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

TIMEOUT_SECONDS = 4.0


class Unhealthy(Exception):
    """The probed server did not answer as a healthy one does."""


def check_http(url: str, timeout: float = TIMEOUT_SECONDS) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        raise Unhealthy(f"{url}: HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise Unhealthy(f"{url}: {exc}") from exc
    if not 200 <= status < 300:
        raise Unhealthy(f"{url}: HTTP {status}")


def check_grpc(target: str, service: str = "", timeout: float = TIMEOUT_SECONDS) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            raise Unhealthy(f"grpc {target}: {exc.code().name}") from exc
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        raise Unhealthy(f"grpc {target}: {name}")


def run(argv: list[str], env: dict[str, str]) -> None:
    mode = argv[0] if argv else "api"
    if mode == "api":
        check_http(f"http://127.0.0.1:{env.get('TUNEFORGE_PORT', '8000')}/readyz")
        check_grpc(f"127.0.0.1:{env.get('TUNEFORGE_GRPC_PORT', '50051')}")
    elif mode == "alive":
        check_http(f"http://127.0.0.1:{env.get('TUNEFORGE_PORT', '8000')}/healthz")
    elif mode == "vllm":
        check_http(f"http://127.0.0.1:{env.get('SERVE_PORT', '8000')}/health")
    elif mode == "http" and len(argv) == 2:
        check_http(argv[1])
    elif mode == "grpc" and len(argv) == 2:
        check_grpc(argv[1])
    else:
        raise SystemExit(__doc__)


def main() -> int:
    try:
        run(sys.argv[1:], dict(os.environ))
    except Unhealthy as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
