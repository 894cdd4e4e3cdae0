"""API keys with roles. Secrets are shown once and stored only as SHA-256 digests."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Connection, select, update

from concierge.errors import InputError, NotFoundError
from concierge.store import tables as t

Role = Literal["ingest", "read", "admin"]
ROLES: tuple[Role, ...] = ("ingest", "read", "admin")

# what each role may do; admin may do everything
GRANTS: dict[Role, frozenset[str]] = {
    "ingest": frozenset({"ingest"}),
    "read": frozenset({"read"}),
    "admin": frozenset({"ingest", "read", "admin"}),
}


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    name: str
    role: Role


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create(
    conn: Connection, *, name: str, role: str, now_us: int, secret: str | None = None
) -> tuple[ApiKey, str]:
    if role not in ROLES:
        raise InputError.one("role", f"must be one of {', '.join(ROLES)}")
    if not name.strip():
        raise InputError.one("name", "must not be empty")
    secret = secret or "ck_" + secrets.token_urlsafe(32)
    if len(secret) < 16:
        raise InputError.one("secret", "must be at least 16 characters")
    key_id = secrets.token_hex(8)
    conn.execute(
        t.api_keys.insert().values(
            key_id=key_id, name=name, role=role, secret_sha256=digest(secret), created_us=now_us
        )
    )
    return ApiKey(key_id, name, role), secret


def ensure(conn: Connection, *, name: str, role: str, secret: str, now_us: int) -> ApiKey:
    """Create the key with this secret unless it exists (for bootstrap and the demo)."""
    found = lookup(conn, secret)
    if found is not None:
        return found
    key, _ = create(conn, name=name, role=role, now_us=now_us, secret=secret)
    return key


def lookup(conn: Connection, secret: str) -> ApiKey | None:
    row = conn.execute(
        select(t.api_keys.c.key_id, t.api_keys.c.name, t.api_keys.c.role).where(
            t.api_keys.c.secret_sha256 == digest(secret), t.api_keys.c.revoked_us.is_(None)
        )
    ).first()
    return None if row is None else ApiKey(row.key_id, row.name, row.role)


def list_keys(conn: Connection) -> list[dict[str, object]]:
    rows = conn.execute(
        select(
            t.api_keys.c.key_id,
            t.api_keys.c.name,
            t.api_keys.c.role,
            t.api_keys.c.created_us,
            t.api_keys.c.revoked_us,
        ).order_by(t.api_keys.c.created_us)
    )
    return [dict(r._mapping) for r in rows]


def revoke(conn: Connection, key_id: str, *, now_us: int) -> None:
    n = conn.execute(
        update(t.api_keys)
        .where(t.api_keys.c.key_id == key_id, t.api_keys.c.revoked_us.is_(None))
        .values(revoked_us=now_us)
    ).rowcount
    if n == 0:
        raise NotFoundError("api key", key_id)
