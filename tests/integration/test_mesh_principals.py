"""Workload identities: an app registered with principals (Admin, Apply) is the caller of a mesh
request Envoy reports with that source.principal, without an API key, when Envoy is a trusted
peer (here the subject socket); over plain TCP the claim is not used. Through a real Envoy with
mTLS: test_envoy_mesh.py."""

from __future__ import annotations

import json

import grpc
import pytest
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc
from google.protobuf import struct_pb2
from google.rpc import code_pb2

from tests.conftest import Client, settings_for
from tests.helpers import expect_error, until
from tests.integration.test_envoy_check import body, check_request
from tests.integration.test_envoy_proc import Exchange, headers
from warden.app import App
from warden.v1 import admin_pb2

SPIFFE = "spiffe://cluster.local/ns/shop/sa/chat"


@pytest.fixture
async def sidecar(db_url, tmp_path):
    """A Warden with a subject socket: (TCP client, client on the socket)."""
    socket = f"unix:{tmp_path}/trusted.sock"
    app = App(settings_for(db_url, str(tmp_path), subject_socket=socket))
    await app.start()
    try:
        async with grpc.aio.insecure_channel(app.target) as tcp, \
                grpc.aio.insecure_channel(socket) as unix:
            yield Client(tcp), Client(unix)
    finally:
        await app.stop()


async def org_and_app(client, principals=(SPIFFE,), app_id: str = "chat") -> admin_pb2.App:
    await client.admin.CreateOrg(admin_pb2.CreateOrgRequest(org=admin_pb2.Org(id="acme")),
                                 metadata=client.auth)
    reply = await client.admin.CreateApp(admin_pb2.CreateAppRequest(app=admin_pb2.App(
        id=app_id, org_id="acme", principals=principals)), metadata=client.auth)
    return reply.app


def from_principal(principal: str, rid: str = "p1") -> external_auth_pb2.CheckRequest:
    request = check_request({"x-request-id": rid}, body())
    request.attributes.source.CopyFrom(attribute_context_pb2.AttributeContext.Peer(
        principal=principal))
    return request


async def test_a_registered_principal_names_the_app_on_a_trusted_connection(sidecar):
    tcp, unix = sidecar
    app = await org_and_app(tcp, principals=[SPIFFE, "spiffe://cluster.local/ns/shop/sa/a"])
    assert list(app.principals) == ["spiffe://cluster.local/ns/shop/sa/a", SPIFFE]
    listed = await tcp.admin.ListApps(admin_pb2.ListAppsRequest(org_id="acme"),
                                      metadata=tcp.auth)
    assert list(listed.apps[0].principals) == list(app.principals)

    answer = await external_auth_pb2_grpc.AuthorizationStub(unix.channel).Check(
        from_principal(SPIFFE))
    assert answer.status.code == code_pb2.OK
    assert answer.dynamic_metadata.fields["app_id"].string_value == "chat"

    # The same claim over TCP is not used: whoever reaches the port could make it.
    answer = await external_auth_pb2_grpc.AuthorizationStub(tcp.channel).Check(
        from_principal(SPIFFE, "p2"))
    assert answer.denied_response.status.code == 401
    message = json.loads(answer.denied_response.body)["error"]["message"]
    assert SPIFFE in message and "WARDEN_SUBJECT_SOCKET" in message


async def test_an_unknown_principal_is_401_naming_it(sidecar):
    tcp, unix = sidecar
    await org_and_app(tcp)
    answer = await external_auth_pb2_grpc.AuthorizationStub(unix.channel).Check(
        from_principal("spiffe://cluster.local/ns/shop/sa/nobody"))
    assert answer.status.code == code_pb2.UNAUTHENTICATED
    error = json.loads(answer.denied_response.body)["error"]
    assert error["code"] == "invalid_api_key"  # what OpenAI SDKs expect of a 401
    assert "no app is registered" in error["message"] and "sa/nobody" in error["message"]


async def test_ext_proc_takes_the_principal_from_the_request_attributes(sidecar):
    tcp, unix = sidecar
    await org_and_app(tcp)
    exchange = Exchange(external_processor_pb2_grpc.ExternalProcessorStub(unix.channel))
    attributes = struct_pb2.Struct()
    attributes.update({"connection.uri_san_peer_certificate": SPIFFE,
                       "connection.subject_peer_certificate": "CN=chat"})
    try:
        answer = await exchange.send(
            request_headers=headers({":method": "POST", ":path": "/v1/chat/completions",
                                     "x-request-id": "p3"}),
            attributes={"envoy.filters.http.ext_proc": attributes})
        assert answer.WhichOneof("response") == "request_headers"
        answer = await exchange.send(request_body={"body": body(), "end_of_stream": True})
        assert answer.WhichOneof("response") == "request_body"
        upstream = {h.header.key: h.header.raw_value.decode()
                    for h in answer.request_body.response.header_mutation.set_headers}
        assert upstream["x-warden-request-id"] == "p3"
    finally:
        exchange.call.cancel()


async def test_principals_are_checked_and_one_names_one_app(sidecar):
    tcp, _ = sidecar
    await org_and_app(tcp)
    for bad, where in (([" spiffe://x"], "app.principals[0]"), (["a", "a"], "app.principals[1]"),
                       (["x" * 2049], "app.principals[0]"), (["a\nb"], "app.principals[0]")):
        error = await expect_error(tcp.admin.CreateApp(admin_pb2.CreateAppRequest(
            app=admin_pb2.App(id="other", org_id="acme", principals=bad)), metadata=tcp.auth))
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT and where in error.violations
    error = await expect_error(tcp.admin.CreateApp(admin_pb2.CreateAppRequest(
        app=admin_pb2.App(id="other", org_id="acme", principals=[SPIFFE])), metadata=tcp.auth))
    assert error.code == grpc.StatusCode.ALREADY_EXISTS and "'chat'" in error.message
    listed = await tcp.admin.ListApps(admin_pb2.ListAppsRequest(org_id="acme"),
                                      metadata=tcp.auth)
    assert [a.id for a in listed.apps] == ["chat"]  # nothing half-written


async def test_apply_moves_a_principal_between_apps_and_sidecars_see_it(sidecar):
    tcp, unix = sidecar
    check = external_auth_pb2_grpc.AuthorizationStub(unix.channel).Check

    def declaration(chat: list[str], batch: list[str]) -> admin_pb2.ApplyRequest:
        return admin_pb2.ApplyRequest(
            orgs=[admin_pb2.Org(id="acme")],
            apps=[admin_pb2.App(id="chat", org_id="acme", principals=chat),
                  admin_pb2.App(id="batch", org_id="acme", principals=batch)])

    await tcp.admin.Apply(declaration([SPIFFE], []), metadata=tcp.auth)
    answer = await check(from_principal(SPIFFE, "a1"))
    assert answer.dynamic_metadata.fields["app_id"].string_value == "chat"

    reply = await tcp.admin.Apply(declaration([], [SPIFFE]), metadata=tcp.auth)
    update = admin_pb2.CHANGE_ACTION_UPDATE
    assert sorted((c.kind, c.id, c.action, tuple(c.fields)) for c in reply.changes) == [
        ("app", "batch", update, ("principals",)), ("app", "chat", update, ("principals",))]

    async def moved() -> bool:
        answer = await check(from_principal(SPIFFE, f"a{id(object())}"))
        return answer.dynamic_metadata.fields["app_id"].string_value == "batch"

    await until(moved, within=2.0)

    error = await expect_error(tcp.admin.Apply(declaration([SPIFFE], [SPIFFE]),
                                               metadata=tcp.auth))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "apps[1].principals[0]" in error.violations
