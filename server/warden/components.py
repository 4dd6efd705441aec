"""The one dependencies object the API layer is built from (see app.py and tests/conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass

from warden.store.base import (
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
    key_pepper: bytes
