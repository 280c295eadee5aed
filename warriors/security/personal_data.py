"""Crypto-shredding of a warrior's personal data (name, date of birth): pure crypto, no I/O.

Each warrior has a data key of its own (256-bit AES-GCM). Events carry its personal
fields sealed with that key; the key is stored wrapped (AES-GCM again) by the master key,
which lives only in the services' environment (PERSONAL_DATA_KEY or
PERSONAL_DATA_KEY_FILE). Destroying a warrior's wrapped key makes every sealed copy of
its personal data, in the store, on the topic and in backups, unreadable for good.

The library is `cryptography` (pyca): a maintained binding to OpenSSL's AEAD, with the
nonce and tag handling done for us. Both seals bind the warrior's id as associated data,
so a ciphertext or a wrapped key copied onto another warrior does not open.
"""

import base64
import hashlib
import os
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
_NONCE_BYTES = 12


class PersonalDataError(Exception):
    """Personal data that cannot be opened: a wrong master key or a damaged ciphertext."""


def parse_master_key(text: str) -> bytes:
    """A master key as configured: 32 bytes in standard or URL-safe base64 (`warriors
    personal-key new` prints one)."""
    cleaned = text.strip()
    try:
        raw = base64.urlsafe_b64decode(cleaned.replace("+", "-").replace("/", "_") + "==")
    except ValueError as exc:
        raise ValueError("the personal data master key must be base64 (32 bytes)") from exc
    if len(raw) != KEY_BYTES:
        raise ValueError(f"the personal data master key must be {KEY_BYTES} bytes, not {len(raw)}")
    return raw


def new_master_key_text() -> str:
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode()


@dataclass(frozen=True, slots=True)
class MasterKey:
    """Wraps and unwraps the warriors' data keys. `key_id` names the key without
    revealing it (stored next to each wrapped key: a service started with another master
    key says so instead of failing obscurely)."""

    secret: bytes

    @property
    def key_id(self) -> str:
        return hashlib.sha256(b"warriors-master-key:" + self.secret).hexdigest()[:16]

    def wrap(self, warrior_id: UUID, data_key: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + AESGCM(self.secret).encrypt(nonce, data_key, warrior_id.bytes)

    def unwrap(self, warrior_id: UUID, wrapped: bytes, key_id: str) -> bytes:
        if key_id != self.key_id:
            raise PersonalDataError(
                f"warrior {warrior_id}'s key was wrapped by master key {key_id}; this service has"
                f" {self.key_id} (check PERSONAL_DATA_KEY / PERSONAL_DATA_KEY_FILE)"
            )
        try:
            return AESGCM(self.secret).decrypt(
                wrapped[:_NONCE_BYTES], wrapped[_NONCE_BYTES:], warrior_id.bytes
            )
        except InvalidTag as exc:
            raise PersonalDataError(f"warrior {warrior_id}'s wrapped key does not open") from exc

    def __repr__(self) -> str:  # never print the secret
        return f"MasterKey(key_id={self.key_id!r})"


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def seal(data_key: bytes, warrior_id: UUID, fields: dict[str, Any]) -> str:
    """`fields` as JSON, encrypted: base64 of nonce + ciphertext + tag."""
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(data_key).encrypt(nonce, orjson.dumps(fields), warrior_id.bytes)
    return base64.b64encode(nonce + sealed).decode()


def unseal(data_key: bytes, warrior_id: UUID, sealed: str) -> dict[str, Any]:
    try:
        raw = base64.b64decode(sealed, validate=True)
        fields: dict[str, Any] = orjson.loads(
            AESGCM(data_key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], warrior_id.bytes)
        )
    except (InvalidTag, ValueError) as exc:
        raise PersonalDataError(f"warrior {warrior_id}'s personal data does not open") from exc
    return fields
