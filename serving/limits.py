"""Limits of the inference proxy: per-request caps and per-organization admission.

`check_request` refuses what would hold a vLLM server for long (`n`, `best_of`, `max_tokens`,
the number of prompts) with OpenAI's 400 naming the parameter, and sets a default
`max_tokens` when the client sends none. `Admission` bounds what one organization may run at
once (concurrent requests) and per minute (tokens, requests; token buckets): beyond that, 429
`rate_limit_exceeded` with `Retry-After` and OpenAI's `x-ratelimit-*` headers.

Everything is in this process's memory: with several API processes behind a load balancer each
enforces the limits on its own share (a shared store such as Redis would be needed for one
global budget).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from serving.errors import InvalidRequest
from tuneforge.errors import ApiError
from tuneforge.settings import InferenceLimits

_CHAT = "/v1/chat/completions"


def _integer(payload: dict[str, Any], name: str) -> int | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"'{name}' must be an integer.", param=name,
                             code="invalid_type")
    return value


def check_request(path: str, payload: dict[str, Any], limits: InferenceLimits) -> bool:
    """Refuse a request over the caps; set the default `max_tokens` when none is given.
    Returns True when the payload was changed."""
    for name in ("n", "best_of"):
        value = _integer(payload, name)
        if value is not None and value > limits.max_n:
            raise InvalidRequest(f"'{name}' is {value}; at most {limits.max_n} is allowed.",
                                 param=name)
    given = None
    for name in ("max_completion_tokens", "max_tokens"):
        value = _integer(payload, name)
        if value is not None and value > limits.max_tokens:
            raise InvalidRequest(f"'{name}' is {value}; at most {limits.max_tokens} is "
                                 "allowed.", param=name)
        if value is not None:
            given = value
    if path != _CHAT:
        prompt = payload.get("prompt")
        if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int) \
                and len(prompt) > limits.max_prompts:
            raise InvalidRequest(f"'prompt' holds {len(prompt)} prompts; at most "
                                 f"{limits.max_prompts} are allowed.", param="prompt")
    if given is None:
        payload["max_tokens"] = min(limits.default_max_tokens, limits.max_tokens)
        return True
    return False


def estimated_tokens(path: str, payload: dict[str, Any], body_bytes: int) -> int:
    """What a request may cost: its body's bytes / 4 (prompt) plus every choice's
    max tokens (as OpenAI counts requests against a tokens-per-minute limit)."""
    choices = max(int(payload.get("n") or 1), int(payload.get("best_of") or 1))
    prompts = payload.get("prompt") if path != _CHAT else None
    if isinstance(prompts, list) and prompts and not isinstance(prompts[0], int):
        choices *= len(prompts)
    out = payload.get("max_completion_tokens") or payload.get("max_tokens") or 0
    return body_bytes // 4 + choices * int(out)


class RateLimited(ApiError):
    def __init__(self, message: str, headers: dict[str, str]) -> None:
        super().__init__(429, message, type="rate_limit_error", code="rate_limit_exceeded",
                         headers=headers)


@dataclass
class Bucket:
    """A token bucket holding up to `capacity`, refilled at `capacity` per minute."""

    capacity: float
    level: float = -1.0
    stamp: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if self.level < 0:
            self.level = self.capacity

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.capacity / 60)
        self.stamp = now

    def wait_for(self, cost: float) -> float:
        """Seconds until `cost` fits (0: now)."""
        missing = min(cost, self.capacity) - self.level
        return max(0.0, missing * 60 / self.capacity)

    def reset_seconds(self) -> float:
        """Seconds until the bucket is full again."""
        return (self.capacity - self.level) * 60 / self.capacity


def _duration(seconds: float) -> str:
    """OpenAI's `x-ratelimit-reset-*` format: `1s`, `6m0s`, `120ms`."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    minutes, rest = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


@dataclass
class Permit:
    """A request's place in its organization's concurrency limit, held until released."""

    admission: Admission
    organization_id: str
    headers: dict[str, str]
    _released: bool = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.admission._finished(self.organization_id)


@dataclass
class _Org:
    running: int = 0
    tokens: Bucket | None = None
    requests: Bucket | None = None


class Admission:
    def __init__(self, limits: InferenceLimits) -> None:
        self.limits = limits
        self._orgs: dict[str, _Org] = {}

    def _org(self, organization_id: str) -> _Org:
        org = self._orgs.get(organization_id)
        if org is None:
            org = self._orgs[organization_id] = _Org(
                tokens=Bucket(self.limits.tokens_per_minute_per_org)
                if self.limits.tokens_per_minute_per_org else None,
                requests=Bucket(self.limits.requests_per_minute_per_org)
                if self.limits.requests_per_minute_per_org else None)
        return org

    def admit(self, organization_id: str, tokens: int) -> Permit:
        """Take a concurrency slot and charge the buckets, or raise RateLimited."""
        org = self._org(organization_id)
        now = time.monotonic()
        limited: list[tuple[float, str, int]] = []
        for kind, bucket, cost in (("requests", org.requests, 1), ("tokens", org.tokens, tokens)):
            if bucket is not None:
                bucket.refill(now)
                if wait := bucket.wait_for(cost):
                    limited.append((wait, kind, int(bucket.capacity)))
        cap = self.limits.max_concurrent_per_org
        if org.running >= cap:
            raise RateLimited(
                f"Too many concurrent requests for your organization: at most {cap} may run "
                "at once. Retry when one of them has finished.",
                {**self._headers(org), "Retry-After": "1"})
        if limited:
            wait, kind, limit = max(limited)
            raise RateLimited(
                f"Rate limit reached for your organization on {kind} per minute: limit "
                f"{limit}. Please try again in {_duration(wait)}.",
                {**self._headers(org), "Retry-After": str(max(1, math.ceil(wait)))})
        for bucket, cost in ((org.requests, 1), (org.tokens, tokens)):
            if bucket is not None:
                bucket.level -= min(cost, bucket.capacity)
        org.running += 1
        return Permit(self, organization_id, self._headers(org))

    def _headers(self, org: _Org) -> dict[str, str]:
        headers: dict[str, str] = {}
        for kind, bucket in (("requests", org.requests), ("tokens", org.tokens)):
            if bucket is not None:
                headers[f"x-ratelimit-limit-{kind}"] = str(int(bucket.capacity))
                headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, int(bucket.level)))
                headers[f"x-ratelimit-reset-{kind}"] = _duration(bucket.reset_seconds())
        return headers

    def _finished(self, organization_id: str) -> None:
        org = self._orgs.get(organization_id)
        if org is None:
            return
        org.running -= 1
        if org.running <= 0 and (org.tokens is None or org.tokens.level >= org.tokens.capacity) \
                and (org.requests is None or org.requests.level >= org.requests.capacity):
            del self._orgs[organization_id]  # idle and full: forget it (memory stays bounded)
