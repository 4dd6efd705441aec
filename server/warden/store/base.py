"""What the rest of Warden needs from storage, on both planes. Postgres implements each of
these (store/postgres.py, lookups.py, apply.py, counters.py, decision_log.py); the counter store
also has an in-memory implementation (store/memory.py) for tests. tests/contract runs one suite
per Protocol against every implementation.

Admin-facing rows are plain mappings keyed by column name (asyncpg Records satisfy this);
the data-plane methods speak the engine's dataclasses. Every method raises
warden.errors.StoreUnavailable when its backend cannot be reached, never a driver's error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from warden.engine import Circuit, PolicyRecord, ProviderSwitch
from warden.engine.model import Part
from warden.engine.pricing import Price
from warden.keys import KeyRecord

Row = Mapping[str, Any]


class DirectoryStore(Protocol):
    """Orgs, teams, apps, users, API keys and provider switches. Creating something that exists
    raises ALREADY_EXISTS; naming a parent that does not exist (or belongs to another org)
    raises NOT_FOUND. Lists are ordered by id; `after` is exclusive. Users carry `team_ids`."""

    async def create_org(self, org: Row) -> Row: ...
    async def get_org(self, org_id: str) -> Row | None: ...
    async def list_orgs(self, after: str, limit: int) -> list[Row]: ...
    async def create_team(self, team: Row) -> Row: ...
    async def list_teams(self, org_id: str, after: str, limit: int) -> list[Row]: ...
    async def create_app(self, app: Row) -> Row: ...
    async def list_apps(self, org_id: str, after: str, limit: int) -> list[Row]: ...
    async def create_user(self, user: Row) -> Row: ...
    async def list_users(self, org_id: str, after: str, limit: int) -> list[Row]: ...
    async def create_api_key(self, key: Row) -> Row: ...
    async def list_api_keys(self, app_id: str, after: str, limit: int) -> list[Row]: ...
    async def revoke_api_key(self, key_id: str) -> Row | None: ...

    async def rotate_api_key(self, key_id: str, new_key: Row, grace: timedelta) -> Row:
        """Create `new_key` (id, prefix, hash) as a copy of the key's app, user, models and
        expiry, and end the old key's life after `grace` (never later than it already ends).
        NOT_FOUND for an unknown key, FAILED_PRECONDITION for a revoked or expired one."""
        ...

    async def set_provider_switch(self, switch: Row) -> Row: ...
    async def list_provider_switches(self, org_id: str) -> list[Row]: ...


class PolicyStore(Protocol):
    async def create_policy(self, policy: Row) -> Row: ...
    async def get_policy(self, policy_id: str) -> Row | None: ...

    async def update_policy(self, policy: Row, revision: int) -> Row:
        """Replace a policy's settings and bump its revision. `revision` > 0 makes it
        conditional (ABORTED when the stored revision differs). NOT_FOUND for an unknown id,
        FAILED_PRECONDITION for a changed scope or policy type."""
        ...

    async def delete_policy(self, policy_id: str) -> bool: ...
    async def list_policies(self, scope: tuple[str, str] | None, after: str,
                            limit: int) -> list[Row]: ...


class LookupStore(Protocol):
    """What every Authorize needs; read through warden.cache.Cache, not on the hot path."""

    async def find_api_key(self, prefix: str) -> KeyRecord | None: ...

    async def find_app(self, app_id: str) -> tuple[str, str] | None:
        """(org id, team id or "") of the app, or None."""
        ...

    async def find_principal(self, principal: str) -> str | None:
        """The id of the app a workload identity names, or None."""
        ...

    async def user_teams(self, org_id: str, user_id: str) -> tuple[str, ...] | None:
        """The user's teams, or None when the org has no such user."""
        ...

    async def policies_for(self, scopes: Sequence[tuple[str, str]]
                           ) -> dict[tuple[str, str], tuple[PolicyRecord, ...]]:
        """The policies of each scope (every scope asked for is a key)."""
        ...

    async def provider_switches(self) -> tuple[ProviderSwitch, ...]: ...
    async def prices(self) -> dict[tuple[str, str], Price]: ...

    async def circuits(self) -> tuple[Circuit, ...]:
        """The circuits routing must go past: open, half-open or forced open."""
        ...


# The `table` a ChangeFeed names when the decision log holds usage for a sidecar (the row id is
# that sidecar's id).
REFUNDS = "refund_pending"


