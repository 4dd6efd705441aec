"""The Python client (clients/python) against a live sidecar on a real port and a real
Postgres: authorize, record usage, audit, guards that record whatever happens, typed errors
from the rich details, fail-open and fail-closed; and, against small gRPC servers of the
test's own on real ports, a deadline that expires, enum values from a newer server and a
denial that carries no details."""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc
import pytest

import warden_client
import warden_client.openai as wrapper
from tests.helpers import closed_port, rate_limit, tenant
from warden.v1 import admin_pb2, types_pb2
from warden_client import (
    AsyncWardenClient,
    WardenClient,
    WardenDeadlineExceeded,
    WardenDenied,
    WardenInvalidArgument,
    WardenPermissionDenied,
    WardenUnauthenticated,
    WardenUnavailable,
)
from warden_client.v1 import warden_pb2, warden_pb2_grpc

MESSAGES = [{"role": "user", "content": "Where is my parcel?"}]


async def _usage(warden, db, request_id: str):
    await warden.components.flusher.flush()
    return await db.fetchrow("SELECT * FROM usage WHERE request_id = $1", request_id)


def test_the_public_exports_are_pinned() -> None:
    assert sorted(warden_client.__all__) == [
        "AsyncGuard", "AsyncWardenClient", "Decision", "Guard", "WardenClient",
        "WardenDeadlineExceeded", "WardenDenied", "WardenError", "WardenInvalidArgument",
        "WardenPermissionDenied", "WardenUnauthenticated", "WardenUnavailable"]
    for name in warden_client.__all__:
        assert getattr(warden_client, name) is not None
    assert sorted(wrapper.__all__) == ["Wrapped", "wrap"]


async def test_authorize_record_usage_and_audit(warden, client, db) -> None:
    key = await tenant(client)
    async with AsyncWardenClient(warden.target, api_key=key) as w:
        decision = await w.authorize("gpt-4o-mini", messages=MESSAGES, max_output_tokens=200)
        assert decision.allowed and decision.reason == "ALLOWED" and not decision.fail_open
        assert (decision.model, decision.max_output_tokens) == ("gpt-4o-mini", 200)
        assert decision.reservation_id and len(decision.request_id) == 32
        reply = await w.record_usage(decision.request_id, input_tokens=12, output_tokens=30,
                                     latency=0.25, reservation_id=decision.reservation_id)
        assert not reply.duplicate
        again = await w.record_usage(decision.request_id, input_tokens=12, output_tokens=30,
                                     latency=0.25)
        assert again.duplicate
        ids = await w.audit([{"action": "llm.call", "request_id": decision.request_id,
                              "attributes": {"tool": "search"}, "time": time.time()},
                             warden_pb2.AuditEvent(event_id="e-2", action="tool.call")])
        assert len(ids) == 2 and ids[1] == "e-2"
    row = await _usage(warden, db, decision.request_id)
    assert (row["input_tokens"], row["output_tokens"], row["outcome"], row["latency_ms"]) == (
        12, 30, "completed", 250)


async def test_a_guard_records_every_ending(warden, client, db) -> None:
    key = await tenant(client)
    w = WardenClient(warden.target, api_key=key)

    def completed() -> str:
        with w.guard("gpt-4o-mini", messages=MESSAGES) as call:
            call.used(40, 7)
            return call.decision.request_id

    def failed() -> str:
        with pytest.raises(RuntimeError), w.guard("gpt-4o-mini") as call:
            seen.append(call.decision.request_id)
            call.used(40, 0)
            raise RuntimeError("the provider answered 500")
        return seen[-1]

    def interrupted() -> str:
        with pytest.raises(KeyboardInterrupt), w.guard("gpt-4o-mini") as call:
            seen.append(call.decision.request_id)
            call.used(40, 3)
            raise KeyboardInterrupt
        return seen[-1]

    seen: list[str] = []
    try:
        ids = [await asyncio.to_thread(f) for f in (completed, failed, interrupted)]
    finally:
        w.close()
    rows = [await _usage(warden, db, i) for i in ids]
    assert [(r["outcome"], r["input_tokens"], r["output_tokens"]) for r in rows] == [
        ("completed", 40, 7), ("failed", 40, 0), ("cancelled", 40, 3)]


async def test_an_async_guard_records_a_cancelled_task(warden, client, db) -> None:
    key = await tenant(client)
    started = asyncio.Event()
    request_ids = []
    async with AsyncWardenClient(warden.target, api_key=key) as w:
        async def llm_call() -> None:
            async with w.guard("gpt-4o-mini", messages=MESSAGES) as call:
                request_ids.append(call.decision.request_id)
                call.used(25, 2)
                started.set()
                await asyncio.sleep(30)

        task = asyncio.create_task(llm_call())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    row = await _usage(warden, db, request_ids[0])
    assert (row["outcome"], row["output_tokens"]) == ("cancelled", 2)


