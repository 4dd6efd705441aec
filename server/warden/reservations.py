"""Reservations from claim to settlement, through the local journal.

Authorize claims its request id, decides, and records the decision (with the reservation of an
allowed call) in the journal; it answers at once: the record survives SIGKILL of the sidecar
and reaches the decision log with the next flush (flusher.py). RecordUsage finds the
reservation (this sidecar's, or the decision log's when another sidecar made it), works out
the cost, settles the reservation if it made it, journals the usage record and answers only
once the journal is fsync'd, so an acknowledged settlement survives SIGKILL and a machine
crash. Each call's outcome is told to the circuits once, with its first settlement.

A request id is unique per org: this sidecar refuses a reuse it remembers (its reservations of
the last TTL); a reuse across sidecars is found when the log is flushed, kept out of the log
and counted in warden_journal_dropped_total{kind="conflict"}.

Only the sidecar that made a reservation (its owner) settles it: it refunds what the call did
not use into the lease the allowance came from while that lease holds the same bucket (at
once usable again), and leaves the rest to its usage record, applied with the record, once.
A settlement that reaches another sidecar is journaled there without settling; the decision
log holds it for the owner and says so over NOTIFY, the owner claims it at once (and with every
flush of its own, DecisionLog.apply) and settles it as its own (settled_elsewhere). So whichever
sidecars a settlement and its retries reach, the refund is made once, and none is stranded: one
the owner never claims (it is gone) is settled by the decision log's expiry.

Reservations not settled within the TTL are settled at their reserved amount by the decision
log's expiry, which every sidecar runs now and then; a settlement acknowledged before the TTL
ended still replaces such an expiry when its record is applied.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cachetools import LRUCache

from warden import metrics
from warden.circuits import Circuits
from warden.engine import CompiledSet, Decision, Part, Plan
from warden.engine.audit import Explanation
from warden.engine.pricing import Price, cost_micros, find_price
from warden.errors import WardenError
from warden.expiring import ExpiringDict
from warden.journal import Journal
from warden.quota import Quotas
from warden.records import USAGE_FIELDS, DecisionJSON, decision_record
from warden.store.base import DecisionLog, SettledElsewhere


@dataclass(slots=True)
class Reservation:
    org_id: str
    request_id: str
    deciding: bool = True  # Authorize has not recorded its decision yet
    allowed: bool = False
    reservation_id: str = ""
    model: str = ""
    provider: str = ""
    parts: tuple[Part, ...] = ()
    expire_time: datetime | None = None
    price: Price | None = None  # what it was reserved at, when not the price table's
    settled: Mapping[str, Any] | None = None  # the usage stored for it
    settled_seq: int = 0  # its journal record, 0 when it came from the decision log
    own: bool = True  # made by this sidecar (settled here, not by its owner)


class Reservations:
    def __init__(self, journal: Journal, log: DecisionLog, quotas: Quotas, circuits: Circuits,
                 sidecar_id: str, clock: Callable[[], datetime], ttl: float,
                 flush_interval: float, max_entries: int) -> None:
        self._journal = journal
        self._circuits = circuits
        self._log = log
        self._quotas = quotas
        self._sidecar_id = sidecar_id
        self._allowed_until = 0.0  # monotonic: when the last reservation made here expires
        self._clock = clock
        self.ttl = timedelta(seconds=ttl)
        self._ttl_seconds = ttl
        self._flush_interval = flush_interval
        self._recent = ExpiringDict(max_entries, ttl + 300)
        # (org, snapshot id) -> the journal segment its body was last journaled in. A body is
        # journaled once per segment, so a damaged segment can take only its own
        # explanations' snapshot with it; one forgotten is journaled again, and stored once.
        self._snapshots: LRUCache = LRUCache(maxsize=max_entries)

    # -- Authorize -----------------------------------------------------------------------------

    def claim(self, org_id: str, request_id: str) -> Reservation:
        """Hold a request id for one Authorize; ALREADY_EXISTS if this sidecar has seen it."""
        if (org_id, request_id) in self._recent:
            raise WardenError("ALREADY_EXISTS", "REQUEST_ID_REUSED",
                              f"request_id {request_id!r} was already authorized; "
                              "use a new id for each LLM call")
        reservation = self._recent[(org_id, request_id)] = Reservation(org_id, request_id)
        return reservation

    def release(self, reservation: Reservation) -> None:
        """Authorize failed before deciding: the id may be used again."""
        if reservation.deciding:
            self._recent.pop((reservation.org_id, reservation.request_id), None)

    def record(self, reservation: Reservation, compiled: CompiledSet, plan: Plan,
               decision: Decision, parts: list[Part],
               explanation: Explanation | None = None) -> str:
        """Log the decision, with the attributes of its explanation event if given (durable
        against SIGKILL once this returns); return its decision id, which is an allowed call's
        reservation id. The first record of each journal segment that refers to a snapshot
        carries its body."""
        now = self._clock()
        route, request, org_id = decision.route, plan.request, compiled.identity.org_id
        r = reservation
        decision_id = os.urandom(16).hex()
        r.deciding, r.allowed = False, decision.allowed
        r.model = route.model if route else request.model
        r.provider = route.provider if route else request.provider
        expire = None
        price = compiled.price if compiled.price_is_default else None
        if decision.allowed:
            r.reservation_id, r.parts, r.price = decision_id, tuple(parts), price
            r.expire_time = expire = now + self.ttl
            self._allowed_until = time.monotonic() + self._ttl_seconds
        reserved_cost = compiled.worst_cost(plan, decision)
        snapshot = explanation.snapshot if explanation else None
        segment = self._journal.segment
        with_body = snapshot is not None and self._snapshots.get((org_id, snapshot.id)) != segment
        if (expire is not None and not with_body and (explanation is None or explanation.plain)
                and _own_results(plan, decision)):
            encoder = compiled.derived.get("journal")
            if encoder is None:
                encoder = compiled.derived["journal"] = DecisionJSON(compiled)
            self._journal.append_body(encoder.encode(
                plan, decision, r.parts, decision_id, now.isoformat(), expire.isoformat(),
                reserved_cost, snapshot.id if snapshot else None),
                ("decision", 1 if explanation is None else 2))
            return decision_id
        record = decision_record(compiled.identity, request, decision, decision_id, r.parts,
                                 reserved_cost, price, now.isoformat(),
                                 expire.isoformat() if expire else None)
        if explanation is not None:
            record["explanation"] = explanation.attributes(decision)
            if with_body:
                assert snapshot is not None
                record["snapshot"] = snapshot.body
        self._journal.append(record)
        if with_body:  # once it is in the journal
            assert snapshot is not None
            self._snapshots[(org_id, snapshot.id)] = segment
        return decision_id

    # -- RecordUsage ---------------------------------------------------------------------------

    async def settle(self, org_id: str, usage: dict[str, Any], reservation_id: str,
                     reported_cost: int | None,
                     prices: Mapping[tuple[str, str], Price]) -> tuple[int | None, bool]:
        """Store the usage of an allowed call once and settle its reservation; return
        (cost_micros, None when unknown; duplicate). Acknowledge only what the journal holds
        durably."""
        request_id = usage["request_id"]
        r = await self._reservation(org_id, request_id)
        if not r.allowed:
            raise WardenError("FAILED_PRECONDITION", "REQUEST_NOT_AUTHORIZED",
                              f"request_id {request_id!r} was denied by Authorize")
        if reservation_id and reservation_id != r.reservation_id:
            raise WardenError("INVALID_ARGUMENT", "INVALID_ARGUMENT",
                              f"reservation_id does not match request_id {request_id!r}",
                              [("reservation_id", "is not the reservation Authorize returned "
                                "for this request_id")])
        row = {**usage, "model": usage["model"] or r.model,
               "provider": usage["provider"] or r.provider}
        row.update(zip(("cost_micros", "cost_source"), self._cost(r, row, reported_cost, prices),
                       strict=True))
        if r.settled is not None:
            return await self._settled_again(r, row)
        if r.expire_time is not None and self._clock() >= r.expire_time:
            raise self._expired(r)
        record = {**row, "kind": "usage", "org_id": org_id,
                  "record_time": self._clock().isoformat(),
                  "adjustments": self._quotas.settle(r.parts, _actual(row)) if r.own else []}
        r.settled, r.settled_seq = record, self._journal.append(record)
        self._circuits.observe(row["provider"], row["model"], row["outcome"])
        await self._journal.sync(r.settled_seq)
        return row["cost_micros"], False

    def awaiting_usage(self) -> bool:
        """A reservation made here may not be settled yet (its TTL has not run out)."""
        return time.monotonic() < self._allowed_until

    def settled_elsewhere(self, settled: Sequence[SettledElsewhere]) -> None:
        """Settle this sidecar's reservations whose usage another sidecar stored (handed over
        once by the decision log), as if their RecordUsage had come here."""
        for s in settled:
            r = self._recent.get((s.org_id, s.request_id))
            if r is not None and r.settled_seq:
                # Settled here too: the leases took their share then; the rest travelled with
                # this sidecar's own record, which came second and is not stored.
                assert r.settled is not None
                self._quotas.adjust(list(r.settled["adjustments"]))
                continue
            self._quotas.adjust(self._quotas.settle(s.parts, _actual(s.usage)))
            if r is not None and r.settled is None:
                r.settled = s.usage

    @staticmethod
    def _cost(r: Reservation, row: Mapping[str, Any], reported: int | None,
              prices: Mapping[tuple[str, str], Price]) -> tuple[int | None, str]:
        """(cost_micros, cost_source): as reported, else at the model's price (the table's,
        else the one the call was reserved at), else unknown unless a budget counts the call."""
        if reported is not None:
            return reported, "reported"
        price = find_price(prices, row["provider"], row["model"]) or r.price
        if price is not None:
            return cost_micros(price, row["input_tokens"], row["output_tokens"],
                               row["cached_input_tokens"]), "priced"
        budgets = sorted({p.policy_id for p in r.parts if p.metric == "COST_MICROS"})
        if budgets:
            raise WardenError(
                "FAILED_PRECONDITION", "MODEL_NOT_PRICED",
                f"model {row['model']!r} (provider {row['provider']!r}) has no price and "
                f"budget {', '.join(budgets)} counts this call; set one with "
                "Admin.SetModelPrice or report cost_micros")
        return None, "unpriced"

    async def _settled_again(self, r: Reservation, row: Mapping[str, Any]
                             ) -> tuple[int | None, bool]:
        settled = r.settled
        assert settled is not None
        if settled["outcome"] == "expired":
            raise self._expired(r)
        if r.settled_seq:
            await self._journal.sync(r.settled_seq)
        # A priced cost may differ on retry if the price changed meanwhile; that is no conflict.
        fields = USAGE_FIELDS + (("cost_micros",) if row["cost_source"] == "reported" else ())
        if any(settled[f] != row[f] for f in fields):
            raise WardenError("ALREADY_EXISTS", "USAGE_CONFLICT",
                              f"usage for request_id {r.request_id!r} was already recorded "
                              "with different values")
        return settled["cost_micros"], True

    def _expired(self, r: Reservation) -> WardenError:
        return WardenError(
            "FAILED_PRECONDITION", "RESERVATION_EXPIRED",
            f"the reservation of request_id {r.request_id!r} expired at "
            f"{r.expire_time.isoformat() if r.expire_time else '?'} (TTL "
            f"{self.ttl.total_seconds():g} s) and was settled at its reserved amount")

    async def _reservation(self, org_id: str, request_id: str) -> Reservation:
        r = self._recent.get((org_id, request_id))
        if r is not None and not r.deciding:
            return r
        metrics.DB_ROUND_TRIPS.labels("settle").inc()
        stored = await self._log.reservation(org_id, request_id)
        if stored is None:
            raise WardenError(
                "NOT_FOUND", "NOT_FOUND",
                f"no Authorize was made for request_id {request_id!r} (one made through another "
                f"sidecar reaches the database within {self._flush_interval:g} s)")
        known = self._recent.get((org_id, request_id))
        if known is not None and not known.deciding:
            return known  # a concurrent call loaded it first: one object per request id
        r = Reservation(org_id, request_id, False, stored.allowed, stored.reservation_id,
                        stored.model, stored.provider, stored.parts, stored.expire_time,
                        stored.price, stored.usage, own=stored.owner == self._sidecar_id)
        self._recent[(org_id, request_id)] = r
        return r


def _actual(usage: Mapping[str, Any]) -> dict[str, int]:
    """A call's usage by quota metric."""
    return {"REQUESTS": 1, "INPUT_TOKENS": usage["input_tokens"],
            "OUTPUT_TOKENS": usage["output_tokens"],
            "TOTAL_TOKENS": usage["input_tokens"] + usage["output_tokens"],
            "COST_MICROS": usage["cost_micros"] or 0}


def _own_results(plan: Plan, decision: Decision) -> bool:
    """The decision's results are its plan's, then each quota's plain admission (no lowered
    tokens spoke)."""
    results, planned = decision.results, len(plan.results)
    return len(results) == planned + len(plan.checks) and all(
        r is c.admitted for r, c in zip(results[planned:], plan.checks, strict=True))
