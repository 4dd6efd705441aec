"""Sidecars whose clocks disagree by hours still share one limit exactly and log the database's
time: windows are placed by the database clock, leases end by the monotonic clock, and
reservations expire by the database clock. The skewed sidecar runs under libfaketime
(Debian package `faketime`); without it the test is skipped, saying why."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime, timedelta

import pytest

from tests.helpers import authorize_request, tenant
from warden.v1 import admin_pb2, types_pb2, warden_pb2

# The library itself: the `faketime` command runs its program as a child, so a signal sent to
# it would not reach the sidecar.
LIBFAKETIME = next((p for p in ("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
                                "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1")
                    if os.path.exists(p)), None)
LIMIT = 60


def _log_clock_offset(sidecar) -> timedelta:
    """How far the sidecar's own clock is from ours, read off its first log line."""
    first = json.loads(sidecar.log_path.read_text().splitlines()[0])
    return datetime.fromisoformat(first["time"].replace("Z", "+00:00")) - datetime.now(UTC)


def _skewed(skew: str) -> dict[str, str]:
    return {"LD_PRELOAD": LIBFAKETIME, "FAKETIME": skew, "FAKETIME_DONT_RESET": "1",
            "WARDEN_CACHE_TTL_SECONDS": "0"}


@pytest.mark.skipif(LIBFAKETIME is None, reason="needs libfaketime: apt-get install faketime")
async def test_skewed_sidecars_share_a_minute_limit_and_log_database_time(db_url, db, fleet):
    ahead, behind = await asyncio.gather(fleet.start("ahead", db_url, **_skewed("+3h")),
                                         fleet.start("behind", db_url, **_skewed("-3h")))
    # The skew is real: each sidecar logs by its own clock.
    assert abs(_log_clock_offset(ahead) - timedelta(hours=3)) < timedelta(minutes=5)
    assert abs(_log_clock_offset(behind) + timedelta(hours=3)) < timedelta(minutes=5)
    key = await tenant(ahead.client)
    await ahead.client.admin.CreatePolicy(admin_pb2.CreatePolicyRequest(policy=types_pb2.Policy(
        id="rpm", scope=types_pb2.Scope(kind=types_pb2.SCOPE_KIND_APP, id="chat"),
        rate_limit=types_pb2.RateLimitConfig(metric=types_pb2.METRIC_REQUESTS,
                                             window=types_pb2.WINDOW_MINUTE, limit=LIMIT))),
        metadata=ahead.client.auth)
    # A minute window is the most sensitive to skew: a sidecar placing its buckets by its own
    # clock would count in windows six hours apart and admit twice the limit.
    calls = [(ahead if i % 2 else behind).warden.Authorize(authorize_request(key, f"r{i}"))
             for i in range(3 * LIMIT)]
    replies = await asyncio.gather(*calls)
    allowed = sum(r.decision == warden_pb2.DECISION_ALLOW for r in replies)
    # Never more than the limit: sidecars counting by their own clocks would admit up to
    # twice it. Nearly all of it: a skew that ended leases early would strand most of it. A
    # burst of 180 calls on a loaded machine can leave a few units in one sidecar's lease
    # while the other's last calls are denied (bench/settlement.py measures how much of a
    # limit sidecars use: 0.994).
    assert LIMIT * 0.85 <= allowed <= LIMIT
    await fleet.stop_all_cleanly([ahead, behind])
    # Both journals are applied at shutdown, with database time, whatever each clock said.
    rows = await db.fetch("SELECT create_time, expire_time, decision FROM requests")
    assert len(rows) == 3 * LIMIT
    assert sum(r["decision"] == "allow" for r in rows) == allowed
    db_now = await db.fetchval("SELECT now()")
    for row in rows:
        assert abs(row["create_time"] - db_now) < timedelta(minutes=2)
        if row["expire_time"] is not None:
            assert row["expire_time"] - row["create_time"] == timedelta(seconds=600)
    assert await db.fetchval("SELECT sum(granted) FROM quota_buckets") <= LIMIT
