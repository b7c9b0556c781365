"""Cursor pagination over `seq` (insertion order), as OpenAI's `after`/`limit` lists."""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from tuneforge.errors import invalid

Order = Literal["asc", "desc"]


async def fetch_page(
    session: AsyncSession,
    stmt: Select[Any],
    table: Any,
    *,
    after: str | None,
    limit: int,
    order: Order = "desc",
) -> tuple[list[Any], bool]:
    """Rows of `stmt` after the row whose id is `after`, in `order`; plus has_more.

    `stmt` must already carry the tenant scope: an `after` id outside it is unknown.
    """
    if after is not None:
        cursor = (
            await session.execute(stmt.with_only_columns(table.seq).where(table.id == after))
        ).scalar_one_or_none()
        if cursor is None:
            raise invalid(f"No such object for cursor 'after': '{after}'", param="after")
        stmt = stmt.where(table.seq < cursor if order == "desc" else table.seq > cursor)
    stmt = stmt.order_by(table.seq.desc() if order == "desc" else table.seq.asc())
    rows = list((await session.execute(stmt.limit(limit + 1))).scalars())
    return rows[:limit], len(rows) > limit


def scoped(table: Any, organization_id: str) -> Select[Any]:
    return select(table).where(table.organization_id == organization_id)


def check_limit(limit: int, maximum: int) -> None:
    if not 1 <= limit <= maximum:
        raise invalid(f"limit must be between 1 and {maximum}", param="limit")
