"""WardenClient (blocking) and AsyncWardenClient (asyncio): the same methods, the same
arguments, the same errors. Both build their requests and read their answers here, once.

- Address: `host:port` or `unix:/path`; default `WARDEN_ADDRESS`, else 127.0.0.1:50051.
- TLS: `root_certificates` (PEM) turns it on; with `certificate_chain` and `private_key`,
  mTLS. Plaintext otherwise (a sidecar on localhost).
- Deadlines: `timeout` seconds per call (default 2), overridable on each call.
- Retries: UNAVAILABLE only, by gRPC's own retry policy (service config): `retries` more
  attempts with exponential backoff from 50 ms. Every RPC of Warden may be retried so: a
  retried Authorize or RecordUsage with the same request id is answered as the first was.
- `on_unavailable`: "fail_closed" raises WardenUnavailable (or WardenDeadlineExceeded) when
  the sidecar cannot be reached; "fail_open" makes `authorize` answer an allow marked
  `fail_open` instead (counted in `fail_open_count`), and `record_usage`/`audit` of such
  calls are skipped by guards.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import grpc
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

from warden_client._decision import Decision
from warden_client._errors import WardenUnavailable, from_rpc_error
from warden_client._guard import AsyncGuard, Guard
from warden_client.v1 import types_pb2, warden_pb2, warden_pb2_grpc

DEFAULT_ADDRESS = "127.0.0.1:50051"
OnUnavailable = Literal["fail_closed", "fail_open"]
Outcome = Literal["completed", "failed", "cancelled"]
Message = Mapping[str, str] | warden_pb2.ChatMessage
_OUTCOMES = {"completed": warden_pb2.OUTCOME_COMPLETED, "failed": warden_pb2.OUTCOME_FAILED,
             "cancelled": warden_pb2.OUTCOME_CANCELLED}


def _options(retries: int) -> list[tuple[str, Any]]:
    policy = {"methodConfig": [{
        "name": [{"service": "warden.v1.Warden"}],
        "retryPolicy": {"maxAttempts": retries + 1, "initialBackoff": "0.05s",
                        "maxBackoff": "1s", "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"]}}]} if retries else None
    options: list[tuple[str, Any]] = [("grpc.enable_retries", 1 if retries else 0)]
    if policy:
        options.append(("grpc.service_config", json.dumps(policy)))
    return options


class _Settings:
    """What both clients are built from, checked once."""

    def __init__(self, address: str | None, api_key: str | None, timeout: float,
                 on_unavailable: OnUnavailable, retries: int) -> None:
        self.address = address or os.environ.get("WARDEN_ADDRESS") or DEFAULT_ADDRESS
        if not self.address.startswith("unix:") and ":" not in self.address:
            raise ValueError(f"address {self.address!r}: expected host:port or unix:/path")
        if on_unavailable not in ("fail_closed", "fail_open"):
            raise ValueError("on_unavailable must be 'fail_closed' or 'fail_open'")
        if timeout <= 0 or retries < 0:
            raise ValueError("timeout must be positive and retries at least 0")
        self.api_key = api_key if api_key is not None else os.environ.get("WARDEN_API_KEY", "")
        self.timeout = timeout
        self.fail_open = on_unavailable == "fail_open"
        self.options = _options(retries)


def _credentials(root_certificates: bytes | None, certificate_chain: bytes | None,
                 private_key: bytes | None) -> grpc.ChannelCredentials | None:
    if root_certificates is None:
        if certificate_chain or private_key:
            raise ValueError("mTLS needs root_certificates too")
        return None
    return grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)


def _message(m: Message) -> warden_pb2.ChatMessage:
    if isinstance(m, warden_pb2.ChatMessage):
        return m
    return warden_pb2.ChatMessage(role=m["role"], content=m.get("content") or "")


def authorize_request(api_key: str, model: str, *, messages: Iterable[Message] = (),
                      request_id: str | None = None, provider: str = "",
                      max_output_tokens: int = 0, min_output_tokens: int = 0,
                      input_tokens: int = 0, user_id: str = "",
                      rag_sources: Sequence[str] = (),
                      labels: Mapping[str, str] | None = None) -> warden_pb2.AuthorizeRequest:
    return warden_pb2.AuthorizeRequest(
        request_id=request_id or uuid.uuid4().hex, api_key=api_key, model=model,
        provider=provider, max_output_tokens=max_output_tokens,
        min_output_tokens=min_output_tokens, input_tokens=input_tokens, user_id=user_id,
        messages=[_message(m) for m in messages], rag_sources=list(rag_sources),
        labels=dict(labels or {}))


def usage_request(api_key: str, request_id: str, *, input_tokens: int = 0,
                  output_tokens: int = 0, cached_input_tokens: int = 0,
                  outcome: Outcome = "completed", latency: float | None = None,
                  model: str = "", provider: str = "", cost_micros: int | None = None,
                  reservation_id: str = "") -> warden_pb2.RecordUsageRequest:
    if outcome not in _OUTCOMES:
        raise ValueError(f"outcome must be one of {', '.join(_OUTCOMES)}")
    request = warden_pb2.RecordUsageRequest(
        request_id=request_id, api_key=api_key, outcome=_OUTCOMES[outcome], model=model,
        provider=provider, reservation_id=reservation_id,
        usage=types_pb2.Usage(input_tokens=input_tokens, output_tokens=output_tokens,
                              cached_input_tokens=cached_input_tokens))
    if latency is not None:
        request.latency.CopyFrom(duration_pb2.Duration(seconds=int(latency),
                                                       nanos=int(latency % 1 * 1e9)))
    if cost_micros is not None:
        request.cost_micros = cost_micros
    return request


def audit_request(api_key: str, events: Iterable[Mapping[str, Any] | warden_pb2.AuditEvent]
                  ) -> warden_pb2.AuditRequest:
    """Events as AuditEvent messages or dicts of its fields (`time` a unix timestamp in
    seconds, `attributes` a dict)."""
    out = []
    for e in events:
        if isinstance(e, warden_pb2.AuditEvent):
            out.append(e)
            continue
        fields = dict(e)
        attributes, when = fields.pop("attributes", None), fields.pop("time", None)
        event = warden_pb2.AuditEvent(**fields)
        if attributes:
            event.attributes.CopyFrom(_struct(attributes))
        if when is not None:
            event.time.CopyFrom(timestamp_pb2.Timestamp(seconds=int(when),
                                                        nanos=int(when % 1 * 1e9)))
        out.append(event)
    return warden_pb2.AuditRequest(api_key=api_key, events=out)


def _struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


class WardenClient:
    """A blocking client. Use it as a context manager, or call close()."""

    def __init__(self, address: str | None = None, *, api_key: str | None = None,
                 timeout: float = 2.0, on_unavailable: OnUnavailable = "fail_closed",
                 retries: int = 3, root_certificates: bytes | None = None,
                 certificate_chain: bytes | None = None,
                 private_key: bytes | None = None) -> None:
        self._s = _Settings(address, api_key, timeout, on_unavailable, retries)
        credentials = _credentials(root_certificates, certificate_chain, private_key)
        self._channel = grpc.secure_channel(self._s.address, credentials, self._s.options) \
            if credentials else grpc.insecure_channel(self._s.address, self._s.options)
        self._stub = warden_pb2_grpc.WardenStub(self._channel)
        self.fail_open_count = 0

    def __enter__(self) -> WardenClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return method(request, timeout=timeout or self._s.timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def authorize(self, model: str, *, timeout: float | None = None, **fields: Any) -> Decision:
        """May this LLM call go ahead, and how? `fields`: messages (dicts of role and
        content), request_id (default: a new one), provider, max_output_tokens,
        min_output_tokens, input_tokens, user_id, rag_sources, labels."""
        request = authorize_request(self._s.api_key, model, **fields)
        try:
            return Decision.of(request, self._call(self._stub.Authorize, request, timeout))
        except WardenUnavailable:
            if not self._s.fail_open:
                raise
            self.fail_open_count += 1
            return Decision.failed_open(request)

    def record_usage(self, request_id: str, *, timeout: float | None = None,
                     **fields: Any) -> warden_pb2.RecordUsageResponse:
        """What the call used: input_tokens, output_tokens, cached_input_tokens, outcome
        ("completed", "failed", "cancelled"), latency (seconds), model, provider,
        cost_micros, reservation_id."""
        return self._call(self._stub.RecordUsage,
                          usage_request(self._s.api_key, request_id, **fields), timeout)

    def audit(self, events: Iterable[Mapping[str, Any] | warden_pb2.AuditEvent], *,
              timeout: float | None = None) -> list[str]:
        """Store audit events; their ids, in order (assigned where an event had none)."""
        reply = self._call(self._stub.Audit, audit_request(self._s.api_key, events), timeout)
        return list(reply.event_ids)

    def guard(self, model: str, **fields: Any) -> Guard:
        """`with client.guard(model, messages=...) as call:` authorizes on entry (raising
        WardenDenied when denied) and records usage on exit, whatever happens (see Guard)."""
        return Guard(self, model, fields)


class AsyncWardenClient:
    """The asyncio client: WardenClient's methods, awaited."""

    def __init__(self, address: str | None = None, *, api_key: str | None = None,
                 timeout: float = 2.0, on_unavailable: OnUnavailable = "fail_closed",
                 retries: int = 3, root_certificates: bytes | None = None,
                 certificate_chain: bytes | None = None,
                 private_key: bytes | None = None) -> None:
        self._s = _Settings(address, api_key, timeout, on_unavailable, retries)
        credentials = _credentials(root_certificates, certificate_chain, private_key)
        self._channel = grpc.aio.secure_channel(self._s.address, credentials, self._s.options) \
            if credentials else grpc.aio.insecure_channel(self._s.address, self._s.options)
        self._stub = warden_pb2_grpc.WardenStub(self._channel)
        self.fail_open_count = 0

    async def __aenter__(self) -> AsyncWardenClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return await method(request, timeout=timeout or self._s.timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    async def authorize(self, model: str, *, timeout: float | None = None,
                        **fields: Any) -> Decision:
        request = authorize_request(self._s.api_key, model, **fields)
        try:
            return Decision.of(request, await self._call(self._stub.Authorize, request,
                                                         timeout))
        except WardenUnavailable:
            if not self._s.fail_open:
                raise
            self.fail_open_count += 1
            return Decision.failed_open(request)

    async def record_usage(self, request_id: str, *, timeout: float | None = None,
                           **fields: Any) -> warden_pb2.RecordUsageResponse:
        return await self._call(self._stub.RecordUsage,
                                usage_request(self._s.api_key, request_id, **fields), timeout)

    async def audit(self, events: Iterable[Mapping[str, Any] | warden_pb2.AuditEvent], *,
                    timeout: float | None = None) -> list[str]:
        reply = await self._call(self._stub.Audit, audit_request(self._s.api_key, events),
                                 timeout)
        return list(reply.event_ids)

    def guard(self, model: str, **fields: Any) -> AsyncGuard:
        return AsyncGuard(self, model, fields)
