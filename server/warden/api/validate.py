"""Request checks that collect every problem as a (field path, description) pair."""

from __future__ import annotations

import functools
import re
import zoneinfo

from warden.errors import invalid

ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
MAX_TOKENS = 100_000_000
MAX_TEXT = 200
MAX_PAGE = 1000
MAX_PRINCIPAL = 2048
MAX_PRINCIPALS = 16
MAX_RAG_SOURCES = 100


@functools.cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


class Violations:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def check(self, ok: bool, field: str, description: str) -> bool:
        if not ok:
            self.items.append((field, description))
        return ok

    def required(self, value: str, field: str) -> bool:
        return self.check(bool(value), field, "is required")

    def id(self, value: str, field: str, required: bool = True) -> None:
        if value or required:
            self.check(bool(ID.match(value)), field,
                       "must be 1-64 characters of a-z, 0-9, '_' and '-', starting with a "
                       f"letter or digit (got {value[:80]!r})")

    def request_id(self, value: str, field: str = "request_id") -> None:
        self.check(bool(REQUEST_ID.match(value)), field,
                   f"must be 1-128 characters of A-Z, a-z, 0-9, '.', '_', ':' and '-' "
                   f"(got {value[:80]!r})")

    def text(self, value: str, field: str, limit: int = MAX_TEXT) -> None:
        self.check(len(value) <= limit, field, f"must be at most {limit} characters")

    def tokens(self, value: int, field: str) -> bool:
        return self.check(0 <= value <= MAX_TOKENS, field, f"must be between 0 and {MAX_TOKENS}")

    def org_member(self, item, at: str) -> None:
        """The common fields of a team, app or user being created: optional id, its org."""
        self.id(item.id, f"{at}.id", required=False)
        self.id(item.org_id, f"{at}.org_id")
        self.text(item.display_name, f"{at}.display_name")

    def org_settings(self, org, at: str) -> None:
        """The fields of an org a caller sets (CreateOrg, Apply)."""
        self.text(org.display_name, f"{at}.display_name")
        self.check(org.time_zone in ("", "UTC") or org.time_zone in _time_zones(),
                   f"{at}.time_zone", "must be an IANA time zone such as Europe/Paris")
        self.check(org.currency == "" or (len(org.currency) == 3 and org.currency.isupper()),
                   f"{at}.currency", "must be an ISO 4217 code such as USD")

    def principals(self, values, at: str) -> None:
        """An app's workload identities: what Envoy reports as source.principal (a SPIFFE id,
        a certificate's URI or DNS name or its subject), each at most once."""
        self.check(len(values) <= MAX_PRINCIPALS, at, f"must name at most {MAX_PRINCIPALS}")
        for i, value in enumerate(values):
            self.check(0 < len(value) <= MAX_PRINCIPAL and value == value.strip()
                       and value.isprintable(), f"{at}[{i}]",
                       f"must be 1-{MAX_PRINCIPAL} printable characters with no space at either "
                       f"end, such as spiffe://cluster.local/ns/shop/sa/chat (got {value[:80]!r})")
            self.check(value not in values[:i], f"{at}[{i}]", f"repeats {value[:80]!r}")

    def page_size(self, value: int, field: str = "page_size") -> None:
        self.check(0 <= value <= MAX_PAGE, field, f"must be between 0 and {MAX_PAGE}")

    def done(self) -> None:
        if self.items:
            raise invalid(self.items)
