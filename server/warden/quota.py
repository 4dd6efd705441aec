"""Quota leases: exact global limits without a database round trip per decision.

Every quota (rate limit or budget) is counted in Postgres by what it has handed out
(migrations/0003_quotas.sql). A sidecar takes a slice of a quota's remaining allowance with one
call to warden_lease, spends it locally, and asks again when it runs short. Since the database
never hands out more than the limit, and a sidecar never spends more than it was handed, the
total admitted across any number of sidecars never exceeds the limit.

- Slices: an eighth of what was left at the last grant (so sidecars near the limit take single
  units and none can starve the others), capped at about LEASE_HORIZON seconds of this
  sidecar's recent spending. A sidecar that got less than it asked for asks again at most every
  EMPTY_RETRY seconds.
- A lease lives as long as its bucket (a 1/120 of a sliding window; a budget's period); what is
  unspent when it ends, or at shutdown, is given back.
- All or nothing: the leases a call needs are refilled first; then, with no await in between,
  engine.fit() says what they cover and either every amount is taken or none.
- Settlement: only the sidecar that made a reservation settles it: a reservation's difference
  from actual usage goes back into the live lease it came from, or to its bucket in the
  database, once (reservations.py says how a settlement that reached another sidecar gets
  here).
- Database away: what a sidecar holds stays spendable. Beyond it, a fail_open quota admits and
  owes the amount (charged at the next grant); a fail_closed one denies.
- Budget alerts: a grant that finds a budget's period at or over its alert threshold queues an
  alert (budget_alerts.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from datetime import datetime

from warden import metrics
from warden.budget_alerts import BudgetAlerts
from warden.engine import Fit, PolicyRecord, QuotaCheck, QuotaOutcome, fit
from warden.engine.model import Part
from warden.errors import StoreUnavailable
from warden.lease import Lease, lease_setting, lease_window
from warden.store.base import CounterStore

log = logging.getLogger("warden.quota")

DOWN_FOR = 0.5  # after the database failed, don't ask it again for this long
EMPTY_RETRY = 0.1  # a quota that had less left than asked is asked again at most this often
LEASE_HORIZON = 4.0  # a slice covers at most about this many seconds of recent spending
# The spending rate is measured over at least this long. Refills in quick succession with
# nothing spent between them (a bucket's first, or one whose bucket ended in transit) used to
# halve it each time, shrinking slices to single units that concurrent callers then fought over.
RATE_INTERVAL = 0.2
RETURN_INTERVAL = 0.25  # how often unspent allowance of ended leases is given back
# A lease ends on this sidecar's clock up to one round trip before its bucket ends on the
# database's (it is timed from before the call that granted it). A grant asked for in that gap
# lands in the ending bucket and dies at once, so a call waits the gap out, up to this long
# (a tenth of the shortest bucket): at a busy sidecar it cost a third more lease calls.
BOUNDARY_WAIT = 0.05
# Refill rounds one decision may wait for: others may spend a refill first, but each round
# either gets allowance or finds the quota exhausted, so this bound is only a safety net.
ATTEMPTS = 50

class Quotas:
    def __init__(self, store: CounterStore, timeout: float) -> None:
        self._store = store
        self._timeout = timeout  # a lease call slower than this counts as the database away
        self._leases: dict[str, Lease] = {}
        # (policy id, bucket, delta) to send: unspent allowance given back.
        self._returns: list[tuple[str, datetime, int]] = []
        self._alerts = BudgetAlerts(store, timeout)
        self._down_until = 0.0
        self._tasks: set[asyncio.Task] = set()
        self._released = False  # at shutdown: no more renewals

    # -- leases ------------------------------------------------------------------------------

    def _lease(self, policy: PolicyRecord) -> Lease:
        lease = self._leases.get(policy.id)
        # The cache hands out the same record until the policy changes: compare by identity
        # first, so a decision builds nothing here in the common case.
        if lease is None or (lease.policy is not policy
                             and lease_setting(lease.policy) != lease_setting(policy)):
            owed = 0
            if lease is not None:  # the policy's limit or window changed
                self._give_back(lease)
                owed = lease.debt
            lease = self._leases[policy.id] = Lease(policy, debt=owed)
        else:
            lease.policy = policy
        return lease

    def _give_back(self, lease: Lease) -> None:
        """End the lease's current bucket: its unspent allowance goes back to the database."""
        if lease.bucket is not None and lease.available > 0:
            self._returns.append((lease.policy.id, lease.bucket, -lease.available))
        lease.available = 0
        lease.bucket = None

    def _slice(self, lease: Lease) -> int:
        remaining = lease.unleased if lease.granted_at else lease.policy.limit
        want = max(remaining // 8, 1)
        if lease.rate > 0:
            want = min(want, max(int(lease.rate * LEASE_HORIZON), 1))
        wanted, lease.wanted = lease.wanted, 0
        return max(want, wanted)

    async def _refill(self, lease: Lease, short: int) -> None:
        """Wait for the grant in flight, or send one. A caller that joins a grant already in
        flight adds what it is short of to the next one; take() asks again if it is still
        short once this one is back."""
        lease.wanted += short
        if lease.refill is None:
            lease.refill = asyncio.ensure_future(self._grant(lease, self._slice(lease)))
        await asyncio.shield(lease.refill)

    async def _grant(self, lease: Lease, want: int) -> None:
        try:
            await self._ask(lease, want)
        finally:
            lease.refill = None  # before any waiter wakes

    async def _ask(self, lease: Lease, want: int) -> None:
        now = time.monotonic()
        if now < self._down_until:
            lease.unavailable = True
            return
        if lease.bucket is not None and not lease.live(now):
            gap = min(lease.until + lease.rtt - now, BOUNDARY_WAIT)
            if gap > 0:
                await asyncio.sleep(gap)
                now = time.monotonic()
        policy, debt = lease.policy, lease.debt
        window, period = lease_window(policy)
        # An ended lease gives back what it did not spend in this same call, so that the
        # allowance is not stranded until the next background return.
        returned_bucket, returned = lease.bucket, 0
        if returned_bucket is not None and not lease.live(now):
            returned, lease.available, lease.bucket = max(lease.available, 0), 0, None
        metrics.DB_ROUND_TRIPS.labels("lease").inc()
        try:
            grant = await asyncio.wait_for(self._store.lease(
                policy.id, policy.limit, want, window, period, debt,
                (returned_bucket, returned) if returned else None), self._timeout)
        except Exception as exc:  # noqa: BLE001 - any failure leaves the lease as it was
            if returned:
                self._returns.append((policy.id, returned_bucket, -returned))
            lease.unavailable = True
            metrics.LEASE_GRANTS.labels("unavailable").inc()
            if isinstance(exc, StoreUnavailable | TimeoutError):
                self._down_until = time.monotonic() + DOWN_FOR
            else:
                log.exception("lease failed", extra={"policy_id": policy.id})
            return
        lease.unavailable = False
        lease.rtt = time.monotonic() - now
        lease.debt -= debt
        new_bucket = lease.bucket != grant.bucket_start
        if new_bucket:
            self._give_back(lease)
            lease.bucket, lease.used = grant.bucket_start, False
            lease.bucket_text = grant.bucket_start.isoformat()
        granted = grant.granted
        lease.available += granted
        # The bucket's end on this sidecar's monotonic clock, measured from before the call,
        # so the lease never outlives its bucket on the database clock.
        lease.until = now + (grant.bucket_end - grant.db_now).total_seconds()
        if new_bucket:
            # Renewed as soon as the next bucket starts on the database's clock, if calls
            # took from this one: the first call of a bucket then finds a lease, not a wait
            # for a round trip (one a bucket, as the calls would have made).
            asyncio.get_running_loop().call_later(
                max(lease.until + lease.rtt - time.monotonic(), 0.0), self._renew, lease,
                grant.bucket_start)
        lease.unleased = max(policy.limit - grant.used, 0)
        if lease.reset_time != grant.reset_time:
            lease.reset_time, lease.reset_text = grant.reset_time, grant.reset_time.isoformat()
        elapsed = now - lease.granted_at if lease.granted_at else 0.0
        if not lease.granted_at or elapsed >= RATE_INTERVAL:
            if elapsed > 0:
                lease.rate = 0.5 * lease.rate + 0.5 * lease.spent / elapsed
            lease.spent, lease.granted_at = 0, now
        lease.last_grant = granted
        if granted < want:
            lease.short_at = time.monotonic()
        lease.alerted = self._alerts.check(lease.policy, lease.alerted, grant)
        metrics.LEASE_GRANTS.labels("full" if granted == want else
                                    "partial" if granted else "empty").inc()

    async def raise_alerts(self) -> None:
        await self._alerts.raise_all()

    def _renew(self, lease: Lease, bucket: datetime) -> None:
        if self._released or lease.bucket != bucket or not lease.used \
                or self._leases.get(lease.policy.id) is not lease:
            return
        early = lease.until + lease.rtt - time.monotonic()
        if early > 0:  # a timer may fire a little early: the grant would land in this bucket
            asyncio.get_running_loop().call_later(early + 0.001, self._renew, lease, bucket)
        elif lease.refill is None:
            self._start_refill(lease)

    def _may_ask(self, lease: Lease, now: float) -> bool:
        return now >= self._down_until and (now - lease.short_at >= EMPTY_RETRY
                                            or not lease.live(now))

    def _prefetch(self, lease: Lease, now: float) -> None:
        """Refill in the background before a live lease runs dry, if the quota has more."""
        if (lease.refill is None and lease.live(now) and lease.unleased > 0
                and lease.available * 4 < lease.last_grant and self._may_ask(lease, now)):
            self._start_refill(lease)

    def _start_refill(self, lease: Lease) -> None:
        task = asyncio.ensure_future(self._refill(lease, 0))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- decisions -----------------------------------------------------------------------------

    async def take(self, checks: list[QuotaCheck], want_output: int, least_output: int,
                   db_now: datetime) -> tuple[list[QuotaOutcome], Fit, list[Part]]:
        """Take every check's amount or none; return the outcomes, what fit() allowed, and
        the parts taken (empty when denied)."""
        leases = [self._lease(c.policy) for c in checks]
        now = time.monotonic()
        amounts = [c.demand.amount(want_output) for c in checks]
        if now >= self._down_until and all(
                lease.bucket is not None and now < lease.until and lease.available >= amount
                and not lease.unavailable for lease, amount in zip(leases, amounts, strict=True)):
            return self._take_held(checks, leases, amounts, want_output, now, db_now)
        for attempt in range(ATTEMPTS):
            now = time.monotonic()
            waits = []
            for check, lease in zip(checks, leases, strict=True):
                short = check.demand.amount(want_output) - lease.room(now)
                if short > 0 and self._may_ask(lease, now):
                    waits.append(self._refill(lease, short))
            # The clock is read again only after waiting: a lease found live with room a few
            # microseconds ago must not be found expired, and empty, with nothing asked for
            # (that denied about one call in 30,000 under load). Spending it at `now` is safe:
            # a lease ends up to a round trip before its bucket does.
            if waits:
                await asyncio.gather(*waits)
                now = time.monotonic()
            down = now < self._down_until
            away = [down or lease.unavailable for lease in leases]
            rooms = [None if gone and check.policy.failure_mode == "fail_open"
                     and check.demand.amount(least_output) > lease.room(now) else lease.room(now)
                     for check, lease, gone in zip(checks, leases, away, strict=True)]
            got = fit(checks, rooms, want_output, least_output)
            allowed = all(ok for check, ok in zip(checks, got.fits, strict=True)
                          if check.policy.enforced)
            # Dry-run checks are asked again too: a grant that lands after its bucket ended
            # (a slow round trip near the end of a half-second bucket) must not make a dry-run
            # limit report a denial that enforcing it would not have made.
            if all(got.fits) or not waits or attempt == ATTEMPTS - 1:
                break
        parts, outcomes = [], []
        for i, (check, lease) in enumerate(zip(checks, leases, strict=True)):
            # Each check reports whether it passed; amounts are taken only if all enforced did.
            amount = check.demand.amount(got.max_output) if allowed and got.fits[i] else 0
            if amount:
                parts.append(self._spend(lease, rooms[i] is None, amount, now))
            outcomes.append(QuotaOutcome(
                check, got.fits[i], amount,
                None if away[i] else lease.remaining(now), db_now, lease.reset_time,
                unavailable=away[i] and not got.fits[i], binding=got.binding[i],
                reset_text=lease.reset_text))
            self._prefetch(lease, now)
        return outcomes, got, parts

    def _take_held(self, checks: list[QuotaCheck], leases: list[Lease], amounts: list[int],
                   want_output: int, now: float, db_now: datetime
                   ) -> tuple[list[QuotaOutcome], Fit, list[Part]]:
        """take() when every lease holds the whole amount at want_output (the common case):
        nothing to wait for, and fit() could only say "all of it, as asked"."""
        parts, outcomes = [], []
        for check, lease, amount in zip(checks, leases, amounts, strict=True):
            lease.spent += amount
            lease.available -= amount
            lease.used = True
            if amount:
                parts.append(Part(lease.policy.id, lease.bucket, lease.policy.metric, amount,
                                  lease.bucket_text))
            outcomes.append(QuotaOutcome(check, True, amount, lease.available + lease.unleased,
                                         db_now, lease.reset_time, reset_text=lease.reset_text))
            self._prefetch(lease, now)
        return outcomes, Fit(want_output, [True] * len(checks), [False] * len(checks)), parts

    def _spend(self, lease: Lease, owed: bool, amount: int, now: float) -> Part:
        lease.spent += amount
        lease.used = True
        if not owed:
            lease.available -= amount
            return Part(lease.policy.id, lease.bucket, lease.policy.metric, amount,
                        lease.bucket_text)
        # Fail-open beyond what is held: spend the lease, owe the rest.
        held = max(lease.room(now), 0)
        lease.available -= held
        lease.debt += amount - held
        metrics.FAIL_OPEN_ADMITS.inc()
        return Part(lease.policy.id, None, lease.policy.metric, amount)

    # -- settlement ------------------------------------------------------------------------------

    def settle(self, parts: tuple[Part, ...], actual: Mapping[str, int]) -> list[dict]:
        """Settle a reservation this sidecar made (only its maker settles a reservation): each
        part's difference from the actual amount of its metric is refunded into (or charged
        from) its lease while that lease still holds the same bucket; what is left is returned
        as adjustments of the bucket, for the usage record (applied with it, once)."""
        adjustments = []
        now = time.monotonic()
        for part in parts:
            delta = actual[part.metric] - part.amount
            if not delta or part.bucket is None:
                continue
            lease = self._leases.get(part.policy_id)
            if lease is not None and lease.live(now) and lease.bucket == part.bucket:
                local = -delta if delta < 0 else -min(delta, max(lease.available, 0))
                lease.available += local
                delta += local
            if delta:
                adjustments.append({"policy_id": part.policy_id,
                                    "bucket_start": part.bucket_text, "delta": delta})
        return adjustments

    def adjust(self, adjustments: list[dict]) -> None:
        """Send these bucket adjustments with the next round of returns."""
        self._returns += [(a["policy_id"], datetime.fromisoformat(a["bucket_start"]),
                           a["delta"]) for a in adjustments]

    # -- background ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Until cancelled: give back the allowance of ended leases and charge debts."""
        while True:
            await asyncio.sleep(RETURN_INTERVAL)
            try:
                await self.flush_returns()
                await self.raise_alerts()
                now = time.monotonic()
                for lease in list(self._leases.values()):
                    if lease.debt and lease.refill is None and self._may_ask(lease, now):
                        await self._refill(lease, 0)
            except Exception:  # noqa: BLE001 - kept for the next round
                log.warning("returning lease allowance failed; will retry", exc_info=True)

    async def flush_returns(self) -> None:
        now = time.monotonic()
        for lease in self._leases.values():
            if lease.bucket is not None and not lease.live(now):
                self._give_back(lease)
        if not self._returns:
            return
        returns, self._returns = self._returns, []
        metrics.DB_ROUND_TRIPS.labels("adjust").inc()
        try:
            await asyncio.wait_for(self._store.adjust(returns), self._timeout)
        except BaseException:
            self._returns[:0] = returns
            raise

    async def release(self) -> None:
        """At shutdown: let grants in flight land, then give back everything held."""
        grants = [lease.refill for lease in self._leases.values() if lease.refill is not None]
        if grants:
            await asyncio.wait(grants, timeout=self._timeout * 2)
        self._released = True
        for task in list(self._tasks):
            task.cancel()
        for lease in self._leases.values():
            self._give_back(lease)
        await self.flush_returns()
        await self.raise_alerts()
