"""Domain errors, free of gRPC: the API layer maps `code` (a grpc.StatusCode name) to a status
and adds the rich details (BadRequest, ErrorInfo, RetryInfo)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class WardenError(Exception):
    code: str  # a grpc.StatusCode name, e.g. "INVALID_ARGUMENT"
    reason: str  # a warden.v1.Reason name without its prefix, e.g. "API_KEY_REVOKED"
    message: str
    violations: list[tuple[str, str]] = field(default_factory=list)  # (field path, description)
    retry_after_seconds: float | None = None

    def __str__(self) -> str:
        return self.message


def invalid(violations: list[tuple[str, str]]) -> WardenError:
    fields = ", ".join(f for f, _ in violations)
    return WardenError("INVALID_ARGUMENT", "INVALID_ARGUMENT",
                       f"invalid request: {fields}", violations)


def not_found(what: str) -> WardenError:
    return WardenError("NOT_FOUND", "NOT_FOUND", f"{what} not found")


def already_exists(what: str) -> WardenError:
    return WardenError("ALREADY_EXISTS", "ALREADY_EXISTS", f"{what} already exists")


def unimplemented(what: str) -> WardenError:
    return WardenError("UNIMPLEMENTED", "NOT_IMPLEMENTED", f"{what} is not implemented yet")


class StartupError(RuntimeError):
    """Warden cannot start; the message says why and what to do."""


class StoreUnavailable(Exception):
    """A store could not be reached (a connection lost or refused, a timeout): the same call
    may succeed later. Store implementations raise it in place of their driver's errors, so
    that the rest of Warden never needs to know which driver that is."""


class StoreRefused(Exception):
    """A store refused a write for a value in it: the same write would fail on every retry."""
