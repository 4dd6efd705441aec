"""API keys: `wk_<prefix>_<secret>`. The prefix finds the row; the database holds only
HMAC-SHA256(pepper, key), compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

from warden.engine import Identity
from warden.errors import WardenError

_KEY = re.compile(r"^wk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class KeyRecord:
    id: str
    org_id: str
    app_id: str
    user_id: str
    team_ids: tuple[str, ...]  # the app's team and the key's user's teams
    hash: bytes
    allowed_models: tuple[str, ...]
    expire_time: datetime | None
    revoke_time: datetime | None  # may lie ahead: the end of a rotation's grace period

    @cached_property
    def identity(self) -> Identity:
        """The scope chain of the key's calls that name no other end user: made once per
        record, so that every such call looks its compiled set up by the same object."""
        return Identity(self.org_id, self.app_id, self.id, self.user_id, self.team_ids,
                        self.allowed_models)


def new_key(pepper: bytes) -> tuple[str, str, bytes]:
    """Return (plaintext, prefix, hash)."""
    prefix = secrets.token_hex(6)
    plaintext = f"wk_{prefix}_{secrets.token_urlsafe(32)}"
    return plaintext, prefix, key_hash(pepper, plaintext)


def key_hash(pepper: bytes, plaintext: str) -> bytes:
    return hmac.new(pepper, plaintext.encode(), hashlib.sha256).digest()


def key_prefix(plaintext: str) -> str | None:
    match = _KEY.match(plaintext)
    return match.group(1) if match else None


def _unauthenticated(reason: str, message: str) -> WardenError:
    return WardenError("UNAUTHENTICATED", reason, message)


def authenticate(record: KeyRecord | None, plaintext: str, pepper: bytes,
                 clock: Callable[[], datetime]) -> KeyRecord:
    """The key's record if `plaintext` is a live key now (the database's clock, read only
    for a key that can end)."""
    if record is None or not hmac.compare_digest(record.hash, key_hash(pepper, plaintext)):
        raise _unauthenticated("API_KEY_INVALID", "unknown API key")
    if record.revoke_time is None and record.expire_time is None:
        return record
    now = clock()
    if record.revoke_time is not None and record.revoke_time <= now:
        raise _unauthenticated("API_KEY_REVOKED", f"API key {record.id} was revoked")
    if record.expire_time is not None and record.expire_time <= now:
        raise _unauthenticated("API_KEY_EXPIRED", f"API key {record.id} has expired")
    return record
