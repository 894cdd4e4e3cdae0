"""On-site / in-app messages: "sent" means stored for the site to pull through the API.

The insert is keyed by the outbox key (``ON CONFLICT DO NOTHING``), so this channel is exactly
once by construction: a resend after a crash finds the row already there.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import select, update

from concierge.channels.base import ChannelName, DeliveryResult, Message
from concierge.store import tables as t
from concierge.store.engine import Store


class OnsiteChannel:
    name: ChannelName = "onsite"

    def __init__(self, store: Store, *, now_us: Any, ttl_days: float = 14.0) -> None:
        self.store = store
        self._now_us = now_us  # () -> int
        self.ttl_us = int(ttl_days * 86_400_000_000)

    def send(self, message: Message) -> DeliveryResult:
        now = int(self._now_us())
        content = {
            "title": message.subject,
            "text": message.text,
            "html": message.html,
            **message.data,
        }
        with self.store.write() as conn:
            conn.execute(
                self.store.insert(t.onsite_messages)
                .values(
                    outbox_key=message.key,
                    person_id=message.person_id,
                    campaign_id=message.campaign_id,
                    content=orjson.dumps(content).decode(),
                    created_us=now,
                    expires_us=now + self.ttl_us,
                )
                .on_conflict_do_nothing(index_elements=["outbox_key"])
            )
        return DeliveryResult("sent", provider_id=message.key)

    def close(self) -> None:
        return None


def pull(store: Store, person_id: str, *, now_us: int, mark_seen: bool) -> list[dict[str, Any]]:
    """The person's unexpired on-site messages, newest first (and mark them seen)."""
    m = t.onsite_messages
    with store.write() if mark_seen else store.read() as conn:
        rows = conn.execute(
            select(m.c.outbox_key, m.c.campaign_id, m.c.content, m.c.created_us, m.c.seen_us)
            .where(
                m.c.person_id == person_id, (m.c.expires_us.is_(None)) | (m.c.expires_us > now_us)
            )
            .order_by(m.c.created_us.desc())
            .limit(50)
        ).all()
        if mark_seen and rows:
            conn.execute(
                update(m)
                .where(m.c.outbox_key.in_([r[0] for r in rows]), m.c.seen_us.is_(None))
                .values(seen_us=now_us)
            )
    return [
        {
            "message_id": key,
            "campaign_id": cid,
            "created_us": created,
            "seen": seen is not None,
            **orjson.loads(content),
        }
        for key, cid, content, created, seen in rows
    ]
