"""AuditSink: every Admin call refused for its credentials is recorded, one row per call, with
what was tried, from where, why, and when. Operators look for credential guessing here, so
repeats must all be kept and the record must be durable as soon as the call returns."""

from __future__ import annotations

import asyncio


async def test_a_refusal_is_recorded_with_method_peer_reason_and_time(audit_sink, seed):
    before = await seed.now()
    await audit_sink.admin_refused("/warden.v1.Admin/CreateOrg", "ipv4:10.0.0.7:51234",
                                   "wrong token")
    after = await seed.now()
    [row] = await seed.admin_refusals()
    assert (row["method"], row["peer"], row["reason"]) == (
        "/warden.v1.Admin/CreateOrg", "ipv4:10.0.0.7:51234", "wrong token")
    assert before <= row["time"] <= after


async def test_repeated_refusals_are_each_kept_in_order(audit_sink, seed):
    calls = [("/warden.v1.Admin/ListOrgs", "ipv6:[::1]:40000", "missing token")] * 3 + [
        ("/warden.v1.Admin/Apply", "unix:/run/warden.sock", "wrong token")]
    for call in calls:
        await audit_sink.admin_refused(*call)
    rows = await seed.admin_refusals()
    assert [(r["method"], r["peer"], r["reason"]) for r in rows] == calls
    assert [r["time"] for r in rows] == sorted(r["time"] for r in rows)


async def test_concurrent_refusals_are_all_recorded(audit_sink, seed):
    """A burst of bad calls arrives at once; none may be lost."""
    await asyncio.gather(*(audit_sink.admin_refused("/warden.v1.Admin/GetOrg", f"ipv4:10.0.0.{i}:1",
                                                    "wrong token") for i in range(20)))
    assert sorted(r["peer"] for r in await seed.admin_refusals()) == sorted(
        f"ipv4:10.0.0.{i}:1" for i in range(20))


async def test_peer_and_reason_are_stored_verbatim(audit_sink, seed):
    """Peers and methods come from the client: quotes, non-ASCII and long values must be
    stored as sent, not cut or rejected."""
    peer = "ipv4:10.0.0.1:1 'quoted' \"and\" ünïcödé " + "x" * 2000
    await audit_sink.admin_refused("/warden.v1.Admin/Nope'; DROP TABLE orgs; --", peer, "bad")
    [row] = await seed.admin_refusals()
    assert (row["method"], row["peer"]) == ("/warden.v1.Admin/Nope'; DROP TABLE orgs; --", peer)
