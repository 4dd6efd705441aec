"""rag_sources policies on a real Warden: the sources a call names (AuthorizeRequest.rag_sources,
or through Envoy the x-warden-rag-sources header) allowed or refused by every policy of the
chain, restrict-only; bad lists refused with the field named."""

from __future__ import annotations

import json

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc

from tests.helpers import authorize_request, expect_error, tenant
from tests.integration.test_envoy_check import body, check_request
from warden.v1 import admin_pb2, types_pb2, warden_pb2

ORG = types_pb2.Scope(kind=types_pb2.SCOPE_KIND_ORG, id="acme")
APP = types_pb2.Scope(kind=types_pb2.SCOPE_KIND_APP, id="chat")
BLOCK = types_pb2.GUARDRAIL_ACTION_BLOCK


async def sources_policy(client, policy_id: str, scope, **config) -> None:
    await client.admin.CreatePolicy(admin_pb2.CreatePolicyRequest(policy=types_pb2.Policy(
        id=policy_id, scope=scope, rag_sources=types_pb2.RagSourcesConfig(**config))),
        metadata=client.auth)


async def test_a_child_scope_narrows_the_sources_and_cannot_widen_them(client):
    key = await tenant(client)
    await sources_policy(client, "org", ORG, action=BLOCK, allowed_sources=["kb-*"])
    await sources_policy(client, "app", APP, action=BLOCK, allowed_sources=["kb-*", "wiki"],
                         denied_sources=["kb-hr"])
    ok = await client.warden.Authorize(authorize_request(key, "s1", rag_sources=["kb-sales"]))
    assert ok.decision == warden_pb2.DECISION_ALLOW
    for rid, source, policy in (("s2", "kb-hr", "app"), ("s3", "wiki", "org")):
        denied = await client.warden.Authorize(authorize_request(key, rid, rag_sources=[source]))
        assert (denied.decision, denied.reason) == (warden_pb2.DECISION_DENY,
                                                    types_pb2.REASON_RAG_SOURCE_NOT_ALLOWED)
        assert [r.policy_id for r in denied.results if not r.allowed] == [policy]
    none = await client.warden.Authorize(authorize_request(key, "s4"))
    assert none.decision == warden_pb2.DECISION_ALLOW  # a call that names no source


@pytest.mark.parametrize(("config", "field"), [
    ({"action": BLOCK}, "policy.rag_sources"),
    ({"action": types_pb2.GUARDRAIL_ACTION_REDACT, "allowed_sources": ["a"]},
     "policy.rag_sources.action"),
    ({"action": BLOCK, "denied_sources": ["a", "a"]}, "policy.rag_sources.denied_sources[1]"),
])
async def test_a_policy_that_cannot_apply_is_refused(client, config, field):
    await tenant(client)
    error = await expect_error(client.admin.CreatePolicy(admin_pb2.CreatePolicyRequest(
        policy=types_pb2.Policy(scope=APP, rag_sources=types_pb2.RagSourcesConfig(**config))),
        metadata=client.auth))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and field in error.violations


async def test_sources_a_call_names_are_checked(client):
    key = await tenant(client)
    error = await expect_error(client.warden.Authorize(authorize_request(
        key, "bad", rag_sources=["ok", ""])))
    assert "rag_sources[1]" in error.violations


async def test_through_envoy_the_sources_come_in_a_header(client):
    key = await tenant(client)
    await sources_policy(client, "app", APP, action=BLOCK, denied_sources=["kb-hr"])
    check = external_auth_pb2_grpc.AuthorizationStub(client.channel).Check
    headers = {"authorization": f"Bearer {key}", "x-request-id": "e1",
               "x-warden-rag-sources": "kb-sales, kb-hr"}
    answer = await check(check_request(headers, body()))
    assert answer.denied_response.status.code == 403
    error = json.loads(answer.denied_response.body)["error"]
    assert error["code"] == "rag_source_not_allowed" and "kb-hr" in error["message"]
    headers.update({"x-request-id": "e2", "x-warden-rag-sources": "kb-sales"})
    answer = await check(check_request(headers, body()))
    assert answer.status.code == 0
    assert "x-warden-rag-sources" in answer.ok_response.headers_to_remove
