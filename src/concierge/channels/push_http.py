"""Push notifications through an HTTP provider, addressed by external user id.

``POST {"external_user_id": person, "title": subject, "body": text, "data": {...},
"reference": key}`` — the shape of OneSignal/Airship-style APIs that map a user id to its
devices, so Concierge keeps no device tokens.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from concierge.channels.base import ChannelName, DeliveryResult, Message
from concierge.channels.http_provider import HttpProvider, HttpProviderConfig


class PushChannel:
    name: ChannelName = "push"

    def __init__(
        self, config: HttpProviderConfig, *, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.http = HttpProvider(config, sleep=sleep)

    def send(self, message: Message) -> DeliveryResult:
        return self.http.post(
            {
                "external_user_id": message.to or message.person_id,
                "title": message.subject,
                "body": message.text,
                "data": message.data,
                "reference": message.key,
            },
            key=message.key,
        )

    def close(self) -> None:
        self.http.close()
