"""The baseline of the benches: the real warden.v1.Warden service on grpc.aio, with Warden's
server options, doing no work.

    python bench/noop_server.py --listen 127.0.0.1:50052 [--replay DIR]

- `Authorize` returns a fixed answer of the same shape and size as Warden's answer to the
  request of bench/tenant.py (bench/authorize.py checks that they match before measuring).
- `RecordUsage` returns a fixed `RecordUsageResponse` like Warden's: the bench's expected
  cost, not a duplicate.
- `StreamAudit` reads every message (deserialized by grpc, as for Warden) and acknowledges the
  stream's events without keeping them.

With `--replay DIR`, `Authorize` and `RecordUsage` answer with the bytes in DIR/Authorize.bin
and DIR/RecordUsage.bin (Warden's own answers, captured by the bench) through a raw-bytes
handler that does not even parse the request: the stricter floor. When DIR/Check.bin exists,
Envoy's `envoy.service.auth.v3.Authorization/Check` is served too: it parses the CheckRequest
(as Warden must) and answers those bytes (bench/mesh.py).

Whatever Warden costs beyond this server is its own work: validation, the cached key and
policy lookups, alias, routing and access resolution, the quota leases, the journal and the
flush into Postgres.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tenant import fixed_response, fixed_usage_response

from warden.v1 import warden_pb2, warden_pb2_grpc

SERVICE = "warden.v1.Warden"
CHECK_SERVICE = "envoy.service.auth.v3.Authorization"
REPLAYED = ("Authorize", "RecordUsage")


class NoopWarden(warden_pb2_grpc.WardenServicer):
    def __init__(self) -> None:
        self._authorized = fixed_response()
        self._recorded = fixed_usage_response()

    async def Authorize(self, request: warden_pb2.AuthorizeRequest,
                        context: grpc.aio.ServicerContext) -> warden_pb2.AuthorizeResponse:
        return self._authorized

    async def RecordUsage(self, request: warden_pb2.RecordUsageRequest,
                          context: grpc.aio.ServicerContext) -> warden_pb2.RecordUsageResponse:
        return self._recorded

    async def StreamAudit(self, requests, context: grpc.aio.ServicerContext
                          ) -> warden_pb2.StreamAuditResponse:
        # The same answer as Warden's, with nothing validated, journaled or stored.
        accepted = 0
        async for message in requests:
            accepted += len(message.events)
        return warden_pb2.StreamAuditResponse(accepted=accepted)


def replaying(directory: Path) -> grpc.GenericRpcHandler:
    """Authorize and RecordUsage answering with captured bytes; no (de)serializer, so the
    request stays bytes and the answer goes out as it is."""
    def answer(raw: bytes) -> grpc.RpcMethodHandler:
        async def handle(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return raw

        return grpc.unary_unary_rpc_method_handler(handle)

    noop = NoopWarden()
    handlers = {method: answer((directory / f"{method}.bin").read_bytes())
                for method in REPLAYED if (directory / f"{method}.bin").exists()}
    handlers["StreamAudit"] = grpc.stream_unary_rpc_method_handler(
        noop.StreamAudit, request_deserializer=warden_pb2.StreamAuditRequest.FromString,
        response_serializer=warden_pb2.StreamAuditResponse.SerializeToString)
    return grpc.method_handlers_generic_handler(SERVICE, handlers)


def replaying_check(raw: bytes) -> grpc.GenericRpcHandler:
    from envoy.service.auth.v3 import external_auth_pb2

    async def check(request: external_auth_pb2.CheckRequest,
                    context: grpc.aio.ServicerContext) -> bytes:
        return raw

    return grpc.method_handlers_generic_handler(CHECK_SERVICE, {
        "Check": grpc.unary_unary_rpc_method_handler(
            check, request_deserializer=external_auth_pb2.CheckRequest.FromString)})


async def serve(listen: str, replay: Path | None) -> None:
    # The same server options as Warden's, so that only the servicer differs.
    size = 4 * 1024 * 1024
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", size),
                                      ("grpc.max_send_message_length", size),
                                      ("grpc.so_reuseport", 0)])
    if replay is None:
        warden_pb2_grpc.add_WardenServicer_to_server(NoopWarden(), server)
    else:
        server.add_generic_rpc_handlers((replaying(replay),))
        if (replay / "Check.bin").exists():
            server.add_generic_rpc_handlers((replaying_check((replay / "Check.bin")
                                                             .read_bytes()),))
    # The bench waits for readiness the same way for every server.
    checker = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    server.add_insecure_port(listen)
    await server.start()
    await checker.set("", health_pb2.HealthCheckResponse.SERVING)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", default="127.0.0.1:50052", help="HOST:PORT")
    parser.add_argument("--replay", type=Path, metavar="DIR",
                        help="answer Authorize and RecordUsage with DIR/<method>.bin")
    args = parser.parse_args()
    asyncio.run(serve(args.listen, args.replay))


if __name__ == "__main__":
    main()
