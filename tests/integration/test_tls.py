"""TLS on the listener and mTLS as a trust model, with certificates made here by a throwaway CA:
a real TLS handshake on a real port, checked from both sides."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from tests.certs import CA
from tests.conftest import Client, settings_for
from tests.helpers import authorize_request, expect_error, tenant
from warden.app import App
from warden.errors import StartupError
from warden.v1 import admin_pb2, warden_pb2


class Pki:
    def __init__(self, directory: Path) -> None:
        self.ca = CA(directory, "warden-test-ca")
        self.server = self.ca.issue("server", "warden", [x509.DNSName("localhost")])
        self.gateway = self.ca.issue("gateway", "gateway",
                                     [x509.UniformResourceIdentifier("spiffe://mesh/gateway")])
        self.ops = self.ca.issue("ops", "ops-admin", [])  # no SAN: the CN is its name
        self.app = self.ca.issue("app", "app", [x509.DNSName("app.internal")])
        self.rogue = CA(directory, "rogue-ca").issue("rogue", "ops-admin", [])


@pytest.fixture
def pki(tmp_path) -> Pki:
    return Pki(tmp_path)


async def _start(db_url: str, tmp_path, pki: Pki, mtls: bool) -> App:
    tls = {"tls_cert": pki.server[0], "tls_key": pki.server[1]}
    if mtls:
        tls.update(tls_client_ca=pki.ca.path, tls_trusted_clients="spiffe://mesh/gateway",
                   tls_admin_clients="ops-admin")
    app = App(settings_for(db_url, str(tmp_path), **tls))
    await app.start()
    return app


def _channel(app: App, pki: Pki, cert: tuple[str, str] | None) -> grpc.aio.Channel:
    key, chain = (Path(cert[1]).read_bytes(), Path(cert[0]).read_bytes()) if cert else (None, None)
    credentials = grpc.ssl_channel_credentials(Path(pki.ca.path).read_bytes(), key, chain)
    # The server certificate names localhost; the target is 127.0.0.1.
    return grpc.aio.secure_channel(f"127.0.0.1:{app.port}", credentials,
                                   [("grpc.ssl_target_name_override", "localhost")])


async def _fails_handshake(channel: grpc.aio.Channel) -> None:
    async with channel:
        error = await expect_status(Client(channel).admin.ListOrgs(
            admin_pb2.ListOrgsRequest(), timeout=5))
    assert error == grpc.StatusCode.UNAVAILABLE


async def expect_status(call) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    raise AssertionError("expected the call to fail")


async def test_tls_listener_serves_tls_clients_and_refuses_plaintext(db_url, tmp_path, pki):
    app = await _start(db_url, tmp_path, pki, mtls=False)
    try:
        async with _channel(app, pki, None) as channel:
            client = Client(channel)
            key = await tenant(client)
            reply = await client.warden.Authorize(authorize_request(key, "tls-1"))
            assert reply.decision == warden_pb2.DECISION_ALLOW
        await _fails_handshake(grpc.aio.insecure_channel(f"127.0.0.1:{app.port}"))
    finally:
        await app.stop()


async def test_mtls_needs_a_certificate_from_the_client_ca(db_url, tmp_path, pki):
    app = await _start(db_url, tmp_path, pki, mtls=True)
    try:
        await _fails_handshake(_channel(app, pki, None))
        # Same name as the admin certificate, signed by another CA: the name counts for nothing.
        await _fails_handshake(_channel(app, pki, pki.rogue))
        async with _channel(app, pki, pki.app) as channel:
            client = Client(channel)
            key = await tenant(client)  # with the admin token
            reply = await client.warden.Authorize(authorize_request(key, "mtls-1"))
            assert reply.decision == warden_pb2.DECISION_ALLOW
    finally:
        await app.stop()


async def test_only_trusted_certificates_may_name_a_subject(db_url, tmp_path, pki):
    app = await _start(db_url, tmp_path, pki, mtls=True)
    request = authorize_request("", "subject-1", subject=warden_pb2.Subject(
        org_id="acme", app_id="chat", user_id="alice"))
    try:
        async with _channel(app, pki, pki.gateway) as channel:
            client = Client(channel)
            await tenant(client)
            await client.admin.CreateUser(admin_pb2.CreateUserRequest(
                user=admin_pb2.User(id="alice", org_id="acme")), metadata=client.auth)
            reply = await client.warden.Authorize(request)
            assert reply.decision == warden_pb2.DECISION_ALLOW
            assert (reply.identity.org_id, reply.identity.app_id, reply.identity.user_id) == \
                ("acme", "chat", "alice")
        async with _channel(app, pki, pki.app) as channel:
            error = await expect_error(Client(channel).warden.Authorize(request))
        assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED,
                                              "PERMISSION_DENIED")
        assert "WARDEN_TLS_TRUSTED_CLIENTS" in error.message
    finally:
        await app.stop()


async def test_an_admin_certificate_stands_in_for_the_token(db_url, db, tmp_path, pki):
    app = await _start(db_url, tmp_path, pki, mtls=True)
    try:
        async with _channel(app, pki, pki.ops) as channel:
            admin = Client(channel).admin
            await admin.CreateOrg(admin_pb2.CreateOrgRequest(org=admin_pb2.Org(id="acme")))
            listed = await admin.ListOrgs(admin_pb2.ListOrgsRequest())
            assert [o.id for o in listed.orgs] == ["acme"]
        async with _channel(app, pki, pki.gateway) as channel:
            error = await expect_error(Client(channel).admin.ListOrgs(admin_pb2.ListOrgsRequest()))
        assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED,
                                              "ADMIN_TOKEN_MISSING")
        refusals = await db.fetch("SELECT method, reason FROM admin_refusals")
        assert [tuple(r) for r in refusals] == [("ListOrgs", "ADMIN_TOKEN_MISSING")]
    finally:
        await app.stop()


async def test_the_cli_speaks_mtls(db_url, tmp_path, pki):
    app = await _start(db_url, tmp_path, pki, mtls=True)
    base = [sys.executable, "-m", "warden"]
    flags = ["--target", f"127.0.0.1:{app.port}", "--ca-cert", pki.ca.path,
             "--server-name", "localhost"]
    try:
        async def run(*argv: str) -> tuple[int, str]:
            proc = await asyncio.create_subprocess_exec(
                *base, *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            out, _ = await proc.communicate()
            return proc.returncode, out.decode()

        ops = ["--client-cert", pki.ops[0], "--client-key", pki.ops[1]]
        assert await run("health", *flags, *ops) == (0, "SERVING\n")
        code, out = await run("health", *flags)  # no client certificate
        assert code == 1 and "UNAVAILABLE" in out
        # No admin token anywhere (an empty data directory): the certificate is the credential.
        code, out = await run("providers", "off", "openai", "--reason", "drill",
                              "--data-dir", str(tmp_path / "cli"), *flags, *ops)
        assert code == 0, out
        switches = await Client(channel_for_check := _channel(app, pki, pki.ops)).admin \
            .ListProviderSwitches(admin_pb2.ListProviderSwitchesRequest())
        await channel_for_check.close()
        assert [(s.provider, s.enabled) for s in switches.switches] == [("openai", False)]
        code, out = await run("health", *flags, "--client-cert", pki.ops[0])
        assert (code, out) == (2, "warden: --client-cert and --client-key go together\n")
    finally:
        await app.stop()


async def test_unusable_certificate_files_stop_the_start(db_url, tmp_path, pki):
    mismatched = {"tls_cert": pki.server[0], "tls_key": pki.app[1]}
    missing = {"tls_cert": pki.server[0], "tls_key": pki.server[1],
               "tls_client_ca": str(tmp_path / "absent.pem")}
    for tls, message in ((mismatched, "WARDEN_TLS_CERT / WARDEN_TLS_KEY"),
                         (missing, "WARDEN_TLS_CLIENT_CA: cannot read")):
        app = App(settings_for(db_url, str(tmp_path), **tls))
        with pytest.raises(StartupError, match=message):
            await app.start()
        await app.stop()