class ChangeFeed(Protocol):
    async def run(self, on_change: Callable[[str, str], None],
                  on_state: Callable[[bool], None]) -> None:
        """Until cancelled: call on_change(table, row id) for every committed change to a cached
        table, and on_change("refund_pending", sidecar id) when usage is held for a sidecar
        (DecisionLog.apply); on_state(True) each time the feed is listening (changes before it
        may have been missed), on_state(False) as soon as it is not."""
        ...


class PriceStore(Protocol):
    async def set_price(self, price: Row) -> Row: ...
    async def list_prices(self) -> list[Row]: ...


class AuditSink(Protocol):
    """What the API writes straight to the database (audit events go through the journal:
    audit_log.py)."""

    async def admin_refused(self, method: str, peer: str, reason: str) -> None:
        """Record an Admin call refused for its credentials."""
        ...


@dataclass(frozen=True)
class Declared:
    """The state `Admin.Apply` converges the orgs it names to. Rows use the tables' column
    names; users carry `team_ids` (their memberships); policies carry `id` plus the columns of
    api.policies.policy_row."""

    orgs: Sequence[Row] = ()
    teams: Sequence[Row] = ()
    apps: Sequence[Row] = ()
    users: Sequence[Row] = ()
    policies: Sequence[Row] = ()


@dataclass(frozen=True)
class Change:
    kind: str  # org | team | app | user | policy
    id: str
    action: str  # create | update | delete
    fields: tuple[str, ...] = field(default=())


class ApplyStore(Protocol):
    async def apply(self, declared: Declared, dry_run: bool) -> list[Change]:
        """Converge the declared orgs in one transaction (serialized against other applies) and
        return every change in the order made; with dry_run, compute them and roll back. A
        declaration that cannot be applied raises WardenError and changes nothing."""
        ...


# -- the data plane ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Grant:
    """What one lease call handed out, and the state of its quota after it."""

    granted: int  # of what was asked for: at most the limit less everything counted
    used: int  # everything the window or period counts after this grant, every sidecar's
    bucket_start: datetime  # the bucket the grant counts in (a window's 1/120; a period)
    bucket_end: datetime
    reset_time: datetime  # when allowance frees up next
    db_now: datetime  # the store's clock when it granted


@dataclass(frozen=True, slots=True)
class BudgetAlert:
    """The audit event that says a budget's period reached its alert threshold."""

    policy_id: str
    event_id: str  # names the policy and the period: one event per period, whoever raises it
    time: datetime
    attributes: Mapping[str, Any]


class CounterStore(Protocol):
    """Quota counters shared by every sidecar: per quota and bucket, everything handed out to
    sidecars plus what settlements charged beyond their reservations. Never hands out more
    than a limit in any window or period, however many sidecars ask at once."""

    async def lease(self, policy_id: str, limit: int, want: int, window: timedelta | None,
                    period: str, debt: int, returned: tuple[datetime, int] | None) -> Grant:
        """Hand out up to `want` of the quota's allowance left in its current bucket: a sliding
        `window` (rate limits: 120 buckets, the oldest counted whole) or a calendar `period`
        ("day" or "month" in the org's time zone; budgets). First give back `returned`
        (bucket start, amount) unspent from an ended lease, and charge `debt` (admitted while
        the store was away) to the current bucket even past the limit. One call per quota at
        a time across all sidecars."""
        ...

    async def adjust(self, deltas: Sequence[tuple[str, datetime, int]]) -> None:
        """Add each (policy id, bucket start, delta) to its bucket: negative gives back,
        positive charges. A bucket never goes below zero; a deleted policy's deltas are
        dropped."""
        ...

    async def raise_alert(self, alert: BudgetAlert) -> bool:
        """Store the alert event unless its org already has an event with its id; True when
        this call stored it."""
        ...


@dataclass(frozen=True)
class Batch:
    """Journal records to apply in one transaction, as the journal holds them."""

    decisions: Sequence[bytes]  # JSON objects (records.decision_record)
    usage: Sequence[bytes]  # JSON objects (records.usage_record)
    # Audit events as rows of COPY text format (records.copy_rows, the journal's payload), and
    # whether no row of them needs the look-up by id (every event carries the caller's time).
    audit: Sequence[tuple[bytes, bool]]
    fresh: bool  # journaled by this process, so every org named exists (orgs are never deleted)
    sidecar: str  # the sidecar that journaled it, which owns its decisions' reservations


