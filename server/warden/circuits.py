"""Circuit breaking from what Warden sees: each settled call's outcome (RecordUsage, ext_proc)
is tallied per provider and model here and reported to the shared circuits every
REPORT_SECONDS; the database opens a circuit when its error rate over the window
(with enough calls) or its run of failures reaches its threshold (migrations/0010_circuits.sql),
and the change feed tells every sidecar at once, whose compiled sets then route past it
(engine/compiled.py).

A call that finds every preferred target's circuit open, with its cool-down over, makes this
sidecar try to claim the probe (in the background; the call itself goes to a fallback or is
refused). The one sidecar that wins lets one call through to the circuit: the next such call
here takes the set that uses it (`route`). The first outcome reported for the circuit after
that closes it or opens it again; a probe whose outcome never comes is given up after
WARDEN_CIRCUIT_PROBE_SECONDS and may be claimed again.

Only completed and failed calls count (a cancelled call says nothing of the provider). Outcomes
not yet reported when the sidecar stops or the database is away are not kept: a circuit is a
signal about the last seconds, not an account.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime

from warden import metrics
from warden.engine import CompiledSet
from warden.errors import StoreUnavailable
from warden.store.base import CircuitDefaults, CircuitStore, Tally

log = logging.getLogger("warden.circuits")

Key = tuple[str, str]
# How often outcomes are reported: a quarter of the second in which every sidecar must agree.
REPORT_SECONDS = 0.25


class Circuits:
    def __init__(self, store: CircuitStore, sidecar_id: str, clock: Callable[[], datetime],
                 defaults: CircuitDefaults, probe_seconds: float) -> None:
        self._store = store
        self._owner = sidecar_id
        self._clock = clock
        self._defaults = defaults
        self._probe_seconds = probe_seconds
        self._tallies: dict[Key, Tally] = {}
        self._probes: dict[Key, float] = {}  # probes held here, unspent: monotonic deadline
        self._claims: set[Key] = set()  # claims in flight
        self._tasks: set[asyncio.Task] = set()

    def observe(self, provider: str, model: str, outcome: str) -> None:
        """One settled call of the circuit (provider, model)."""
        if outcome not in ("completed", "failed"):
            return
        failed = outcome == "failed"
        key = (provider, model)
        tally = self._tallies.get(key)
        if tally is None:
            tally = self._tallies[key] = Tally(provider, model)
        tally.calls += 1
        if failed:
            tally.failures += 1
            tally.trailing += 1
        else:
            tally.trailing = 0
            tally.succeeded = True

    def route(self, compiled: CompiledSet) -> tuple[CompiledSet, Key | None]:
        """The set a call of `compiled` (which carries a probe) decides by, and the circuit
        whose probe it spends, if any: give that back (`unspent`) if the call is denied."""
        probe = compiled.probe
        assert probe is not None
        key = probe.circuit.key
        deadline = self._probes.pop(key, None)
        if deadline is not None and time.monotonic() < deadline:
            return probe.compiled, key
        due = probe.circuit.retry_time
        if (due is None or self._clock() >= due) and key not in self._claims:
            self._claims.add(key)
            task = asyncio.create_task(self._claim(key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return compiled, None

    def unspent(self, key: Key) -> None:
        """A call that took the probe of `key` was denied for another reason: keep it."""
        self._probes[key] = time.monotonic() + self._probe_seconds

    async def _claim(self, key: Key) -> None:
        try:
            if await self._store.claim_probe(*key, self._owner, self._probe_seconds):
                self._probes[key] = time.monotonic() + self._probe_seconds
                metrics.CIRCUIT_PROBES.inc()
        except StoreUnavailable:
            pass  # the next call asks again
        finally:
            self._claims.discard(key)

    async def report(self) -> None:
        """Report the tallies since the last report (dropped if the database is away)."""
        tallies, self._tallies = list(self._tallies.values()), {}
        if not tallies:
            return
        try:
            moved = await self._store.report(tallies, self._defaults)
        except StoreUnavailable:
            metrics.CIRCUIT_REPORTS.labels("dropped").inc()
            return
        metrics.CIRCUIT_REPORTS.labels("reported").inc()
        for (provider, model), state in moved.items():
            metrics.CIRCUIT_TRANSITIONS.labels(state).inc()
            log.warning(f"circuit {state}", extra={"provider": provider, "model": model})

    async def run(self) -> None:
        while True:
            await asyncio.sleep(REPORT_SECONDS)
            try:
                await self.report()
            except Exception:  # noqa: BLE001 - the next round reports again
                log.exception("circuit report failed")
