"""The Admin RPCs of circuits (circuits.py): list them, force one open or closed or back to
automatic, and set its own thresholds. Mixed into AdminService."""

from __future__ import annotations

import grpc

from warden.api.convert import timestamp
from warden.api.errors import rpc
from warden.api.validate import Violations
from warden.components import Components
from warden.store.base import Row
from warden.v1 import admin_pb2

_STATES = {"closed": admin_pb2.CIRCUIT_STATE_CLOSED, "open": admin_pb2.CIRCUIT_STATE_OPEN,
           "half_open": admin_pb2.CIRCUIT_STATE_HALF_OPEN}
_MODES = {None: admin_pb2.CIRCUIT_MODE_AUTOMATIC, "open": admin_pb2.CIRCUIT_MODE_FORCED_OPEN,
          "closed": admin_pb2.CIRCUIT_MODE_FORCED_CLOSED}
_FORCED = {mode: forced for forced, mode in _MODES.items()}
_NAME = 200  # characters of a provider or model name (migrations/0010)


def circuit_to_proto(row: Row) -> admin_pb2.Circuit:
    thresholds = admin_pb2.CircuitThresholds(**{
        name: row[name] for name in admin_pb2.CircuitThresholds.DESCRIPTOR.fields_by_name
        if row[name] is not None})
    return admin_pb2.Circuit(
        provider=row["provider"], model=row["model"], state=_STATES[row["state"]],
        mode=_MODES[row["forced"]], reason=row["reason"], thresholds=thresholds,
        window_calls=row["window_calls"], window_failures=row["window_failures"],
        consecutive_failures=row["failure_run"], open_time=timestamp(row["open_time"]),
        retry_time=timestamp(row["retry_time"]), update_time=timestamp(row["update_time"]))


def _thresholds(v: Violations, t: admin_pb2.CircuitThresholds) -> dict[str, float | None]:
    has = t.HasField
    at = "thresholds."
    if has("error_rate"):
        v.check(0 < t.error_rate <= 1, at + "error_rate", "must be in (0, 1]")
    if has("min_calls"):
        v.check(t.min_calls > 0, at + "min_calls", "must be at least 1")
    if has("window_seconds"):
        v.check(1 <= t.window_seconds <= 3600, at + "window_seconds",
                "must be from 1 to 3600")
    if has("consecutive_failures"):
        v.check(t.consecutive_failures >= 0, at + "consecutive_failures",
                "must be 0 (off) or more")
    if has("cooldown_seconds"):
        v.check(0 < t.cooldown_seconds <= 86400, at + "cooldown_seconds",
                "must be more than 0 and at most 86400")
    return {name: getattr(t, name) if has(name) else None
            for name in admin_pb2.CircuitThresholds.DESCRIPTOR.fields_by_name}


class CircuitHandlers:
    _c: Components

    @rpc
    async def SetCircuit(self, request: admin_pb2.SetCircuitRequest,
                         context: grpc.aio.ServicerContext) -> admin_pb2.SetCircuitResponse:
        v = Violations()
        v.text(request.provider, "provider", _NAME)
        if v.required(request.model, "model"):
            v.text(request.model, "model", _NAME)
        v.check(request.mode in _FORCED, "mode",
                "is required: CIRCUIT_MODE_AUTOMATIC, _FORCED_OPEN or _FORCED_CLOSED")
        forced = _FORCED.get(request.mode)
        v.text(request.reason, "reason")
        v.check(forced is None or bool(request.reason), "reason",
                "is required when forcing a circuit (it is shown to every call routed past it)")
        thresholds = _thresholds(v, request.thresholds)
        v.done()
        row = await self._c.stores.circuits.set_circuit({
            "provider": request.provider, "model": request.model, "forced": forced,
            "reason": request.reason, **thresholds})
        # This sidecar routes by the change at once; the others by its notification.
        self._c.cache.invalidate("circuits", "")
        return admin_pb2.SetCircuitResponse(circuit=circuit_to_proto(row))

    @rpc
    async def ListCircuits(self, request: admin_pb2.ListCircuitsRequest,
                           context: grpc.aio.ServicerContext) -> admin_pb2.ListCircuitsResponse:
        rows = await self._c.stores.circuits.list_circuits()
        return admin_pb2.ListCircuitsResponse(circuits=[circuit_to_proto(r) for r in rows])
