"""A policy change that spans several scopes (one Apply) while calls are in flight: every
answer decides by one version of the policies or the other, never by a mix of the two. The
calls go to a second sidecar, which learns of the change only from the change feed, one
notification per changed row."""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc
from google.protobuf import json_format

from tests.conftest import Client, settings_for
from tests.helpers import authorize_request, new_key
from warden.app import App
from warden.v1 import admin_pb2


def version(alias_to: str, cap: int) -> admin_pb2.ApplyRequest:
    return json_format.ParseDict({
        "orgs": [{"id": "acme"}],
        "teams": [{"id": "core", "org_id": "acme"}],
        "apps": [{"id": "chat", "org_id": "acme", "team_id": "core"}],
        "policies": [
            {"id": "models", "scope": {"kind": "SCOPE_KIND_ORG", "id": "acme"},
             "model_access": {"aliases": {"chat": alias_to}}},
            {"id": "cap", "scope": {"kind": "SCOPE_KIND_TEAM", "id": "core"},
             "routing": {"max_tokens_cap": cap}},
        ]}, admin_pb2.ApplyRequest())


VERSIONS = {("gpt-4o-mini", 100): version("gpt-4o-mini", 100),
            ("gpt-4o", 200): version("gpt-4o", 200)}


async def test_a_change_under_load_never_mixes_versions(client, db_url, tmp_path):
    await client.admin.Apply(VERSIONS[("gpt-4o-mini", 100)], metadata=client.auth)
    key = await new_key(client, "chat")
    other = App(settings_for(db_url, str(tmp_path / "b")))
    await other.start()
    seen: Counter = Counter()
    done = asyncio.Event()
    try:
        async with grpc.aio.insecure_channel(other.target) as channel:
            b = Client(channel)

            async def load(worker: int) -> None:
                i = 0
                while not done.is_set():
                    i += 1
                    reply = await b.warden.Authorize(authorize_request(
                        key, f"w{worker}-{i}", model="chat", max_output_tokens=1000))
                    seen[(reply.route.model, reply.route.max_output_tokens)] += 1

            async def flip() -> None:
                for n in range(12):
                    await asyncio.sleep(0.15)
                    wanted = list(VERSIONS)[(n + 1) % 2]
                    await client.admin.Apply(VERSIONS[wanted], metadata=client.auth)
                await asyncio.sleep(0.3)
                done.set()

            await asyncio.gather(flip(), *(load(w) for w in range(8)))
    finally:
        await other.stop()
    print(f"\nanswers by version: {dict(seen)}")
    assert set(seen) <= set(VERSIONS), f"mixed answers: {set(seen) - set(VERSIONS)}"
    assert all(seen[v] > 0 for v in VERSIONS)
