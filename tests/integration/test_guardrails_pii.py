"""PII policies on a real Warden: written through Admin (a pattern RE2 cannot compile refused),
checked on Authorize's messages (block, redact, log; every script), explained in the decision
log without the matched text; through a real Envoy, ext_proc sends the upstream the redacted
body and ext_authz, which cannot rewrite it, refuses the call."""

from __future__ import annotations

import grpc
import pytest

from tests.helpers import authorize_request, expect_error, rate_limit, tenant
from tests.integration.test_envoy_mesh import chat, running
from warden.v1 import admin_pb2, types_pb2, warden_pb2

ORG = types_pb2.Scope(kind=types_pb2.SCOPE_KIND_ORG, id="acme")
APP = types_pb2.Scope(kind=types_pb2.SCOPE_KIND_APP, id="chat")
BLOCK, REDACT, LOG = (types_pb2.GUARDRAIL_ACTION_BLOCK, types_pb2.GUARDRAIL_ACTION_REDACT,
                      types_pb2.GUARDRAIL_ACTION_LOG)


async def pii_policy(client, policy_id: str, scope=APP, **config) -> None:
    await client.admin.CreatePolicy(admin_pb2.CreatePolicyRequest(policy=types_pb2.Policy(
        id=policy_id, scope=scope, pii=types_pb2.PiiConfig(**config))), metadata=client.auth)


def user(text: str) -> warden_pb2.ChatMessage:
    return warden_pb2.ChatMessage(role="user", content=text)


async def test_a_redacted_call_gets_the_messages_to_send_and_every_span(client, db, warden):
    key = await tenant(client)
    await pii_policy(client, "redact", action=REDACT, entities=["email", "phone", "national_id"],
                     patterns=[types_pb2.PiiPattern(name="employee_id", pattern=r"EMP-\d{6}")])
    await pii_policy(client, "org-log", scope=ORG, action=LOG, entities=["email"])
    text = "我是 ann@example.com 🙂, رقمي +44 20 7946 0958, badge EMP-004211, DNI 54362315K"
    reply = await client.warden.Authorize(authorize_request(
        key, "r1", messages=[warden_pb2.ChatMessage(role="system", content="Be brief."),
                             user(text)]))
    assert reply.decision == warden_pb2.DECISION_ALLOW
    assert [(r.message_index, text[r.start:r.end], r.kind, r.replacement)
            for r in reply.redactions] == [
        (1, "ann@example.com", "email", "[EMAIL]"), (1, "+44 20 7946 0958", "phone", "[PHONE]"),
        (1, "EMP-004211", "employee_id", "[EMPLOYEE_ID]"),
        (1, "54362315K", "national_id", "[NATIONAL_ID]")]
    assert [(m.role, m.content) for m in reply.redacted_messages] == [
        ("system", "Be brief."),
        ("user", "我是 [EMAIL] 🙂, رقمي [PHONE], badge [EMPLOYEE_ID], DNI [NATIONAL_ID]")]
    results = {r.policy_id: r for r in reply.results}
    assert results["org-log"].message == "found: email in message 1 at 3-18"
    assert "ann@" not in results["redact"].message

    await warden.components.flusher.flush()
    stored = await db.fetchval("SELECT attributes::text FROM audit_events"
                               " WHERE request_id = 'r1'")
    assert "email in message 1" in stored and "ann@example.com" not in stored
    assert "7946" not in stored and "EMP-004211" not in stored


async def test_a_blocked_call_is_denied_and_takes_no_quota(client):
    key = await tenant(client)
    await rate_limit(client, types_pb2.SCOPE_KIND_APP, "chat", 1, policy_id="rpm")
    await pii_policy(client, "secrets", action=LOG, entity_actions={"secret": BLOCK})
    reply = await client.warden.Authorize(authorize_request(
        key, "b1", messages=[user("use sk-proj-" + "a1B2c3D4e5" * 5 + " for it")]))
    assert (reply.decision, reply.reason) == (warden_pb2.DECISION_DENY,
                                              types_pb2.REASON_PII_DETECTED)
    (denial,) = [r for r in reply.results if not r.allowed]
    assert denial.message == "blocked: secret in message 0 at 4-62"
    assert not reply.redactions and not reply.reservation_id
    ok = await client.warden.Authorize(authorize_request(key, "b2", messages=[user("hi")]))
    assert ok.decision == warden_pb2.DECISION_ALLOW  # the limit of 1 was not spent


