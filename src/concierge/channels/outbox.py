"""The outbox: every send recorded once, keyed by (campaign, step, person, occasion).

The key is the SHA-256 of the four parts; a unique constraint on them makes a second record of
the same send impossible, whatever retries or restarts happen. Row states:

``sending``    reserved and content fixed, not yet complete at the provider
``committed``  (SMTP) marked durable just before the final dot: counts as sent, never resent
``sent``       the provider accepted it
``retry``      a transient failure; the due queue tries again with the same key and content
``failed``     a permanent failure
``suppressed`` not sent: the contact policy, the address or arbitration said no (see explain)
``held``       not sent: the template could not be filled (see explain)
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from sqlalchemy import Connection, select, update

from concierge.store import tables as t

COUNTED = ("sending", "committed", "sent", "retry")  # what frequency caps count
FINAL = ("sent", "failed", "suppressed", "held")


def outbox_key(campaign_id: str, step: str, person_id: str, occasion: str) -> str:
    return hashlib.sha256(
        "\x1f".join((campaign_id, step, person_id, occasion)).encode()
    ).hexdigest()


def get(conn: Connection, key: str) -> dict[str, Any] | None:
    row = conn.execute(select(t.outbox).where(t.outbox.c.outbox_key == key)).first()
    return None if row is None else dict(row._mapping)


def get_many(conn: Connection, keys: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for i in range(0, len(keys), 500):
        for row in conn.execute(
            select(t.outbox).where(t.outbox.c.outbox_key.in_(keys[i : i + 500]))
        ):
            out[row.outbox_key] = dict(row._mapping)
    return out


_COLUMNS = [c.name for c in t.outbox.columns]


def record_many(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert many rows given as :func:`record` keyword arguments (one statement, run by the
    driver's ``executemany`` on plain tuples: SQLAlchemy's per-row parameter processing was a
    fifth of writing a broadcast's outbox, measured)."""
    if not rows:
        return
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    sql = (
        f"INSERT INTO {t.outbox.name} ({', '.join(_COLUMNS)}) "
        f"VALUES ({', '.join([mark] * len(_COLUMNS))})"
    )
    values = []
    for r in rows:
        row = _row(**r)
        values.append(tuple(row[c] for c in _COLUMNS))
    conn.exec_driver_sql(sql, values)


def _row(
    *,
    key: str,
    campaign_id: str,
    step: str,
    person_id: str,
    occasion: str,
    channel: str,
    status: str,
    explain: dict[str, Any],
    now_us: int,
    address: str | None = None,
    subject: str | None = None,
    text: str | None = None,
    html: str | None = None,
    message_id: str | None = None,
    lease_owner: str | None = None,
    lease_until_us: int | None = None,
) -> dict[str, Any]:
    return {
        "outbox_key": key,
        "campaign_id": campaign_id,
        "step": step,
        "person_id": person_id,
        "occasion": occasion,
        "channel": channel,
        "address": address,
        "status": status,
        "attempts": 1 if status == "sending" else 0,
        "message_id": message_id,
        "subject": subject,
        "body_text": text,
        "body_html": html,
        "provider_id": None,
        "error": None,
        "explain": orjson.dumps(explain).decode(),
        "lease_owner": lease_owner,
        "lease_until_us": lease_until_us,
        "created_us": now_us,
        "updated_us": now_us,
        "sent_us": None,
    }


def record(
    conn: Connection,
    *,
    key: str,
    campaign_id: str,
    step: str,
    person_id: str,
    occasion: str,
    channel: str,
    status: str,
    explain: dict[str, Any],
    now_us: int,
    address: str | None = None,
    subject: str | None = None,
    text: str | None = None,
    html: str | None = None,
    message_id: str | None = None,
    lease_owner: str | None = None,
    lease_until_us: int | None = None,
) -> None:
    """Insert the row (the caller checked there is none, in the same transaction; the unique
    constraint refuses a duplicate anyway)."""
    row = _row(
        key=key,
        campaign_id=campaign_id,
        step=step,
        person_id=person_id,
        occasion=occasion,
        channel=channel,
        status=status,
        explain=explain,
        now_us=now_us,
        address=address,
        subject=subject,
        text=text,
        html=html,
        message_id=message_id,
        lease_owner=lease_owner,
        lease_until_us=lease_until_us,
    )
    conn.execute(t.outbox.insert().values(**row))


def mark(conn: Connection, key: str, status: str, *, now_us: int, **values: Any) -> None:
    extra = dict(values)
    if status in ("sent", "committed") and "sent_us" not in extra:
        extra["sent_us"] = now_us
    conn.execute(
        update(t.outbox)
        .where(t.outbox.c.outbox_key == key)
        .values(status=status, updated_us=now_us, **extra)
    )


def mark_many(conn: Connection, keys: list[str], status: str, *, now_us: int) -> None:
    if not keys:
        return
    values: dict[str, Any] = {"status": status, "updated_us": now_us}
    if status in ("sent", "committed"):
        values["sent_us"] = now_us
    for i in range(0, len(keys), 500):
        conn.execute(
            update(t.outbox).where(t.outbox.c.outbox_key.in_(keys[i : i + 500])).values(**values)
        )
