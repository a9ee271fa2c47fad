"""API keys: create, list, revoke, and resolve a presented key to its owner.

A key is shown once, at creation; the database keeps only its SHA-256. Keys are long
random strings, so a plain hash (not a slow password hash) is the right tool.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from core.db.models import ApiKey, utcnow
from core.db.session import session_scope
from core.ids import resolve_prefix

KEY_PREFIX = "bp_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class NewKey:
    id: str
    owner: str
    key: str
    webhook_secret: str


@dataclass(frozen=True)
class KeyInfo:
    id: str
    owner: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class Principal:
    """Who a request acts for."""

    owner: str
    key_id: str | None


def create_key(owner: str, url: str | None = None) -> NewKey:
    if not owner.strip():
        raise ValueError("owner must not be empty")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    secret = "whsec_" + secrets.token_urlsafe(32)
    row = ApiKey(owner=owner, prefix=key[:10], key_hash=hash_key(key), webhook_secret=secret)
    with session_scope(url) as s:
        s.add(row)
    return NewKey(id=row.id, owner=owner, key=key, webhook_secret=secret)


def list_keys(url: str | None = None) -> list[KeyInfo]:
    with session_scope(url) as s:
        rows = s.scalars(select(ApiKey).order_by(ApiKey.created_at))
        return [KeyInfo(r.id, r.owner, r.prefix, r.created_at, r.revoked_at) for r in rows]


def revoke_key(key_id: str, url: str | None = None) -> str | None:
    """Revoke by id, or by a unique prefix of it (6 characters or more); the id revoked, or
    None when no such key (revoking twice is fine).

    Raises:
        AmbiguousId: the prefix begins several keys' ids.
    """
    with session_scope(url) as s:
        row = s.get(ApiKey, resolve_prefix(s, ApiKey.__table__, key_id, kind="key"))
        if row is None:
            return None
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        return row.id


def resolve_key(key: str, url: str | None = None) -> Principal | None:
    """The principal of a presented key, or None when unknown or revoked."""
    with session_scope(url) as s:
        row = s.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key)))
        if row is None or row.revoked_at is not None:
            return None
        return Principal(owner=row.owner, key_id=row.id)


def webhook_secret_of(key_id: str, url: str | None = None) -> str | None:
    """The webhook secret of the key ``key_id`` (the key that submitted a run)."""
    with session_scope(url) as s:
        return s.scalar(select(ApiKey.webhook_secret).where(ApiKey.id == key_id))