def pattern(name: str, text: str) -> dict:
    return {"patterns": [types_pb2.PiiPattern(name=name, pattern=text)]}


@pytest.mark.parametrize(("config", "field"), [
    (pattern("x", "(a"), "policy.pii.patterns[0].pattern"),
    (pattern("x", r"(a)\1"), "policy.pii.patterns[0].pattern"),
    (pattern("x", ""), "policy.pii.patterns[0].pattern"),
    (pattern("email", "a"), "policy.pii.patterns[0].name"),
    ({"entities": ["email", "shoe_size"]}, "policy.pii.entities[1]"),
    ({"entities": ["email"], "entity_actions": {"phone": BLOCK}}, "policy.pii.entity_actions"),
])
async def test_a_pattern_or_kind_that_cannot_run_is_refused(client, config, field):
    await tenant(client)
    error = await expect_error(client.admin.CreatePolicy(admin_pb2.CreatePolicyRequest(
        policy=types_pb2.Policy(scope=APP, pii=types_pb2.PiiConfig(action=BLOCK, **config))),
        metadata=client.auth))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and field in error.violations, \
        error.violations


async def test_a_prompt_over_the_size_limit_is_refused_clearly(client, warden):
    key = await tenant(client)
    limit = warden.settings.max_prompt_chars
    error = await expect_error(client.warden.Authorize(authorize_request(
        key, "big", messages=[user("x" * (limit // 2)), user("y" * (limit // 2 + 1))])))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "WARDEN_MAX_PROMPT_CHARS" in error.violations["messages"]


async def test_invisible_characters_and_combining_marks_neither_hide_nor_break(client):
    key = await tenant(client)
    await pii_policy(client, "redact", action=REDACT)
    text = "e\u0301\u200b mail: bob@example.org\u200d \u202eRTL\u202c card 4111-1111-1111-1111"
    reply = await client.warden.Authorize(authorize_request(key, "u1", messages=[user(text)]))
    assert [text[r.start:r.end] for r in reply.redactions] == ["bob@example.org",
                                                                "4111-1111-1111-1111"]


# --- through a real Envoy --------------------------------------------------------------------

async def test_ext_proc_sends_the_upstream_the_redacted_body(warden, client, tmp_path):
    key = await tenant(client)
    await pii_policy(client, "redact", action=REDACT, entities=["email"])
    async with running(tmp_path, warden.port, key, proc=True) as mesh:
        body = chat(messages=[{"role": "user", "content": [
            {"type": "text", "text": "write to ann@example.com"},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            {"type": "text", "text": "or to bob@example.org"}]}])
        reply = await mesh.post(body)
        assert reply.status == 200
        sent = mesh.upstream.received[0].json["messages"][0]["content"]
        assert sent == [{"type": "text", "text": "write to [EMAIL]"},
                        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                        {"type": "text", "text": "or to [EMAIL]"}]


async def test_ext_authz_refuses_a_call_it_would_have_to_redact(warden, client, tmp_path):
    key = await tenant(client)
    await pii_policy(client, "redact", action=REDACT, entities=["email"])
    async with running(tmp_path, warden.port, key, authz=True) as mesh:
        reply = await mesh.post(chat(messages=[{"role": "user", "content": "I am a@b.example"}]))
        assert reply.status == 403
        error = reply.json()["error"]
        assert error["code"] == "pii_detected" and "rewritten body" in error["message"]
        clean = await mesh.post(chat())
        assert clean.status == 200
        assert [r.json["messages"][0]["content"] for r in mesh.upstream.received] == [
            "Where is my parcel?"]
