"""Journeys as data: send, wait, branch on an open, split, goal; positions durable in the due
queue; validated at creation."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest

from campaign_data import cart_campaign, customer, iso, store_with_catalog
from concierge import Concierge
from concierge.channels.smtp import SmtpChannel, SmtpConfig
from concierge.clock import FrozenClock
from concierge.errors import InputError
from delivery_servers import smtp_server

REMINDER = {
    "subject": "Still there, {{ first_name }}?",
    "text": "A last look",
    "variables": {"first_name": {"source": "traits.first_name", "fallback": "friend"}},
}


def journey(**over: Any) -> dict[str, Any]:
    body = cart_campaign(
        campaign_id="flow",
        trigger={"on": "cart_abandonment", "delay_minutes": 0, "exit_on": []},
        caps={"per_person": 5, "per_days": 7},
        journey={
            "goal": ["purchase"],
            "steps": [
                {"id": "first", "type": "send", "next": "pause"},
                {"id": "pause", "type": "wait", "minutes": 1440, "next": "opened"},
                {
                    "id": "opened",
                    "type": "branch",
                    "check": "opened",
                    "of_step": "first",
                    "then": "done",
                    "otherwise": "again",
                },
                {"id": "again", "type": "send", "template": REMINDER},
                {"id": "done", "type": "exit"},
            ],
        },
    )
    body.update(over)
    return body


def _run(cg: Concierge, clock: FrozenClock, port: int) -> Any:
    w = cg.worker({"email": SmtpChannel(SmtpConfig(port=port))})
    try:
        return w.drain()
    finally:
        w.close()  # releases the SQLite lease for the next worker


def test_branch_on_open_and_goal(cg: Concierge, clock: FrozenClock) -> None:
    store_with_catalog(cg)
    for cid in ("ann", "bob", "cyd"):
        cg.ingest(customer(cid, clock))
    cg.set_contact_policy({"quiet_start_hour": 0, "quiet_end_hour": 0})
    cg.save_campaign(journey())
    with smtp_server() as (box, port):
        for cid in ("ann", "bob", "cyd"):
            cg.ingest(
                [
                    {
                        "type": "add_to_cart",
                        "customer_id": cid,
                        "product_id": "p1",
                        "timestamp": iso(clock),
                    }
                ]
            )
        assert _run(cg, clock, port).sent == 3
        first = {str(m["To"]): m for m in box.messages}
        html = first["ann@example.com"].get_body(("html",)).get_content()
        pixel = re.search(r"/t/o/([^\"]+)\.gif", html).group(1)
        assert cg.track("o", pixel) is not None  # ann opens
        cg.ingest(
            [
                {
                    "type": "purchase",
                    "customer_id": "cyd",
                    "order_id": "o1",
                    "currency": "EUR",
                    "timestamp": iso(clock, 5),
                    "lines": [{"product_id": "p1", "quantity": 1, "unit_price": 120.0}],
                }
            ]
        )
        clock.at += timedelta(hours=23)
        assert _run(cg, clock, port).sent == 0  # everyone waits a day
        clock.at += timedelta(hours=2)
        report = _run(cg, clock, port)
        assert report.sent == 1
        assert [str(m["To"]) for m in box.messages[3:]] == ["bob@example.com"]
        assert box.messages[3]["Subject"] == "Still there, Ann?"
    bob = {m["explain"]["why"]["journey"]["step"]: m for m in cg.customer("bob")["messages"]}
    assert bob["again"]["explain"]["why"]["journey"]["branch"] == {"opened": False}
    assert bob["again"]["explain"]["why"]["journey"]["path"] == ["first", "pause", "opened"]
    outcomes = {r["person_id"]: r["outcome"] for r in _due(cg) if r["step"] in ("pause", "opened")}
    assert outcomes["cyd"] == "goal:purchase"


def _due(cg: Concierge) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from concierge.store import tables as t

    with cg.store.read() as conn:
        return [dict(r._mapping) for r in conn.execute(select(t.due_queue))]


def test_split_is_stable_and_explained(cg: Concierge, clock: FrozenClock) -> None:
    store_with_catalog(cg)
    people = [f"c{i:02d}" for i in range(40)]
    for cid in people:
        cg.ingest(customer(cid, clock))
    cg.set_contact_policy({"quiet_start_hour": 0, "quiet_end_hour": 0})
    body = journey(
        journey={
            "steps": [
                {"id": "ab", "type": "split", "percent": 50, "then": "a", "otherwise": "b"},
                {"id": "a", "type": "send"},
                {"id": "b", "type": "send", "template": REMINDER},
            ]
        }
    )
    cg.save_campaign(body)
    with smtp_server() as (box, port):
        cg.ingest(
            [
                {
                    "type": "add_to_cart",
                    "customer_id": cid,
                    "product_id": "p1",
                    "timestamp": iso(clock),
                }
                for cid in people
            ]
        )
        _run(cg, clock, port)
        _run(cg, clock, port)
    arms = {}
    for cid in people:
        [m] = cg.customer(cid)["messages"]
        arms[cid] = m["explain"]["why"]["journey"]["split"]["ab"]
        assert m["status"] == "sent"
    assert 8 <= sum(a == "then" for a in arms.values()) <= 32
    assert len(box.messages) == 40


@pytest.mark.parametrize(
    ("steps", "field"),
    [
        (
            [
                {"id": "a", "type": "wait", "minutes": 5, "next": "b"},
                {"id": "b", "type": "wait", "minutes": 5, "next": "a"},
            ],
            "journey.steps",
        ),
        ([{"id": "a", "type": "send", "next": "nowhere"}], "journey.steps.0"),
        ([{"id": "a", "type": "wait"}], "journey.steps.0.minutes"),
        (
            [
                {
                    "id": "a",
                    "type": "branch",
                    "check": "opened",
                    "of_step": "x",
                    "then": "a",
                    "otherwise": "a",
                }
            ],
            "journey.steps.0.of_step",
        ),
    ],
)
def test_bad_journeys_are_refused_naming_the_field(
    cg: Concierge, steps: list[dict[str, Any]], field: str
) -> None:
    with pytest.raises(InputError) as err:
        cg.save_campaign(journey(journey={"steps": steps}))
    assert err.value.errors[0].field == field
    assert cg.campaigns() == []


def test_people_in_a_journey_keep_the_version_they_entered_with(
    cg: Concierge, clock: FrozenClock
) -> None:
    """Editing a journey moves new entrants to the new version; people already inside finish
    the version they entered with (its steps and templates), and the explain names it. Pausing
    the campaign still stops everyone."""
    store_with_catalog(cg)
    for cid in ("ann", "bob", "cyd"):
        cg.ingest(customer(cid, clock))
    cg.set_contact_policy(
        {"quiet_start_hour": 0, "quiet_end_hour": 0, "max_per_day": {"email": 5}, "max_per_week": 9}
    )
    v1 = journey(
        journey={
            "steps": [
                {"id": "first", "type": "send", "next": "pause"},
                {"id": "pause", "type": "wait", "minutes": 1440, "next": "again"},
                {"id": "again", "type": "send", "template": REMINDER},
            ]
        }
    )
    assert cg.save_campaign(v1)["version"] == 1

    def cart(cid: str) -> None:
        event = {"type": "add_to_cart", "customer_id": cid, "product_id": "p1"}
        cg.ingest([{**event, "timestamp": iso(clock)}])

    later = {**REMINDER, "subject": "New version, {{ first_name }}"}
    v2 = journey(
        journey={
            "steps": [
                {"id": "first", "type": "send", "next": "short"},
                {"id": "short", "type": "wait", "minutes": 60, "next": "later"},
                {"id": "later", "type": "send", "template": later},
            ]
        }
    )
    with smtp_server() as (box, port):
        cart("ann")
        assert _run(cg, clock, port).sent == 1  # ann: v1's first send, now waiting a day
        assert cg.save_campaign(v2)["version"] == 2
        cart("bob")
        assert _run(cg, clock, port).sent == 1  # bob: v2's first send, waiting an hour
        clock.at += timedelta(hours=2)
        assert _run(cg, clock, port).sent == 1
        assert [str(m["To"]) for m in box.messages[2:]] == ["bob@example.com"]
        assert str(box.messages[2]["Subject"]).startswith("New version")
        clock.at += timedelta(hours=23)
        assert _run(cg, clock, port).sent == 1  # ann finishes v1: its step and template
        assert [str(m["To"]) for m in box.messages[3:]] == ["ann@example.com"]
        assert str(box.messages[3]["Subject"]).startswith("Still there")
        # cyd enters v2; pausing stops her mid-journey, whatever her version
        cart("cyd")
        assert _run(cg, clock, port).sent == 1
        cg.set_campaign_status("flow", "paused")
        clock.at += timedelta(hours=2)
        assert _run(cg, clock, port).sent == 0
    ann = {m["explain"]["why"]["journey"]["step"]: m for m in cg.customer("ann")["messages"]}
    bob = {m["explain"]["why"]["journey"]["step"]: m for m in cg.customer("bob")["messages"]}
    assert set(ann) == {"main", "again"} and set(bob) == {"main", "later"}
    assert ann["again"]["explain"]["campaign"]["version"] == 1
    assert bob["later"]["explain"]["campaign"]["version"] == 2
    positions = {(r["person_id"], r["step"]): r["outcome"] for r in _due(cg)}
    assert positions[("cyd", "later")] == "campaign_paused"
