"""Request-scoped dependencies: the services and the authenticated caller."""

from __future__ import annotations

from litestar import Request
from litestar.datastructures import State

from server.auth import Principal
from server.service import Services


def services_of(state: State) -> Services:
    return state.services  # type: ignore[no-any-return]


async def provide_services(state: State) -> Services:
    return services_of(state)


async def provide_principal(request: Request, state: State) -> Principal:
    return await services_of(state).ctx.authenticate(request.headers.get("authorization"))
