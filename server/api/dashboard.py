"""The web dashboard and the OpenAPI UI, served offline from files shipped with the package.

`/` is the dashboard's page and `/dashboard/…` its assets (`server/api/static/`: our own ES
modules plus Preact, htm, uPlot and swagger-ui-dist vendored from npm, see
`static/vendor/README.md`). These routes are unauthenticated and serve only static files: the
page signs in with an API key kept in the browser's sessionStorage and every data call goes
to the authenticated `/v1` API with it. None of them is in the OpenAPI document.

`/schema/swagger` (and `/schema`) render Swagger UI from the vendored assets instead of a CDN;
the CDN-only renderers (ReDoc, RapiDoc, Elements) are not served.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from pathlib import Path

from litestar import Response, get
from litestar.datastructures import CacheControlHeader
from litestar.handlers import BaseRouteHandler
from litestar.openapi.plugins import (
    JsonRenderPlugin,
    OpenAPIRenderPlugin,
    SwaggerRenderPlugin,
    YamlRenderPlugin,
)
from litestar.router import Router
from litestar.static_files import create_static_files_router

STATIC_DIR = Path(__file__).resolve().parent / "static"
ASSETS_PATH = "/dashboard"
_SWAGGER = f"{ASSETS_PATH}/vendor/swagger-ui"
_FAVICON = f"<link rel='icon' type='image/svg+xml' href='{ASSETS_PATH}/favicon.svg'>"
_INLINE_SCRIPT = re.compile(rb"<script type=\"importmap\">(.*?)</script>", re.DOTALL)


@cache
def _page() -> tuple[bytes, str]:
    """The page and its Content-Security-Policy: scripts only from this origin plus the
    page's one inline import map (by hash), data calls only to this origin."""
    html = (STATIC_DIR / "index.html").read_bytes()
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(m.group(1)).digest()).decode() + "'"
        for m in _INLINE_SCRIPT.finditer(html))
    policy = ("default-src 'self'; "
              f"script-src 'self' {hashes}; "
              "style-src 'self' 'unsafe-inline'; "
              "img-src 'self' data: blob:; "
              "connect-src 'self'; "
              "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
    return html, policy


@get("/", include_in_schema=False, name="dashboard", sync_to_thread=False)
def dashboard_page() -> Response[bytes]:
    html, policy = _page()
    return Response(html, media_type="text/html; charset=utf-8", headers={
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    })


def dashboard_routes() -> list[BaseRouteHandler | Router]:
    """The page at `/` and its assets under `/dashboard/` (unauthenticated, static only)."""
    return [
        dashboard_page,
        create_static_files_router(
            path=ASSETS_PATH, directories=[STATIC_DIR], name="dashboard-assets",
            include_in_schema=False, cache_control=CacheControlHeader(no_cache=True)),
    ]


def openapi_render_plugins() -> list[OpenAPIRenderPlugin]:
    """`/schema` and `/schema/swagger`: Swagger UI from the vendored files;
    `/schema/openapi.json` and `/schema/openapi.yaml`: the document."""
    return [
        SwaggerRenderPlugin(
            js_url=f"{_SWAGGER}/swagger-ui-bundle.js", css_url=f"{_SWAGGER}/swagger-ui.css",
            standalone_preset_js_url=f"{_SWAGGER}/swagger-ui-standalone-preset.js",
            favicon=_FAVICON, path="/swagger"),
        JsonRenderPlugin(),
        YamlRenderPlugin(),
    ]
