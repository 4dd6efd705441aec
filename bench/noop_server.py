"""The baseline for bench/authorize.py: the real warden.v1.Warden service on grpc.aio whose
Authorize does no work and returns a fixed answer shaped and sized like Warden's.

    python bench/noop_server.py --listen 127.0.0.1:50052

Whatever Warden costs beyond this server is its own work: validation, key lookup, policies,
the rate counter and the decision log in Postgres.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import grpc
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from warden.v1 import types_pb2, warden_pb2, warden_pb2_grpc

# The tenant bench/authorize.py creates in Warden, so both servers answer with the same bytes.
ORG_ID = "bench"
APP_ID = "bench-app"
POLICY_ID = "bench-app-rpm"
RATE_LIMIT = 10**9
MODEL = "gpt-4o-mini"
PROVIDER = "openai"
MAX_OUTPUT_TOKENS = 256
# Same length as the ids Warden generates ("key_" and 16 hex digits).
API_KEY_ID = "key_0123456789abcdef"


def fixed_response() -> warden_pb2.AuthorizeResponse:
    scope = types_pb2.Scope(kind=types_pb2.SCOPE_KIND_APP, id=APP_ID)
    # A minute boundary near now, and a remaining count of the same width Warden reports.
    reset = timestamp_pb2.Timestamp()
    reset.GetCurrentTime()
    reset.seconds += 60 - reset.seconds % 60
    reset.nanos = 0
    return warden_pb2.AuthorizeResponse(
        decision=warden_pb2.DECISION_ALLOW,
        reason=types_pb2.REASON_ALLOWED,
        results=[warden_pb2.PolicyResult(
            policy_id=POLICY_ID, scope=scope, policy_type="rate_limit",
            mode=types_pb2.POLICY_MODE_ENFORCE, allowed=True, reason=types_pb2.REASON_ALLOWED)],
        limits=[warden_pb2.LimitStatus(
            policy_id=POLICY_ID, scope=scope, metric=types_pb2.METRIC_REQUESTS,
            limit=RATE_LIMIT, remaining=RATE_LIMIT - 1000, reset_time=reset)],
        route=warden_pb2.Route(provider=PROVIDER, model=MODEL,
                               max_output_tokens=MAX_OUTPUT_TOKENS),
        identity=warden_pb2.Identity(org_id=ORG_ID, app_id=APP_ID, api_key_id=API_KEY_ID))


class NoopWarden(warden_pb2_grpc.WardenServicer):
    def __init__(self) -> None:
        self._response = fixed_response()

    async def Authorize(self, request: warden_pb2.AuthorizeRequest,
                        context: grpc.aio.ServicerContext) -> warden_pb2.AuthorizeResponse:
        return self._response


async def serve(listen: str) -> None:
    # The same server options as Warden's, so only the servicer differs.
    size = 4 * 1024 * 1024
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", size),
                                      ("grpc.max_send_message_length", size),
                                      ("grpc.so_reuseport", 0)])
    warden_pb2_grpc.add_WardenServicer_to_server(NoopWarden(), server)
    # The bench waits for readiness the same way for both servers.
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
    asyncio.run(serve(parser.parse_args().listen))


if __name__ == "__main__":
    main()
