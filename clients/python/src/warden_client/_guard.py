"""A guard around one LLM call: authorize on entry, record usage on exit, whatever happens.

    with client.guard("chat", messages=messages, max_output_tokens=512) as call:
        answer = llm(call.model, messages=call.messages, max_tokens=call.max_output_tokens)
        call.used(answer.usage.prompt_tokens, answer.usage.completion_tokens)

Entry raises WardenDenied when the policies deny the call (the block does not run). Exit
records the usage given to `used` (zero if none was) with the outcome: "completed" when the
block ends normally, "failed" when it raises an exception, "cancelled" when it is cancelled
(asyncio.CancelledError) or the process is asked to stop (KeyboardInterrupt, SystemExit: a
SIGTERM handler that raises SystemExit makes a stop mid-call record it too); then the
exception goes on. The latency recorded is the block's. A call that failed open (the sidecar
could not be reached, on_unavailable="fail_open") records nothing, and a recording the
sidecar cannot take then is dropped and counted in the client's fail_open_count instead of
raised.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from warden_client._decision import Decision
from warden_client._errors import WardenDenied, WardenUnavailable

if TYPE_CHECKING:
    from warden_client._client import AsyncWardenClient, WardenClient

_STOPS = (asyncio.CancelledError, KeyboardInterrupt, SystemExit, GeneratorExit)


class _Call:
    """What the guarded block uses: the decision, and where it reports the usage."""

    def __init__(self, decision: Decision, messages: list[dict[str, str]] | None) -> None:
        self.decision = decision
        self.model = decision.model
        self.provider = decision.provider
        self.max_output_tokens = decision.max_output_tokens
        # The messages to send: the redacted ones when Warden redacted any.
        self.messages = decision.messages if decision.messages is not None else messages
        self.input_tokens = 0
        self.output_tokens = 0
        self.cached_input_tokens = 0
        self._started = time.monotonic()

    def used(self, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0) -> None:
        """The call's usage as the provider reported it (or as counted so far)."""
        self.input_tokens, self.output_tokens = input_tokens, output_tokens
        self.cached_input_tokens = cached_input_tokens

    def _usage(self, error: BaseException | None) -> dict[str, Any]:
        outcome = "completed" if error is None else \
            "cancelled" if isinstance(error, _STOPS) else "failed"
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "cached_input_tokens": self.cached_input_tokens, "outcome": outcome,
                "latency": time.monotonic() - self._started,
                "reservation_id": self.decision.reservation_id}


def _messages(fields: dict[str, Any]) -> list[dict[str, str]] | None:
    given = fields.get("messages")
    if given is None:
        return None
    return [m if isinstance(m, dict) else {"role": m.role, "content": m.content}
            for m in given]


class Guard:
    def __init__(self, client: WardenClient, model: str, fields: dict[str, Any]) -> None:
        self._client, self._model, self._fields = client, model, fields
        self._call: _Call | None = None

    def __enter__(self) -> _Call:
        decision = self._client.authorize(self._model, **self._fields)
        if not decision.allowed:
            raise WardenDenied(decision)
        self._call = _Call(decision, _messages(self._fields))
        return self._call

    def __exit__(self, _type: object, error: BaseException | None, _tb: object) -> None:
        call = self._call
        assert call is not None
        if call.decision.fail_open:
            return
        try:
            self._client.record_usage(call.decision.request_id, **call._usage(error))
        except WardenUnavailable:
            if not self._client._s.fail_open:
                raise
            self._client.fail_open_count += 1


class AsyncGuard:
    def __init__(self, client: AsyncWardenClient, model: str, fields: dict[str, Any]) -> None:
        self._client, self._model, self._fields = client, model, fields
        self._call: _Call | None = None

    async def __aenter__(self) -> _Call:
        decision = await self._client.authorize(self._model, **self._fields)
        if not decision.allowed:
            raise WardenDenied(decision)
        self._call = _Call(decision, _messages(self._fields))
        return self._call

    async def __aexit__(self, _type: object, error: BaseException | None, _tb: object) -> None:
        call = self._call
        assert call is not None
        if call.decision.fail_open:
            return
        try:
            # Shielded: a cancelled task still records that its call was cancelled.
            await asyncio.shield(self._client.record_usage(call.decision.request_id,
                                                           **call._usage(error)))
        except WardenUnavailable:
            if not self._client._s.fail_open:
                raise
            self._client.fail_open_count += 1
