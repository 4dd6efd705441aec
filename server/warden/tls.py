"""TLS on WARDEN_LISTEN, and mTLS as a trust model: a verified client certificate names its
caller, and named callers may send explicit subjects or call Admin without the token.

A caller's names are its certificate's subject alternative names (DNS, URI such as a SPIFFE
id, email, IP), or its common name when it has none: what gRPC reports as the peer identity
of a verified certificate. Nothing is trusted by name unless WARDEN_TLS_CLIENT_CA verified it.
"""

from __future__ import annotations

import argparse
import ssl
from pathlib import Path

import grpc

from warden.errors import StartupError
from warden.settings import Settings


def _read(path: str, setting: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise StartupError(f"{setting}: cannot read {path}: {exc.strerror}") from None


def server_credentials(s: Settings) -> grpc.ServerCredentials | None:
    """The listener's credentials, or None for plaintext. The files are checked here with the
    ssl module, so that a wrong key or a file that is not PEM stops the start with its name
    rather than failing every handshake later."""
    if not s.tls_cert:
        return None
    cert, key = _read(s.tls_cert, "WARDEN_TLS_CERT"), _read(s.tls_key, "WARDEN_TLS_KEY")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(s.tls_cert, s.tls_key)
    except ssl.SSLError as exc:
        raise StartupError(f"WARDEN_TLS_CERT / WARDEN_TLS_KEY: {exc.reason or exc}: the files "
                           "must be a PEM certificate chain and its private key") from None
    ca = None
    if s.tls_client_ca:
        ca = _read(s.tls_client_ca, "WARDEN_TLS_CLIENT_CA")
        try:
            context.load_verify_locations(cadata=ca.decode("ascii", "replace"))
        except ssl.SSLError as exc:
            raise StartupError(f"WARDEN_TLS_CLIENT_CA: {exc.reason or exc}: the file must hold "
                               "PEM CA certificates") from None
    # With a client CA every caller must present a certificate it signed.
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca,
                                       require_client_auth=ca is not None)


def peer_names(context: grpc.aio.ServicerContext) -> frozenset[str]:
    """The verified names of the caller's client certificate (empty without one)."""
    names = context.peer_identities()
    return frozenset(n.decode("utf-8", "replace") for n in names) if names else frozenset()


class TrustedPeers:
    """Who may speak for others (name a subject, or relay a mesh workload identity): a peer on
    the subject socket when WARDEN_SUBJECT_SOCKET is on, and a peer whose verified client
    certificate bears one of WARDEN_TLS_TRUSTED_CLIENTS. Trust is the transport: a claim in a
    request is worth what the connection it came on is worth."""

    def __init__(self, unix_peers: bool = False, names: frozenset[str] = frozenset()) -> None:
        self.unix_peers, self.names = unix_peers, names

    def trust(self, context: grpc.aio.ServicerContext) -> bool:
        if self.unix_peers and (context.peer() or "").startswith("unix:"):
            return True
        return bool(self.names and self.names & peer_names(context))


# -- the client side, for the `warden` commands that talk to a running sidecar -------------------

def add_client_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("TLS (when the sidecar has WARDEN_TLS_CERT)")
    group.add_argument("--ca-cert", default="", help="PEM CA that signed the sidecar's certificate")
    group.add_argument("--client-cert", default="", help="PEM client certificate, for mTLS")
    group.add_argument("--client-key", default="", help="its private key")
    group.add_argument("--server-name", default="",
                       help="name to verify in the sidecar's certificate, if not the target host")


class ClientFlagsError(ValueError):
    """Unusable TLS flags of a `warden` command: exit 2."""


def _client_file(path: str) -> bytes | None:
    try:
        return Path(path).read_bytes() if path else None
    except OSError as exc:
        raise ClientFlagsError(f"cannot read {path}: {exc.strerror}") from None


def client_channel(args: argparse.Namespace) -> grpc.Channel:
    """A channel to --target: plaintext unless a TLS flag is given."""
    if not (args.ca_cert or args.client_cert or args.client_key):
        return grpc.insecure_channel(args.target)
    if bool(args.client_cert) != bool(args.client_key):
        raise ClientFlagsError("--client-cert and --client-key go together")
    files = [_client_file(p) for p in (args.ca_cert, args.client_key, args.client_cert)]
    options = [("grpc.ssl_target_name_override", args.server_name)] if args.server_name else []
    return grpc.secure_channel(args.target, grpc.ssl_channel_credentials(*files), options)