@dataclass(frozen=True)
class SettledElsewhere:
    """The usage another sidecar stored for a reservation of this one, which this one
    settles."""

    org_id: str
    request_id: str
    usage: Mapping[str, Any]  # the stored usage (tokens, cost, outcome, ...)
    parts: tuple[Part, ...]  # the reservation's


@dataclass(frozen=True)
class Applied:
    """What applying a Batch did beyond storing it."""

    conflicting: int  # decisions whose request id the org had already logged for another call
    usage_orphaned: int  # usage naming no logged, allowed request
    audit_orphaned: int  # audit events of an org the store does not have
    # The batch's sidecar's reservations whose usage another sidecar stored, handed over once.
    settled_elsewhere: Sequence[SettledElsewhere] = ()


@dataclass(frozen=True)
class StoredReservation:
    """An allowed call's reservation as the decision log holds it."""

    allowed: bool
    reservation_id: str
    model: str
    provider: str
    parts: tuple[Part, ...]
    expire_time: datetime | None
    price: Price | None  # the price the reservation was made at, when not the price table's
    usage: Mapping[str, Any] | None  # the usage stored for it, if any
    owner: str  # the sidecar that made it


class DecisionLog(Protocol):
    """The durable record of decisions, usage and audit events, applied from each sidecar's
    journal. Applying is idempotent: a record applied twice (a journal replayed after a
    crash) is stored once and changes the counters once."""

    async def apply(self, batch: Batch) -> Applied:
        """Store the batch in one transaction. Decisions are logged once per (org, request
        id), owned by the batch's sidecar. Usage is stored once per request: when the owner's,
        its adjustments (what the owner did not settle in its leases) are applied to the
        counters; when another sidecar's, it is held for the owner, who settles it itself:
        it gets each such usage once, in `settled_elsewhere`, from its next apply (an empty
        batch claims too), while the reservation has not expired; after that, `expire`
        settles it in the counters. So a reservation is settled once, by one sidecar. Raises
        StoreRefused when a value in the batch can never be stored (the caller bisects),
        StoreUnavailable when the store is away."""
        ...

    async def reservation(self, org_id: str, request_id: str) -> StoredReservation | None:
        """The logged decision of a request id (with its usage), or None."""
        ...

    async def expire(self, limit: int) -> int:
        """Settle up to `limit` reservations whose time ran out at their reserved amount, and
        the held usage of expired reservations in the counters; return how many reservations
        expired. Any number of sidecars may run it at once."""
        ...


@dataclass(slots=True)
class Tally:
    """One sidecar's outcomes of one circuit (provider and model) since its last report."""

    provider: str
    model: str
    calls: int = 0
    failures: int = 0
    trailing: int = 0  # the failures the tally ends with, in a row
    succeeded: bool = False  # at least one call did not fail


@dataclass(frozen=True, slots=True)
class CircuitDefaults:
    """The thresholds of a circuit that sets none of its own (WARDEN_CIRCUIT_*)."""

    error_rate: float
    min_calls: int
    window_seconds: int
    consecutive_failures: int  # 0: only the error rate opens a circuit
    cooldown_seconds: float


class CircuitStore(Protocol):
    """Circuits shared by every sidecar; how reports move them is migrations/0010_circuits.sql.
    A change of state reaches every sidecar over the ChangeFeed (table "circuits")."""

    async def report(self, tallies: Sequence[Tally], defaults: CircuitDefaults
                     ) -> dict[tuple[str, str], str]:
        """Add the tallies to their circuits' windows (in one transaction); the state each
        circuit the report moved went to ("open" or "closed"), by (provider, model)."""
        ...

    async def claim_probe(self, provider: str, model: str, owner: str, seconds: float
                          ) -> bool:
        """Make an open circuit whose cool-down is over half-open with `owner` holding its
        probe for `seconds` (also one whose probe was given up); False when another sidecar
        was first or the circuit is not due."""
        ...

    async def set_circuit(self, circuit: Row) -> Row:
        """Force a circuit open or closed (forced "open"/"closed") or back to automatic
        (None, closed and with an empty window), with its thresholds (None: the defaults)."""
        ...

    async def list_circuits(self) -> list[Row]:
        """Every circuit with its window's calls and failures, by provider and model."""
        ...
