"""SMS through an HTTP provider: ``POST {"to": "+E.164", "text": ..., "reference": key}``.

The body shape is the common denominator of SMS APIs (Twilio's ``To``/``Body``, Vonage's
``to``/``text``); point ``endpoint`` at the provider or at a small relay that maps the fields.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from concierge.channels.base import ChannelName, DeliveryResult, Message
from concierge.channels.http_provider import HttpProvider, HttpProviderConfig

SMS_MAX = 1600  # ten concatenated segments


class SmsChannel:
    name: ChannelName = "sms"

    def __init__(
        self, config: HttpProviderConfig, *, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.http = HttpProvider(config, sleep=sleep)

    def send(self, message: Message) -> DeliveryResult:
        if not message.to or not message.to.startswith("+"):
            return DeliveryResult("failed", error="no E.164 phone number")
        if len(message.text) > SMS_MAX:
            return DeliveryResult("failed", error=f"text longer than {SMS_MAX} characters")
        return self.http.post(
            {"to": message.to, "text": message.text, "reference": message.key}, key=message.key
        )

    def close(self) -> None:
        self.http.close()
