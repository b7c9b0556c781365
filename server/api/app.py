"""The Litestar application: OpenAI-compatible REST under /v1."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar, MediaType, Request, Response
from litestar.di import Provide
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from server.api import json_limits
from server.api.dashboard import dashboard_routes, openapi_render_plugins
from server.api.deps import provide_principal, provide_services
from server.api.openapi_bodies import RequestBodySchemaPlugin
from server.api.routes.files import FilesController
from server.api.routes.health import route_handlers as health_routes
from server.api.routes.inference import InferenceController
from server.api.routes.jobs import JobsController
from server.api.routes.models import ModelsController
from server.api.routes.plan import PlanController
from server.api.routes.uploads import UploadsController
from server.api.routes.usage import UsageController
from server.api.routes.webhooks import WebhookEndpointsController
from server.observability import metrics as http_metrics
from server.observability import request_id as request_context
from server.reconciler import run_forever
from server.service import Services
from server.storage import StorageUnavailable
from serving.plane import ServingPlane
from tuneforge.errors import ApiError, param_name

log = logging.getLogger(__name__)

_STATUS_TYPES = {403: "permission_error", 429: "rate_limit_error"}


def _envelope(status: int, message: str, *, type: str, param: str | None = None,
              code: str | None = None,
              headers: dict[str, str] | None = None) -> Response[dict[str, Any]]:
    return Response(
        ApiError(status, message, type=type, param=param, code=code).envelope(),
        status_code=status, media_type=MediaType.JSON, headers=headers,
    )


def _api_error(_: Request, exc: ApiError) -> Response[dict[str, Any]]:
    return Response(exc.envelope(), status_code=exc.status, media_type=MediaType.JSON,
                    headers=exc.headers or None)


def _validation_error(_: Request, exc: ValidationException) -> Response[dict[str, Any]]:
    errors = exc.extra if isinstance(exc.extra, list) else []
    first = errors[0] if errors and isinstance(errors[0], dict) else {}
    # Litestar joins list positions with dots (`integrations.0.type`).
    param = param_name(str(first["key"]).split(".")) if first.get("key") else None
    detail = first.get("message") or exc.detail
    message = f"Invalid value for '{param}': {detail}" if param else str(detail)
    return _envelope(400, message, type="invalid_request_error", param=param,
                     code="invalid_value")


def _http_error(request: Request, exc: HTTPException) -> Response[dict[str, Any]]:
    message = exc.detail
    if exc.status_code == 404:
        message = f"Unknown request URL: {request.method} {request.url.path}."
    # Keep the exception's headers: a 405 carries `Allow` (RFC 9110 §15.5.6).
    return _envelope(exc.status_code, message,
                     type=_STATUS_TYPES.get(exc.status_code, "invalid_request_error"),
                     code="unknown_url" if exc.status_code == 404 else None,
                     headers=dict(exc.headers) if exc.headers else None)


def _recursion_error(_: Request, exc: RecursionError) -> Response[dict[str, Any]]:
    # Raised by decoding or walking input nested past the stack (JSON bodies are capped by
    # LimitedRequest; this covers routes that parse their body themselves).
    log.warning("request nested too deeply: %s", exc)
    too_deep = json_limits.too_deep()
    return _envelope(400, too_deep.message, type=too_deep.type, code=too_deep.code)


def _storage_unavailable(_: Request, exc: StorageUnavailable) -> Response[dict[str, Any]]:
    log.warning("S3 unavailable: answering 503", exc_info=exc.__cause__)
    return _api_error(_, exc)


def _internal_error(_: Request, exc: Exception) -> Response[dict[str, Any]]:
    log.exception("unhandled error", exc_info=exc)
    return _envelope(500, "The server had an error while processing your request.",
                     type="server_error", code="internal_error")


def create_app(services: Services, *, run_reconciler: bool = True) -> Litestar:
    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        app.state.services = services
        await services.ctx.store.ensure_bucket()
        # The inference plane: starts or attaches to vLLM servers (settings.serving).
        serving = app.state.serving = ServingPlane(services.ctx.settings, services.ctx.store,
                                                   services.models)
        services.models.on_delete.append(serving.forget)
        services.models.on_delete.append(services.model_storage.freed_after_delete)
        await serving.start()
        tasks = []
        if run_reconciler:
            tasks.append(asyncio.create_task(
                run_forever(services, services.ctx.settings.reconcile_interval_seconds)))
            tasks.append(asyncio.create_task(services.webhook_sender.run_forever()))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await services.validation.close()  # the reconciler validates them again
            await serving.stop()
            await services.ctx.close()

    app = Litestar(
        route_handlers=[FilesController, UploadsController, PlanController, JobsController,
                        ModelsController, UsageController, InferenceController, *dashboard_routes(),
                        WebhookEndpointsController, *health_routes],
        dependencies={"services": Provide(provide_services),
                      "principal": Provide(provide_principal)},
        exception_handlers={
            ApiError: _api_error,
            StorageUnavailable: _storage_unavailable,
            ValidationException: _validation_error,
            HTTPException: _http_error,
            RecursionError: _recursion_error,
            Exception: _internal_error,
        },
        lifespan=[lifespan],
        request_class=json_limits.LimitedRequest,
        logging_config=None,  # the process's own (server.observability.logging)
        plugins=[RequestBodySchemaPlugin()],
        openapi_config=OpenAPIConfig(
            title="TuneForge", version="1.0.0",
            description="OpenAI-compatible fine-tuning API",
            components=Components(security_schemes={"bearer": SecurityScheme(
                type="http", scheme="bearer", description="API key: `Authorization: Bearer tf-…`",
            )}),
            security=[{"bearer": []}],
            render_plugins=openapi_render_plugins(),  # Swagger UI from vendored files
        ),
    )
    # Request ids (and, with tracing on, the request's span) around everything, 404s too.
    request_context.wrap(app)
    # Requests by route template and status, and their latency (`GET /metrics`).
    http_metrics.wrap(app)
    return app
