"""ASGI middleware that TuneForge adds to every vLLM server it starts (`--middleware`).

vLLM's own `--api-key` / `VLLM_API_KEY` check covers only paths under `/v1`, `/v2`,
`/inference` and `/cohere`: `/invocations` (SageMaker's entry point, which serves chat and
completions for any model name, adapters included), `/metrics` (which names running adapters),
`/tokenize`, `/detokenize`, `/load`, `/version`, `/ping` and the rest stay open. This guard
asks for the same bearer key on every path except `/health` (liveness only, says nothing).

It runs inside the vLLM process, so it imports nothing but the standard library.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = frozenset({"/health"})
_UNAUTHORIZED = b'{"error":"Unauthorized"}'


class RequireApiKey:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        key = os.environ.get("VLLM_API_KEY", "")
        self._digest = hashlib.sha256(key.encode()).digest() if key else None

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", ()):
            if name.lower() == b"authorization":
                scheme, _, token = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(
                    hashlib.sha256(token).digest(), self._digest or b"")
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (self._digest is None or scope["type"] not in ("http", "websocket")
                or scope.get("method") == "OPTIONS"
                or scope["path"].removeprefix(scope.get("root_path", "")) in OPEN_PATHS
                or self._authorized(scope)):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(_UNAUTHORIZED)).encode())]})
        await send({"type": "http.response.body", "body": _UNAUTHORIZED})
