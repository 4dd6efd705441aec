"""The data plane servicer: validate -> convert -> the domain services -> convert."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc

from warden import metrics
from warden.api import convert
from warden.api.answer import authorize_response
from warden.api.decoding import NUL, Malformed
from warden.api.errors import fill_unimplemented, rpc
from warden.api.validate import MAX_RAG_SOURCES, MAX_TEXT, MAX_TOKENS, Violations
from warden.components import Components
from warden.errors import WardenError
from warden.keys import KeyRecord
from warden.tls import TrustedPeers
from warden.v1 import warden_pb2, warden_pb2_grpc

MAX_AUDIT_BATCH = 1000
# Event times further than this from the server clock are refused.
MAX_EVENT_SKEW_FUTURE = timedelta(minutes=5)
MAX_EVENT_AGE = timedelta(days=30)


def _check_credentials(v: Violations, api_key: str, subject: warden_pb2.Subject | None,
                       at: str = "") -> None:
    """An API key, or (from a trusted caller) a subject, never both."""
    if subject is None:
        v.required(api_key, f"{at}api_key")
        return
    v.check(not api_key, f"{at}api_key", "must be empty when subject is given")
    v.id(subject.org_id, f"{at}subject.org_id")
    v.id(subject.app_id, f"{at}subject.app_id")
    v.id(subject.user_id, f"{at}subject.user_id", required=False)


def _subject(message) -> warden_pb2.Subject | None:
    return message.subject if message.HasField("subject") else None


_FIRST, _DUPLICATE = (metrics.USAGE_RECORDS.labels(d) for d in ("false", "true"))
# The strings of an AuditEvent besides attributes; the request's deserializer leaves them to
# _append (warden.api.decoding).
_EVENT_TEXT = ("event_id", "action", "request_id", "user_id", "model", "provider")


def _event_violations(v: Violations, event: warden_pb2.AuditEvent, at: str,
                      attributes_error: str | None, in_range: bool) -> None:
    v.check(len(event.event_id) <= 128, f"{at}.event_id", "must be at most 128 characters")
    v.required(event.action, f"{at}.action")
    for name in _EVENT_TEXT[1:]:
        v.text(getattr(event, name), f"{at}.{name}")
    for name in _EVENT_TEXT:
        v.check("\x00" not in getattr(event, name), f"{at}.{name}", NUL)
    v.check(in_range, f"{at}.time",
            "must be a valid time within the last 30 days and at most 5 minutes ahead")
    v.check(attributes_error is None, f"{at}.attributes", attributes_error or "")


def _check_authorize(request: warden_pb2.AuthorizeRequest) -> None:
    v = Violations()
    v.request_id(request.request_id)
    subject = _subject(request)
    _check_credentials(v, request.api_key, subject)
    v.check(not (subject and subject.user_id and request.user_id
                 and subject.user_id != request.user_id), "user_id",
            "must be empty or equal subject.user_id")
    if v.required(request.model, "model"):
        v.text(request.model, "model")
    v.text(request.provider, "provider")
    v.text(request.user_id, "user_id")
    v.check(len(request.rag_sources) <= MAX_RAG_SOURCES, "rag_sources",
            f"must name at most {MAX_RAG_SOURCES} sources")
    for i, source in enumerate(request.rag_sources):
        v.check(0 < len(source) <= MAX_TEXT, f"rag_sources[{i}]",
                f"must be 1-{MAX_TEXT} characters")
    v.tokens(request.input_tokens, "input_tokens")
    v.tokens(request.max_output_tokens, "max_output_tokens")
    if v.tokens(request.min_output_tokens, "min_output_tokens"):
        v.check(request.min_output_tokens <= (request.max_output_tokens or MAX_TOKENS),
                "min_output_tokens", "must not exceed max_output_tokens")
    v.done()


def _check_record_usage(request: warden_pb2.RecordUsageRequest) -> None:
    v = Violations()
    v.request_id(request.request_id)
    _check_credentials(v, request.api_key, _subject(request))
    usage = request.usage
    v.tokens(usage.output_tokens, "usage.output_tokens")
    if v.tokens(usage.input_tokens, "usage.input_tokens") and v.tokens(
            usage.cached_input_tokens, "usage.cached_input_tokens"):
        v.check(usage.cached_input_tokens <= usage.input_tokens, "usage.cached_input_tokens",
                "must not exceed usage.input_tokens (input_tokens includes cached tokens)")
    if request.HasField("cost_micros"):
        v.check(0 <= request.cost_micros <= 10**15, "cost_micros",
                "must be between 0 and 10^15")
    v.text(request.model, "model")
    v.text(request.provider, "provider")
    v.check(request.outcome in convert.OUTCOMES, "outcome",
            "must be OUTCOME_COMPLETED, OUTCOME_FAILED or OUTCOME_CANCELLED")
    if request.HasField("latency"):
        v.check(0 <= request.latency.ToMilliseconds() <= 86_400_000, "latency",
                "must be between 0 and 24 hours")
    v.check(len(request.reservation_id) <= 64, "reservation_id", "must be at most 64 characters")
    v.done()


class WardenService(warden_pb2_grpc.WardenServicer):
    """Every handler: validate -> convert -> the domain service -> convert. Authorize answers
    with bytes (api/answer.py); `app` registers it to send them as they are."""

    RAW_RESPONSES = frozenset({"Authorize"})

    def __init__(self, components: Components, trusted: TrustedPeers) -> None:
        self._c = components
        self._trusted = trusted  # who may name a subject

    async def _caller(self, api_key: str, subject: warden_pb2.Subject | None,
                      context: grpc.aio.ServicerContext) -> KeyRecord:
        """Who calls: the API key's record, or a keyless record for a trusted subject."""
        if subject is None:
            return await self._c.callers.by_key(api_key)
        if not self._trusted.trust(context):
            raise WardenError(
                "PERMISSION_DENIED", "PERMISSION_DENIED",
                "an explicit subject is accepted only on WARDEN_SUBJECT_SOCKET or from a client "
                "certificate named in WARDEN_TLS_TRUSTED_CLIENTS; send api_key",
                [("subject", "not accepted on this connection")])
        return await self._c.callers.by_subject(subject.org_id, subject.app_id)

    @rpc
    async def Authorize(self, request: warden_pb2.AuthorizeRequest,
                        context: grpc.aio.ServicerContext) -> bytes:
        _check_authorize(request)
        caller = await self._caller(request.api_key, _subject(request), context)
        return authorize_response(await self._c.authorizer.authorize(
            caller, convert.authorize_input(request)))

    @rpc
    async def RecordUsage(self, request: warden_pb2.RecordUsageRequest,
                          context: grpc.aio.ServicerContext) -> warden_pb2.RecordUsageResponse:
        _check_record_usage(request)
        key = await self._caller(request.api_key, _subject(request), context)
        cost, duplicate = await self._c.reservations.settle(
            key.org_id, convert.usage_row(request), request.reservation_id,
            request.cost_micros if request.HasField("cost_micros") else None,
            await self._c.cache.prices())
        (_DUPLICATE if duplicate else _FIRST).inc()
        return warden_pb2.RecordUsageResponse(cost_micros=cost or 0, duplicate=duplicate,
                                              cost_unknown=cost is None)

    async def _append(self, key: KeyRecord, events, field: str) -> list[str]:
        """Validate a batch and journal it atomically; return the event ids in order."""
        v = Violations()
        v.check(1 <= len(events) <= MAX_AUDIT_BATCH, field,
                f"must hold 1 to {MAX_AUDIT_BATCH} events")
        now = datetime.now(UTC)
        now_text = now.isoformat()
        earliest = convert.epoch_micros(now - MAX_EVENT_AGE)
        latest = convert.epoch_micros(now + MAX_EVENT_SKEW_FUTURE)
        rows = []
        for i, event in enumerate(events):
            texts = (event.event_id, event.action, event.request_id, event.user_id,
                     event.model, event.provider)  # _EVENT_TEXT
            when = now_text
            if event.HasField("time"):
                t = event.time
                seconds, nanos = t.seconds, t.nanos
                at = seconds * 1_000_000 + nanos // 1000
                when = convert.utc_text(seconds, nanos // 1000) \
                    if earliest <= at <= latest and 0 <= nanos < 1_000_000_000 else None
            try:
                attributes, attributes_error = convert.struct_json(event.attributes), None
            except ValueError as exc:
                attributes, attributes_error = None, str(exc)
            # Naming a problem costs more than finding one: only a suspect event is checked
            # field by field (StreamAudit validates every event of every message).
            joined = "".join(texts)
            if (len(texts[0]) > 128 or not texts[1] or attributes is None or when is None
                    or "\x00" in joined
                    or (len(joined) > MAX_TEXT and any(len(t) > MAX_TEXT for t in texts[1:]))):
                _event_violations(v, event, f"{field}[{i}]", attributes_error, when is not None)
            row = {
                "event_id": texts[0] or uuid.uuid4().hex, "event_time": when,
                "action": texts[1], "request_id": texts[2], "user_id": texts[3],
                "model": texts[4], "provider": texts[5], "attributes": attributes,
            }
            if texts[0] and not event.HasField("time"):
                # A retry of this event would get another time: the flush looks for the id
                # in every partition (docs/audit.md).
                row["time_assigned"] = True
            rows.append(row)
        ids = [r["event_id"] for r in rows]
        v.check(len(set(ids)) == len(ids), field, "event ids must be unique within a batch")
        v.done()
        await self._c.audit_log.append(key, rows)
        return ids

    @rpc
    async def Audit(self, request: warden_pb2.AuditRequest,
                    context: grpc.aio.ServicerContext) -> warden_pb2.AuditResponse:
        v = Violations()
        _check_credentials(v, request.api_key, _subject(request))
        v.done()
        key = await self._caller(request.api_key, _subject(request), context)
        ids = await self._append(key, request.events, "events")
        return warden_pb2.AuditResponse(accepted=len(ids), event_ids=ids)

    @rpc
    async def StreamAudit(self, requests: AsyncIterator[warden_pb2.StreamAuditRequest],
                          context: grpc.aio.ServicerContext) -> warden_pb2.StreamAuditResponse:
        """Each message is journaled atomically as it arrives; the stream is acknowledged at
        its end. A stream that fails part-way may have kept its earlier messages: resend them
        with the same event ids, which are stored once."""
        key, first, accepted, index = None, None, 0, 0
        async for message in requests:
            if isinstance(message, Malformed):
                message.raise_error(f"messages[{index}]")
            at = f"messages[{index}]."
            if key is None:
                v = Violations()
                _check_credentials(v, message.api_key, _subject(message), at)
                v.done()
                first = message
                key = await self._caller(message.api_key, _subject(message), context)
            elif ((message.api_key and message.api_key != first.api_key)
                  or (_subject(message) and message.subject != first.subject)):
                raise WardenError("INVALID_ARGUMENT", "INVALID_ARGUMENT",
                                  "all messages of a stream must name the same caller",
                                  [(f"{at}api_key", "differs from the first message's caller")])
            accepted += len(await self._append(key, message.events,
                                               f"messages[{index}].events"))
            index += 1
        if key is None:
            raise WardenError("INVALID_ARGUMENT", "INVALID_ARGUMENT", "empty stream",
                              [("messages", "at least one message is required")])
        return warden_pb2.StreamAuditResponse(accepted=accepted)


fill_unimplemented(WardenService, warden_pb2.DESCRIPTOR.services_by_name["Warden"])
