"""The Python client of Warden, the LLM policy sidecar.

    from warden_client import WardenClient

    with WardenClient(api_key=key) as warden, warden.guard("chat", messages=msgs) as call:
        answer = llm(call.model, messages=call.messages, max_tokens=call.max_output_tokens)
        call.used(answer.usage.prompt_tokens, answer.usage.completion_tokens)

`AsyncWardenClient` has the same methods for asyncio. The generated stubs of the data plane
are in `warden_client.v1`.
"""

from warden_client._client import AsyncWardenClient, WardenClient
from warden_client._decision import Decision
from warden_client._errors import (
    WardenDeadlineExceeded,
    WardenDenied,
    WardenError,
    WardenInvalidArgument,
    WardenPermissionDenied,
    WardenUnauthenticated,
    WardenUnavailable,
)
from warden_client._guard import AsyncGuard, Guard

__version__ = "0.1.0"

__all__ = [
    "AsyncGuard",
    "AsyncWardenClient",
    "Decision",
    "Guard",
    "WardenClient",
    "WardenDeadlineExceeded",
    "WardenDenied",
    "WardenError",
    "WardenInvalidArgument",
    "WardenPermissionDenied",
    "WardenUnauthenticated",
    "WardenUnavailable",
]
