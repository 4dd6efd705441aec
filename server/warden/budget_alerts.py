"""Budget alerts: a lease grant that finds a budget's period at or over its alert threshold
queues an audit event (action budget.alert) whose id names the policy and period, so that
whichever sidecars see the crossing, it is stored once per period (CounterStore.raise_alert).
The count includes allowance leased but not yet spent, so an alert may come a few seconds of
spending early, never late."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from warden import metrics
from warden.engine import PolicyRecord
from warden.store.base import BudgetAlert, CounterStore, Grant

log = logging.getLogger("warden.quota")


class BudgetAlerts:
    def __init__(self, store: CounterStore, timeout: float) -> None:
        self._store = store
        self._timeout = timeout
        self._queued: list[BudgetAlert] = []

    def check(self, policy: PolicyRecord, alerted: datetime | None, grant: Grant
              ) -> datetime | None:
        """Queue the budget's alert once its period's count reaches the threshold; return the
        period now alerted (`alerted`: the one this sidecar queued last)."""
        budget, period = policy.budget, grant.bucket_start
        if (budget is None or not budget.alert_threshold_percent or alerted == period
                or grant.used * 100 < budget.alert_threshold_percent * budget.limit_micros):
            return alerted
        self._queued.append(BudgetAlert(
            policy.id, f"budget-alert:{policy.id}:{period.isoformat()}", grant.db_now, {
                "policy_id": policy.id, "scope_kind": policy.scope_kind,
                "scope_id": policy.scope_id, "period": budget.period,
                "period_start": period.isoformat(), "period_end": grant.bucket_end.isoformat(),
                "threshold_percent": budget.alert_threshold_percent,
                "limit_micros": budget.limit_micros, "counted_micros": grant.used,
                "mode": policy.mode}))
        return period

    async def raise_all(self) -> None:
        """Store the queued alert events; those that fail stay queued for the next round."""
        while self._queued:
            alert = self._queued[0]
            metrics.DB_ROUND_TRIPS.labels("alert").inc()
            stored = await asyncio.wait_for(self._store.raise_alert(alert), self._timeout)
            self._queued.pop(0)
            if stored:  # not already stored by another sidecar
                metrics.BUDGET_ALERTS.inc()
                log.warning("budget alert threshold reached", extra={
                    k: alert.attributes[k] for k in ("policy_id", "period_start",
                                                     "threshold_percent", "counted_micros",
                                                     "limit_micros")})
