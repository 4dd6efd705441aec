"""The one dependencies object the API layer is built from (see app.py and tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from warden.cache import Cache
from warden.ledger import Ledger
from warden.quota import Quotas
from warden.store.audit_query import AuditQueryStore
from warden.store.base import ApplyStore, AuditSink, DirectoryStore, PolicyStore, PriceStore
from warden.store.reporting import ReportingStore


@dataclass(frozen=True)
class Components:
    directory: DirectoryStore
    policies: PolicyStore
    prices: PriceStore
    quotas: Quotas
    ledger: Ledger
    audit: AuditSink
    apply: ApplyStore
    cache: Cache
    key_pepper: bytes
    # The database's clock, read locally (key expiry and rotation grace are judged by it).
    clock: Callable[[], datetime]
    # The max_output_tokens reserved when a call names none and a quota counts output tokens.
    default_max_output_tokens: int
    reporting: ReportingStore
    audit_query: AuditQueryStore
