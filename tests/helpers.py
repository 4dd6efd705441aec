"""Small helpers for integration tests: set up a tenant through the Admin API, read rich errors,
wait for a condition."""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
from google.rpc import error_details_pb2, status_pb2

from warden.v1 import admin_pb2, types_pb2, warden_pb2


@dataclass
class RichError:
    code: grpc.StatusCode
    message: str
    reason: str
    violations: dict[str, str]
    retry_seconds: float | None


def rich_error(exc: grpc.aio.AioRpcError) -> RichError:
    metadata = dict(exc.trailing_metadata() or ())
    status = status_pb2.Status.FromString(metadata["grpc-status-details-bin"])
    assert status.code == exc.code().value[0] and status.message == exc.details()
    reason, violations, retry = "", {}, None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            assert info.domain == "warden.v1"
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = {v.field: v.description for v in bad.field_violations}
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            retry = info.retry_delay.ToTimedelta().total_seconds()
    return RichError(exc.code(), exc.details(), reason, violations, retry)


async def expect_error(call) -> RichError:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return rich_error(exc)
    raise AssertionError("expected the call to fail")


async def tenant(client, org: str = "acme", app: str = "chat", **key_args) -> str:
    """Create an org, an app and a key through Admin; return the key's plaintext."""
    await client.admin.CreateOrg(admin_pb2.CreateOrgRequest(org=admin_pb2.Org(id=org)),
                                 metadata=client.auth)
    await client.admin.CreateApp(admin_pb2.CreateAppRequest(
        app=admin_pb2.App(id=app, org_id=org)), metadata=client.auth)
    return await new_key(client, app, **key_args)


async def new_key(client, app: str, **key_args) -> str:
    reply = await client.admin.CreateApiKey(
        admin_pb2.CreateApiKeyRequest(app_id=app, **key_args), metadata=client.auth)
    return reply.plaintext


async def rate_limit(client, kind: int, scope_id: str, limit: int, policy_id: str = "",
                     mode: int = types_pb2.POLICY_MODE_ENFORCE,
                     models: tuple[str, ...] = ()) -> types_pb2.Policy:
    """Requests per minute at a scope (for some models only, when given)."""
    reply = await client.admin.CreatePolicy(admin_pb2.CreatePolicyRequest(policy=types_pb2.Policy(
        id=policy_id, scope=types_pb2.Scope(kind=kind, id=scope_id), mode=mode,
        rate_limit=types_pb2.RateLimitConfig(
            metric=types_pb2.METRIC_REQUESTS, window=types_pb2.WINDOW_MINUTE, limit=limit,
            selector=types_pb2.Selector(models=models) if models else None))),
        metadata=client.auth)
    return reply.policy


def closed_port() -> int:
    """A local port nothing listens on (bound and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def authorize_request(key: str, request_id: str, model: str = "gpt-4o-mini",
                      **fields) -> warden_pb2.AuthorizeRequest:
    return warden_pb2.AuthorizeRequest(request_id=request_id, api_key=key, model=model, **fields)


async def until(predicate, within: float = 1.0, step: float = 0.01) -> float:
    """Seconds until `predicate()` (a coroutine function) is true; fails after `within` seconds."""
    start = time.monotonic()
    while not await predicate():
        assert time.monotonic() - start < within, "not within the time limit"
        await asyncio.sleep(step)
    return time.monotonic() - start


async def clear_of_utc_midnight(margin: float = 90.0) -> None:
    """A daily budget counts one UTC calendar day: don't let a test straddle two."""
    now = datetime.now(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    left = (midnight - now).total_seconds()
    if left < margin:
        await asyncio.sleep(left + 1.0)
