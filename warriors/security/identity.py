"""Roles, API keys and the identity a request acts as. Pure: no I/O.

A key is `wk_` followed by 43 URL-safe characters (32 random bytes from `secrets`). Only
its SHA-256 is stored: a key carries 256 bits of entropy, so a slow password hash
(argon2, bcrypt) would add nothing against guessing and would cost milliseconds on every
request; the digest is the lookup key, so no comparison of secrets happens in Python.
"""

import hashlib
import secrets
from dataclasses import dataclass
from enum import StrEnum

KEY_PREFIX = "wk_"
_KEY_BYTES = 32
_KEY_LENGTH = len(KEY_PREFIX) + 43  # base64url of 32 bytes, unpadded


class Role(StrEnum):
    """reader < writer < operator: each may do what the ones before it may. `monitor` sits
    apart, below operator only: what a metrics scraper or a status page needs (metrics, the
    projections' status, readiness details), and neither warriors' data nor any write."""

    READER = "reader"  # reads (open to anyone unless READ_AUTH=required)
    WRITER = "writer"  # commands: create, change, delete
    MONITOR = "monitor"  # metrics, projections' status, readiness details
    OPERATOR = "operator"  # everything: projections' actions, erasure, request metadata

    def allows(self, needed: "Role") -> bool:
        return needed in _ALLOWS[self]

    def allowed_by(self) -> list["Role"]:
        """The roles that may do what this one may, this one first."""
        return [self, *(role for role in Role if role is not self and role.allows(self))]


_ALLOWS: dict[Role, frozenset[Role]] = {
    Role.READER: frozenset({Role.READER}),
    Role.WRITER: frozenset({Role.READER, Role.WRITER}),
    Role.MONITOR: frozenset({Role.MONITOR}),
    Role.OPERATOR: frozenset(Role),
}


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a request acts as. `subject` is what events record as their `user_id`."""

    subject: str
    role: Role | None  # None: anonymous

    def allows(self, needed: Role) -> bool:
        return self.role is not None and self.role.allows(needed)


ANONYMOUS = Identity("anonymous", None)


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(_KEY_BYTES)


def looks_like_key(text: str) -> bool:
    """The shape of a key this platform issues (checked before any lookup)."""
    return len(text) == _KEY_LENGTH and text.startswith(KEY_PREFIX) and text.isascii()


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def key_subject(key_id: str) -> str:
    """The identity an API key's commands are recorded under."""
    return f"api-key:{key_id}"
