"""Where webhooks may go: http(s) URLs whose host is not on loopback, private, link-local,
multicast or otherwise non-public addresses (server-side request forgery), unless settings
allow private targets. Checked when an endpoint is saved and, on the addresses the host
resolves to then, before every delivery attempt."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from tuneforge.errors import ApiError, invalid

# What the request schema states of a URL (scheme, host, optional port, then anything).
URL_PATTERN = (r"^https?://([A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?\.)*"
               r"[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
               r"(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}"
               r"|[1-9][0-9]{0,3}))?([/?#][^\s]*)?$")
RESOLVE_TIMEOUT_SECONDS = 3.0
NOT_ALLOWED = "webhook_target_not_allowed"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def is_public(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def _refused(url: str, why: str) -> ApiError:
    return invalid(f"Webhook URL '{url}' is not allowed: {why}. Only public http(s) targets "
                   "are accepted unless the server's webhooks.allow_private_targets is set.",
                   param="url", code=NOT_ALLOWED)


def host_of(url: str) -> tuple[str, int]:
    """The host and port of an http(s) URL; a 400 naming `url` for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise invalid(f"Invalid URL '{url}'.", param="url", code="invalid_url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid(f"Invalid URL '{url}': an http:// or https:// URL with a host is needed.",
                      param="url", code="invalid_url")
    if parts.username is not None or parts.password is not None:
        raise invalid("A webhook URL may not carry credentials; authenticate the deliveries "
                      "by their signature.", param="url", code="invalid_url")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def resolve(host: str, port: int) -> list[Address]:
    """Every address `host` resolves to (a literal address is itself); [] if it does not."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_SECONDS)
    except (OSError, TimeoutError, UnicodeError):
        return []
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


async def check_target(url: str, *, allow_private: bool) -> None:
    """At create/update time: a 400 naming `url` for a bad URL or a non-public target. A host
    that does not resolve yet is accepted (each delivery checks again)."""
    host, port = host_of(url)
    if allow_private:
        return
    if host == "localhost" or host.endswith(".localhost"):
        raise _refused(url, "it names the local host")
    for address in await resolve(host, port):
        if not is_public(address):
            raise _refused(url, f"its host resolves to a non-public address ({address})")


async def delivery_refusal(url: str, *, allow_private: bool) -> str | None:
    """Before a delivery attempt: why it may not be sent (for the delivery log), or None."""
    if allow_private:
        return None
    host, port = host_of(url)
    addresses = await resolve(host, port)
    if not addresses:
        return "the target's host did not resolve"
    if host == "localhost" or not all(is_public(a) for a in addresses):
        return "the target's host resolves to a non-public address"
    return None
