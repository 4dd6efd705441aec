"""The one dependencies object the API layer is built from: the stores (Protocols of
store/base.py, whichever implementations `app` chose) and the domain services built on them.
`Components.build` is also the test constructor: give it stores (an in-memory counter store,
say) and a Settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from warden.audit_log import AuditLog
from warden.authorizer import Authorizer
from warden.cache import Cache
from warden.callers import Callers
from warden.circuits import Circuits
from warden.flusher import Flusher
from warden.journal import Journal
from warden.quota import Quotas
from warden.records import batch_entry
from warden.reservations import Reservations
from warden.settings import Settings
from warden.store.audit_query import AuditQueryStore
from warden.store.base import (
    ApplyStore,
    AuditSink,
    CircuitDefaults,
    CircuitStore,
    CounterStore,
    DecisionLog,
    DirectoryStore,
    LookupStore,
    PolicyStore,
    PriceStore,
)
from warden.store.reporting import ReportingStore


@dataclass(frozen=True, kw_only=True)
class Stores:
    directory: DirectoryStore
    policies: PolicyStore
    prices: PriceStore
    apply: ApplyStore
    audit: AuditSink
    reporting: ReportingStore
    audit_query: AuditQueryStore
    lookups: LookupStore
    counters: CounterStore
    decision_log: DecisionLog
    circuits: CircuitStore


@dataclass(frozen=True, kw_only=True)
class Components:
    stores: Stores
    cache: Cache
    callers: Callers
    quotas: Quotas
    reservations: Reservations
    circuits: Circuits
    authorizer: Authorizer
    audit_log: AuditLog
    journal: Journal
    flusher: Flusher
    key_pepper: bytes
    # The database's clock, read locally (key expiry and rotation grace are judged by it).
    clock: Callable[[], datetime]

    @classmethod
    def build(cls, settings: Settings, stores: Stores, key_pepper: bytes, sidecar_id: str,
              clock: Callable[[], datetime]) -> Components:
        """`sidecar_id`: this sidecar's lasting name (it owns the reservations it makes)."""
        s = settings
        cache = Cache(stores.lookups, s.cache_max_entries, s.cache_ttl_seconds,
                      s.default_max_output_tokens)
        journal = Journal(s.data_path / "journal", keep=batch_entry,
                          max_bytes=s.journal_max_bytes)
        quotas = Quotas(stores.counters, s.lease_timeout_seconds)
        circuits = Circuits(
            stores.circuits, sidecar_id, clock,
            CircuitDefaults(s.circuit_error_rate, s.circuit_min_calls, s.circuit_window_seconds,
                            s.circuit_consecutive_failures, s.circuit_cooldown_seconds),
            s.circuit_probe_seconds)
        reservations = Reservations(journal, stores.decision_log, quotas, circuits, sidecar_id,
                                    clock, s.reservation_ttl_seconds, s.journal_flush_seconds,
                                    s.cache_max_entries)
        callers = Callers(cache, key_pepper, clock)
        return cls(
            stores=stores, cache=cache, callers=callers, quotas=quotas,
            reservations=reservations, circuits=circuits,
            authorizer=Authorizer(callers, cache, quotas, reservations, journal, circuits, clock,
                                  key_pepper, s.max_prompt_chars),
            audit_log=AuditLog(journal, cache, key_pepper, max(s.journal_flush_seconds, 1.0)),
            journal=journal,
            flusher=Flusher(journal, stores.decision_log, reservations, sidecar_id, clock,
                            s.journal_flush_seconds, min(s.reservation_ttl_seconds / 4, 30.0)),
            key_pepper=key_pepper, clock=clock)
