"""The HTTP client for one vLLM server: list, load and unload adapters, probe a first token.

vLLM's runtime LoRA API (`VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`):
`POST /v1/load_lora_adapter {lora_name, lora_path}` (400 when the name is loaded already,
404 when the path holds no adapter), `POST /v1/unload_lora_adapter {lora_name}` (404 when
not loaded; requests in flight keep their adapter), `GET /v1/models` (the base model and
every adapter, with the adapter's path as `root`).
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from serving.errors import AdapterRejected


class ReplicaUnreachable(Exception):
    """The server did not answer (down, restarting, or the network failed)."""


@dataclass(frozen=True)
class Listed:
    """What `GET /v1/models` reports: the base model name(s) and `adapter name -> path`."""

    base_models: tuple[str, ...]
    adapters: dict[str, str]


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
        return str(body.get("error", {}).get("message") or body)
    except ValueError:
        return response.text[:500]


class VllmClient:
    def __init__(self, url: str, http: httpx.AsyncClient, *, timeout: float = 30.0,
                 api_key: str = "") -> None:
        self.url = url.rstrip("/")
        self.http = http
        self.timeout = timeout
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def _request(self, method: str, path: str, *, json: object = None,
                       seconds: float | None = None) -> httpx.Response:
        try:
            return await self.http.request(method, self.url + path, json=json,
                                           headers=self.headers,
                                           timeout=seconds or self.timeout)
        except (httpx.TransportError, httpx.TimeoutException) as exc:
            raise ReplicaUnreachable(f"{self.url}: {exc!r}") from exc

    async def list(self, seconds: float | None = None) -> Listed:
        response = await self._request("GET", "/v1/models", seconds=seconds)
        if response.status_code != 200:  # 401: a server with another key is not ours
            raise ReplicaUnreachable(f"{self.url}/v1/models answered {response.status_code}")
        bases, adapters = [], {}
        for card in response.json().get("data", []):
            if card.get("parent"):
                adapters[card["id"]] = card.get("root") or ""
            else:
                bases.append(card["id"])
        return Listed(tuple(bases), adapters)

    async def load(self, name: str, path: str) -> bool:
        """Load adapter `name` from `path`; False if that name was loaded already."""
        response = await self._request("POST", "/v1/load_lora_adapter",
                                       json={"lora_name": name, "lora_path": path})
        if response.status_code == 200:
            return True
        message = _error_message(response)
        if response.status_code == 400 and "already been loaded" in message:
            return False
        raise AdapterRejected(name, message)

    async def unload(self, name: str) -> bool:
        """Unload adapter `name`; False if it was not loaded."""
        response = await self._request("POST", "/v1/unload_lora_adapter",
                                       json={"lora_name": name})
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        raise ReplicaUnreachable(f"{self.url}: unload answered {response.status_code}: "
                                 f"{_error_message(response)}")

    async def first_token(self, model: str) -> None:
        """Generate one token with `model`: proves it is servable (and warms it up)."""
        response = await self._request(
            "POST", "/v1/completions",
            json={"model": model, "prompt": "Hello", "max_tokens": 1, "temperature": 0})
        if response.status_code != 200:
            raise AdapterRejected(model, _error_message(response))

    async def reload_weights(self, weights_path: str, seconds: float) -> None:
        """Swap the served model's weights in place for those in `weights_path` (same
        architecture), then drop the prefix cache computed with the old ones. Needs a server
        started with `VLLM_SERVER_DEV_MODE=1` (`POST /collective_rpc`)."""
        response = await self._request(
            "POST", "/collective_rpc", seconds=seconds,
            json={"method": "reload_weights", "kwargs": {"weights_path": weights_path},
                  "timeout": seconds})
        if response.status_code != 200:
            raise AdapterRejected(weights_path, _error_message(response))
        response = await self._request("POST", "/reset_prefix_cache")
        if response.status_code != 200:
            raise AdapterRejected(weights_path, _error_message(response))
