"""The baseline for the benches: the real warden.v1.Warden service on grpc.aio whose
Authorize does no work and returns a fixed answer shaped and sized like Warden's, and whose
StreamAudit reads every message and acknowledges the stream's events without keeping them.

    python bench/noop_server.py --listen 127.0.0.1:50052

Whatever Warden costs beyond this server is its own work: validation, the cached key and
policy lookups, alias, routing and access resolution, the rate counters and the decision log in
Postgres; for audit events, their validation, the fsync'd journal and the flush into Postgres.
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
TEAM_ID = "bench-team"
APP_ID = "bench-app"
USER_ID = "bench-user"
ACCESS_POLICY_ID = "bench-org-models"
ROUTING_POLICY_ID = "bench-team-routing"
APP_LIMIT_ID = "bench-app-rpm"
USER_LIMIT_ID = "bench-user-rpm"
RATE_LIMIT = 10**9
# The caller asks for an alias; the org resolves it to MODEL and the team routes MODEL to
# PROVIDER, with FALLBACK_PROVIDER next.
MODEL_ALIAS = "chat"
MODEL = "gpt-4o-mini"
PROVIDER = "openai"
FALLBACK_PROVIDER = "azure"
MAX_OUTPUT_TOKENS = 256
MAX_TOKENS_CAP = 1024
# Same length as the ids Warden generates ("key_" and 16 hex digits).
API_KEY_ID = "key_0123456789abcdef"


def fixed_response() -> warden_pb2.AuthorizeResponse:
    """Warden's answer to the bench's request, result for result: the org's model access, the
    team's routing (with the note Warden writes), then the app's and the user's rate limits."""
    def result(policy_id: str, kind: int, scope_id: str, policy_type: str,
               message: str = "") -> warden_pb2.PolicyResult:
        return warden_pb2.PolicyResult(
            policy_id=policy_id, scope=types_pb2.Scope(kind=kind, id=scope_id),
            policy_type=policy_type, mode=types_pb2.POLICY_MODE_ENFORCE, allowed=True,
            reason=types_pb2.REASON_ALLOWED, message=message)

    # A minute boundary near now, and a remaining count of the same width Warden reports.
    reset = timestamp_pb2.Timestamp()
    reset.GetCurrentTime()
    reset.seconds += 60 - reset.seconds % 60
    reset.nanos = 0
    limits = [warden_pb2.LimitStatus(
        policy_id=policy_id, scope=types_pb2.Scope(kind=kind, id=scope_id),
        metric=types_pb2.METRIC_REQUESTS, limit=RATE_LIMIT, remaining=RATE_LIMIT - 1000,
        reset_time=reset)
        for policy_id, kind, scope_id in ((APP_LIMIT_ID, types_pb2.SCOPE_KIND_APP, APP_ID),
                                          (USER_LIMIT_ID, types_pb2.SCOPE_KIND_USER, USER_ID))]
    return warden_pb2.AuthorizeResponse(
        decision=warden_pb2.DECISION_ALLOW,
        reason=types_pb2.REASON_ALLOWED,
        results=[
            result(ACCESS_POLICY_ID, types_pb2.SCOPE_KIND_ORG, ORG_ID, "model_access"),
            result(ROUTING_POLICY_ID, types_pb2.SCOPE_KIND_TEAM, TEAM_ID, "routing",
                   f"{MODEL_ALIAS!r} routed to {PROVIDER}/{MODEL}"),
            result(APP_LIMIT_ID, types_pb2.SCOPE_KIND_APP, APP_ID, "rate_limit"),
            result(USER_LIMIT_ID, types_pb2.SCOPE_KIND_USER, USER_ID, "rate_limit"),
        ],
        limits=limits,
        route=warden_pb2.Route(provider=PROVIDER, model=MODEL,
                               max_output_tokens=MAX_OUTPUT_TOKENS,
                               fallbacks=[types_pb2.RouteTarget(provider=FALLBACK_PROVIDER,
                                                                model=MODEL)]),
        identity=warden_pb2.Identity(org_id=ORG_ID, app_id=APP_ID, user_id=USER_ID,
                                     api_key_id=API_KEY_ID))


class NoopWarden(warden_pb2_grpc.WardenServicer):
    def __init__(self) -> None:
        self._response = fixed_response()

    async def Authorize(self, request: warden_pb2.AuthorizeRequest,
                        context: grpc.aio.ServicerContext) -> warden_pb2.AuthorizeResponse:
        return self._response

    async def StreamAudit(self, requests, context: grpc.aio.ServicerContext
                          ) -> warden_pb2.StreamAuditResponse:
        # Each message is deserialized (by grpc, as for Warden) and its events counted: the
        # same answer as Warden's, with nothing validated, journaled or stored.
        accepted = 0
        async for message in requests:
            accepted += len(message.events)
        return warden_pb2.StreamAuditResponse(accepted=accepted)


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
