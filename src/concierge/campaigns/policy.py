"""The contact policy, checked for every message at send time (not only when it was queued).

In order, a message is

1. **suppressed without consent**: the person's consent on that channel (the profile's
   last-writer-wins register of ``consent`` events) must be granted now; on-site messages need
   none;
2. **suppressed** when the address (or the person, for that channel) is on the suppression list
   (unsubscribe, hard bounce, complaint) or there is no address;
3. **deferred** during quiet hours in the person's time zone (trait ``timezone``, else the
   policy's), to the end of the quiet hours;
4. **suppressed by a cap**: per channel per day, across channels per week (on-site not counted),
   and per campaign (``caps.per_person`` within ``caps.per_days``). Sends reserved but not yet
   confirmed count, so no race inside one worker can exceed a cap; workers serialise per person
   (a transaction-scoped advisory lock on PostgreSQL, the lease on SQLite).

The weekly limit is the smallest of the policy's, the person's own choice (answer
``preferences.max_per_week`` from the preference center), and a learned one: after
``learn_after`` deliveries on a channel, someone who never opened or clicked gets one message a
week, someone who engages with fewer than one in five gets half the limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from concierge.campaigns.definitions import Campaign, ContactPolicy
from concierge.clock import from_us, to_us
from concierge.profiles.doc import DAY_US

PREF_WEEKLY = "preferences.max_per_week"
PREF_CHANNELS = "preferences.channels"


@dataclass(frozen=True)
class Decision:
    verdict: Literal["send", "suppress", "defer"]
    rule: str
    reason: str
    at_us: int | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"decision": self.verdict, "rule": self.rule, "reason": self.reason}
        if self.at_us is not None:
            out["until"] = from_us(self.at_us).isoformat()
        return out


@dataclass(frozen=True)
class Sent:
    """A counted send of the person: when, on which channel, for which campaign."""

    at_us: int
    channel: str
    campaign_id: str


def address_of(channel: str, doc: dict[str, Any], person_id: str) -> str | None:
    traits = doc.get("traits", {})
    if channel == "email":
        reg = traits.get("email")
        return None if reg is None else str(reg[2]).strip().lower()
    if channel == "sms":
        reg = traits.get("phone")
        return None if reg is None else str(reg[2])
    return person_id  # push by external user id; on-site by person


def consented(doc: dict[str, Any], channel: str) -> bool:
    if channel == "onsite":
        return True
    reg = doc.get("consent", {}).get(channel)
    return bool(reg is not None and reg[2])


def weekly_limit(policy: ContactPolicy, doc: dict[str, Any], channel: str) -> tuple[int, str]:
    limit, why = policy.max_per_week, "policy"
    stated = doc.get("answers", {}).get(PREF_WEEKLY)
    if stated is not None:
        try:
            own = max(0, int(stated[2]))
        except (TypeError, ValueError):
            own = None
        if own is not None and own < limit:
            limit, why = own, "the person's own choice"
    if policy.learn_frequency and channel != "onsite":
        counts = doc.get("counts", {})
        delivered = counts.get(f"delivered:{channel}", 0)
        engaged = counts.get(f"open:{channel}", 0) + counts.get(f"click:{channel}", 0)
        if delivered >= policy.learn_after:
            if engaged == 0 and limit > 1:
                limit, why = 1, f"learned: no opens in {delivered} deliveries"
            elif engaged * 5 < delivered and limit > 1:
                limit, why = max(1, limit // 2), f"learned: {engaged} of {delivered} engaged"
    return limit, why


def quiet_until(policy: ContactPolicy, tz: str | None, now_us: int) -> int | None:
    """End of the quiet hours (UTC microseconds) if ``now`` is inside them, else None."""
    start, end = policy.quiet_start_hour, policy.quiet_end_hour
    if start == end:
        return None
    try:
        zone = ZoneInfo(tz or policy.default_timezone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    local = from_us(now_us).astimezone(zone)
    h = local.hour
    quiet = (h >= start or h < end) if start > end else (start <= h < end)
    if not quiet:
        return None
    day = local.date() if h < end else local.date() + timedelta(days=1)
    wake = datetime(day.year, day.month, day.day, end, tzinfo=zone)
    return to_us(wake)


def check(
    policy: ContactPolicy,
    campaign: Campaign,
    *,
    person_id: str,
    doc: dict[str, Any],
    address: str | None,
    suppressed: str | None,
    recent: Sequence[Sent],
    now_us: int,
) -> Decision:
    ch = campaign.channel
    if not consented(doc, ch):
        return Decision("suppress", "consent", f"no consent for {ch} at send time")
    if suppressed is not None:
        return Decision("suppress", "suppression", f"{ch} address suppressed ({suppressed})")
    if address is None:
        return Decision("suppress", "address", f"no {ch} address")
    if ch != "onsite":
        tz_reg = doc.get("traits", {}).get("timezone")
        wake = quiet_until(policy, None if tz_reg is None else str(tz_reg[2]), now_us)
        if wake is not None:
            return Decision("defer", "quiet_hours", "quiet hours in the person's time zone", wake)
    day_ago, week_ago = now_us - DAY_US, now_us - 7 * DAY_US
    per_day = policy.max_per_day.get(ch)
    if per_day is not None:
        n = sum(1 for s in recent if s.channel == ch and s.at_us > day_ago)
        if n >= per_day:
            return Decision("suppress", "cap_day", f"{n} {ch} message(s) in 24 h (cap {per_day})")
    if ch != "onsite":
        limit, why = weekly_limit(policy, doc, ch)
        n = sum(1 for s in recent if s.channel != "onsite" and s.at_us > week_ago)
        if n >= limit:
            return Decision(
                "suppress", "cap_week", f"{n} message(s) in 7 days (cap {limit}: {why})"
            )
    window = now_us - int(campaign.caps.per_days * DAY_US)
    n = sum(1 for s in recent if s.campaign_id == campaign.campaign_id and s.at_us > window)
    if n >= campaign.caps.per_person:
        return Decision(
            "suppress",
            "cap_campaign",
            f"{n} message(s) of this campaign in {campaign.caps.per_days:g} days "
            f"(cap {campaign.caps.per_person})",
        )
    return Decision("send", "ok", "consent, address, quiet hours and caps allow it")
