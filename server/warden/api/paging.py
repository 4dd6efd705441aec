"""Pages of a list: rows are fetched with limit size + 1, the extra one only saying that there
is a next page."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

DEFAULT_PAGE = 100


def page(rows: Sequence[Mapping[str, Any]], size: int,
         token: Callable[[Mapping[str, Any]], str] = lambda last: last["id"]
         ) -> tuple[Sequence[Mapping[str, Any]], str]:
    """One page of `size` rows of those fetched, and the next page's token (from its last
    row; "" when there is no next page)."""
    if len(rows) > size:
        return rows[:size], token(rows[size - 1])
    return rows, ""


def page_size(request: Any) -> int:
    return request.page_size or DEFAULT_PAGE
