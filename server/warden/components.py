"""The one dependencies object the API layer is built from (see app.py and tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from warden.cache import Cache
from warden.store.base import (
    ApplyStore,
    AuditSink,
    CounterStore,
    DirectoryStore,
    PolicyStore,
    PriceStore,
    UsageStore,
)


@dataclass(frozen=True)
class Components:
    directory: DirectoryStore
    policies: PolicyStore
    prices: PriceStore
    counters: CounterStore
    usage: UsageStore
    audit: AuditSink
    apply: ApplyStore
    cache: Cache
    key_pepper: bytes
    # The database's clock, read locally (key expiry and rotation grace are judged by it).
    clock: Callable[[], datetime]