async def test_a_guard_sends_the_redacted_messages(warden, client) -> None:
    key = await tenant(client)
    await client.admin.CreatePolicy(admin_pb2.CreatePolicyRequest(policy=types_pb2.Policy(
        id="redact", scope=types_pb2.Scope(kind=types_pb2.SCOPE_KIND_APP, id="chat"),
        pii=types_pb2.PiiConfig(action=types_pb2.GUARDRAIL_ACTION_REDACT))),
        metadata=client.auth)
    async with AsyncWardenClient(warden.target, api_key=key) as w:
        async with w.guard("gpt-4o-mini", messages=[
                {"role": "user", "content": "mail ann@example.com"}]) as call:
            assert call.messages == [{"role": "user", "content": "mail [EMAIL]"}]


async def test_a_denial_raises_from_guards_and_is_answered_by_authorize(warden, client) -> None:
    key = await tenant(client)
    await rate_limit(client, types_pb2.SCOPE_KIND_APP, "chat", 1, policy_id="rpm")
    async with AsyncWardenClient(warden.target, api_key=key) as w:
        assert (await w.authorize("gpt-4o-mini")).allowed
        denied = await w.authorize("gpt-4o-mini")
        assert not denied.allowed and denied.reason == "RATE_LIMITED"
        assert denied.retry_after and "1 requests per minute" in denied.message
        with pytest.raises(WardenDenied) as raised:
            async with w.guard("gpt-4o-mini"):
                raise AssertionError("the block of a denied call must not run")
        assert raised.value.reason == "RATE_LIMITED" and raised.value.retry_after


async def test_errors_carry_the_rich_details(warden, client) -> None:
    key = await tenant(client)
    async with AsyncWardenClient(warden.target, api_key=key) as w:
        with pytest.raises(WardenInvalidArgument) as bad:
            await w.authorize("gpt-4o-mini", request_id="not a valid id!")
        assert "request_id" in bad.value.violations and bad.value.reason == "INVALID_ARGUMENT"
    async with AsyncWardenClient(warden.target, api_key="wk_000000000000_" + "x" * 43) as w:
        with pytest.raises(WardenUnauthenticated) as unknown:
            await w.authorize("gpt-4o-mini")
        assert unknown.value.reason == "API_KEY_INVALID"


async def test_a_sidecar_that_is_down_fails_closed_or_open_and_never_hangs() -> None:
    address = f"127.0.0.1:{closed_port()}"
    started = time.monotonic()
    async with AsyncWardenClient(address, api_key="k", timeout=1.0) as w:
        with pytest.raises(WardenUnavailable):
            await w.authorize("gpt-4o-mini")
    async with AsyncWardenClient(address, api_key="k", timeout=1.0,
                                 on_unavailable="fail_open") as w:
        decision = await w.authorize("gpt-4o-mini", max_output_tokens=64)
        assert decision.allowed and decision.fail_open and decision.max_output_tokens == 64
        async with w.guard("gpt-4o-mini") as call:  # runs, and records nothing
            assert call.decision.fail_open
        assert w.fail_open_count == 2
    with WardenClient("unix:/nonexistent/warden.sock", timeout=1.0) as w:
        with pytest.raises(WardenUnavailable):
            await asyncio.to_thread(w.authorize, "gpt-4o-mini")
    assert time.monotonic() - started < 10
    with pytest.raises(ValueError, match="host:port"):
        WardenClient("nonsense")
    with pytest.raises(ValueError):
        WardenClient("127.0.0.1:1", on_unavailable="maybe")  # type: ignore[arg-type]


class _Odd(warden_pb2_grpc.WardenServicer):
    """A server of the test's own: slow, newer, or refusing without details."""

    async def Authorize(self, request, context):
        if request.model == "slow":
            await asyncio.sleep(5)
        if request.model == "refuse":
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "no")
        return warden_pb2.AuthorizeResponse(decision=7, reason=999)


@pytest.fixture
async def odd_server():
    server = grpc.aio.server()
    warden_pb2_grpc.add_WardenServicer_to_server(_Odd(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(0)


async def test_deadlines_newer_enums_and_bare_refusals(odd_server) -> None:
    async with AsyncWardenClient(odd_server, api_key="k") as w:
        started = time.monotonic()
        with pytest.raises(WardenDeadlineExceeded):
            await w.authorize("slow", timeout=0.2)
        assert time.monotonic() - started < 2
        newer = await w.authorize("new", request_id=f"r-{uuid.uuid4().hex}")
        assert not newer.allowed and newer.reason == "UNKNOWN_999"
        with pytest.raises(WardenPermissionDenied) as bare:
            await w.authorize("refuse")
        assert bare.value.reason == "" and bare.value.violations == {}
