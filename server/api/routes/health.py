"""Operating endpoints (not OpenAI's, kept out of the OpenAPI document):

- `GET /healthz`: the process is alive; touches no dependency.
- `GET /readyz`: the database, Redis, object storage and (where inference servers are
  configured) the serving plane answer: 200, or 503 naming the dependencies that failed.
- `GET /metrics`: Prometheus text. With `metrics_token` set it needs
  `Authorization: Bearer <metrics_token>` (401 otherwise); unset, it answers loopback clients
  only and is a 404 to anyone else. A tenant API key never opens it.

None needs a tenant API key, and none shows a host, port or credential.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any

from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.exceptions import NotFoundException

from server.api.deps import services_of
from server.observability import metrics
from server.observability.readiness import check_dependencies
from tuneforge.errors import ApiError


@get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", include_in_schema=False)
async def readyz(state: State) -> Response[dict[str, Any]]:
    ctx = services_of(state).ctx
    results = await check_dependencies(ctx, getattr(state, "serving", None))
    failed = [name for name, ready in results.items() if not ready]
    if failed:
        return Response({"status": "unavailable", "failed": failed, "checks": results},
                        status_code=503)
    return Response({"status": "ok", "checks": results}, status_code=200)


def _loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _authorize(request: Request, token: str) -> None:
    if not token:
        if not _loopback(request):
            raise NotFoundException()
        return
    given = request.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(),
                                                             token.encode()):
        raise ApiError(401, "The metrics endpoint needs its own bearer token.",
                       type="invalid_request_error", code="invalid_metrics_token",
                       headers={"WWW-Authenticate": 'Bearer realm="metrics"'})


@get("/metrics", include_in_schema=False)
async def prometheus_metrics(request: Request, state: State) -> Response[bytes]:
    ctx = services_of(state).ctx
    _authorize(request, ctx.settings.metrics_token.get_secret_value())
    body = await metrics.exposition(ctx)
    return Response(body, media_type=metrics.CONTENT_TYPE_LATEST,
                    headers={"Cache-Control": "no-store"})


route_handlers = [healthz, readyz, prometheus_metrics]
