"""What every channel shares: the message to deliver and the result of a delivery.

A channel *reports*; it never raises for a delivery problem. Its answer is a
:class:`DeliveryResult` whose ``status`` tells the worker what to do next:

* ``sent`` — the provider accepted the message (``provider_id`` is its reference);
* ``retryable`` — a transient problem (connection refused, timeout, 4xx SMTP reply, HTTP 429 or
  5xx): the due queue tries again later with backoff;
* ``failed`` — a permanent refusal (5xx SMTP reply, HTTP 4xx): not retried;
* ``suppressed`` — the provider refuses the address itself (hard bounce at RCPT, a provider's
  suppression list): not retried, and the address is suppressed for that channel.

Every message carries its ``key``, the outbox key (SHA-256 of campaign, step, person and
occasion). Providers see it — SMTP as the ``Message-ID``, HTTP providers as the
``Idempotency-Key`` header — so a resend after an uncertain crash can be recognised as the same
message at the other end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Status = Literal["sent", "failed", "retryable", "suppressed"]
ChannelName = Literal["email", "sms", "push", "onsite"]


@dataclass(frozen=True)
class Message:
    """One rendered message for one person on one channel."""

    key: str  # the outbox key: the idempotency key shown to the provider
    channel: ChannelName
    person_id: str
    campaign_id: str
    to: str | None  # email address, E.164 phone, push user id; None on site
    subject: str = ""
    text: str = ""
    html: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)  # push/on-site payload extras


@dataclass(frozen=True)
class DeliveryResult:
    status: Status
    provider_id: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "sent"


@runtime_checkable
class Channel(Protocol):
    """Delivers one message at a time; keeps its connections open between calls."""

    name: ChannelName

    def send(self, message: Message) -> DeliveryResult: ...

    def close(self) -> None: ...


@runtime_checkable
class TwoPhaseChannel(Channel, Protocol):
    """A channel whose provider completes a message only on a last, separate step (SMTP: the
    final ``.`` of DATA). The worker marks the outbox row *committed* between :meth:`prepare`
    and :meth:`finish`, which turns a crash before the mark into a clean resend (the provider
    discarded the incomplete message) and a crash after it into at most once (see
    :mod:`concierge.channels.smtp`)."""

    def prepare(self, messages: Sequence[Message]) -> list[DeliveryResult | None]:
        """Transmit everything but the completing step; ``None`` where ready to finish."""
        ...

    def finish(self) -> list[DeliveryResult]:
        """Complete every prepared message (in :meth:`prepare` order of the ``None`` entries)."""
        ...

    def abort(self) -> None:
        """Drop every prepared message (the provider discards them)."""
        ...
