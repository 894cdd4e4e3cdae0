"""What the facade's campaign methods do: campaign CRUD, preview, preflight, broadcasts,
tracking hits, provider feedback, the preference center, on-site pulls, the message history.

The facade keeps one thin method per operation; the logic lives here, over a
:class:`~concierge.facade.Concierge`.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import orjson
from sqlalchemy import select

from concierge.campaigns import audiences, due_queue, service
from concierge.campaigns.definitions import AudienceSpec, Campaign, ContactPolicy
from concierge.campaigns.policy import PREF_WEEKLY, address_of, check, consented
from concierge.campaigns.templates import Held
from concierge.channels import audiences_export, onsite
from concierge.clock import from_us, to_us
from concierge.errors import InputError, NotFoundError
from concierge.profiles import doc as pdoc
from concierge.store import tables as t

if TYPE_CHECKING:
    from concierge.facade import Concierge


def _event_who(person_id: str) -> dict[str, str]:
    if person_id.startswith("anon:"):
        return {"anonymous_id": person_id[5:]}
    return {"customer_id": person_id}


# -- campaigns -------------------------------------------------------------------------------


def _members(cg: Concierge, spec: AudienceSpec, *, now_us: int) -> Any:
    """The people of a campaign audience now: a stored audience is refreshed first
    (incrementally: only people whose profile changed since its last evaluation), so its
    membership and its ``entered`` changes are current."""
    if spec.stored is not None:
        cg.refresh_audiences(only=spec.stored)
    return audiences.evaluate(
        cg.store,
        spec,
        predictions=cg.campaign_engine().predictions,
        now_us=now_us,
        half_life_days=cg.settings.affinity_half_life_days,
        session_gap_minutes=cg.settings.session_gap_minutes,
    )


def _check_stored(cg: Concierge, campaign: Campaign) -> None:
    from concierge.audiences import service as aservice

    if campaign.audience is None or campaign.audience.stored is None:
        return
    with cg.store.read() as conn:
        try:
            aservice.get(conn, campaign.audience.stored)
        except NotFoundError:
            raise InputError.one(
                "audience.stored",
                f"no stored audience has the id or name {campaign.audience.stored!r}",
            ) from None


def save_campaign(cg: Concierge, data: Any) -> dict[str, Any]:
    engine = cg.campaign_engine()
    campaign = service.validate_campaign(data, engine.renderer)
    _check_stored(cg, campaign)
    with cg.store.write() as conn:
        version = service.save(conn, campaign, now_us=cg._now_us())
    return {"campaign_id": campaign.campaign_id, "version": version, "status": campaign.status}


def get_campaign(cg: Concierge, campaign_id: str, version: int | None = None) -> dict[str, Any]:
    with cg.store.read() as conn:
        campaign, v = service.get(conn, campaign_id, version)
        versions = (
            conn.execute(
                select(t.campaign_versions.c.version)
                .where(t.campaign_versions.c.campaign_id == campaign_id)
                .order_by(t.campaign_versions.c.version)
            )
            .scalars()
            .all()
        )
    return {
        "version": v,
        "versions": list(versions),
        "definition": campaign.model_dump(mode="json"),
    }


def set_policy(cg: Concierge, data: Any) -> dict[str, Any]:
    from pydantic import ValidationError

    from concierge.facade import validation_errors

    try:
        value = ContactPolicy.model_validate(data)
    except ValidationError as exc:
        raise InputError(validation_errors(exc)) from exc
    with cg.store.write() as conn:
        service.set_policy(conn, cg.store, value)
    return value.model_dump(mode="json")


# -- preview and preflight -------------------------------------------------------------------


def _resolve(cg: Concierge, campaign: str | dict[str, Any] | Campaign) -> Campaign:
    if isinstance(campaign, str):
        with cg.store.read() as conn:
            return service.get(conn, campaign)[0]
    return service.validate_campaign(campaign, cg.campaign_engine().renderer)


def preview(
    cg: Concierge,
    campaign: str | dict[str, Any] | Campaign,
    customer_id: str,
    *,
    trigger: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Render for one customer, as it would be sent now, with the reasons of each block and
    what the contact policy would say."""
    camp = _resolve(cg, campaign)
    person_id = cg.person_of(customer_id)
    engine = cg.campaign_engine()
    with cg.store.read() as conn:
        doc = engine.docs(conn, [person_id]).get(person_id)
        pol = service.policy(conn, cg.store)
    if doc is None:
        raise NotFoundError("customer", customer_id)
    engine.predictions.refresh()
    person = engine.person(person_id, doc, trigger)
    rendered = engine.render(camp, person, links={"unsubscribe_url": "#", "preferences_url": "#"})
    decision = check(
        pol,
        camp,
        person_id=person_id,
        doc=doc,
        address=address_of(camp.channel, doc, person_id),
        suppressed=None,
        recent=[],
        now_us=cg._now_us(),
    )
    out: dict[str, Any] = {
        "campaign_id": camp.campaign_id,
        "person_id": person_id,
        "channel": camp.channel,
        "policy": decision.as_dict(),
    }
    if isinstance(rendered, Held):
        out |= {"held": True, "reasons": rendered.reasons}
    else:
        out |= {"held": False, **rendered.as_dict()}
    return out


def preflight(
    cg: Concierge, campaign: str | dict[str, Any] | Campaign, *, sample: int | None = None
) -> dict[str, Any]:
    """Render for every recipient of the audience (or the first ``sample``) and count who would
    be held back, suppressed by the policy, or sent, with the reasons."""
    camp = _resolve(cg, campaign)
    if camp.audience is None:
        raise InputError.one("audience", "preflight needs an audience (a broadcast/lifecycle)")
    engine = cg.campaign_engine()
    now = cg._now_us()
    members = _members(cg, camp.audience, now_us=now)
    contexts = _member_contexts(members)
    ids = members.get_column("person_id").to_list()
    if sample is not None:
        ids = ids[:sample]
    held: dict[str, int] = {}
    suppressed: dict[str, int] = {}
    examples: dict[str, str] = {}
    would_send = n_held = 0
    engine.predictions.refresh()
    with cg.store.read() as conn:
        pol = service.policy(conn, cg.store)
    for i in range(0, len(ids), 500):
        with cg.store.read() as conn:
            docs = engine.docs(conn, ids[i : i + 500])
        for pid, doc in docs.items():
            decision = check(
                pol,
                camp,
                person_id=pid,
                doc=doc,
                address=address_of(camp.channel, doc, pid),
                suppressed=None,
                recent=[],
                now_us=now,
            )
            if decision.verdict == "suppress":
                suppressed[decision.rule] = suppressed.get(decision.rule, 0) + 1
                continue
            rendered = engine.render(camp, engine.person(pid, doc, contexts.get(pid)))
            if isinstance(rendered, Held):
                n_held += 1
                for r in rendered.reasons:
                    key = r.split(":")[0]
                    held[key] = held.get(key, 0) + 1
                    examples.setdefault(key, f"{pid}: {r}")
            else:
                would_send += 1
    return {
        "campaign_id": camp.campaign_id,
        "audience": len(members),
        "rendered": len(ids),
        "would_send": would_send,
        "held": n_held,
        "held_by_reason": held,
        "held_examples": examples,
        "suppressed_by_rule": suppressed,
    }


# -- broadcasts and lifecycle runs -----------------------------------------------------------


def schedule(cg: Concierge, campaign_id: str, *, at: datetime | None = None) -> dict[str, Any]:
    """Queue one send per audience member of a live broadcast/lifecycle campaign (an existing
    occasion is not queued twice). ``best_time`` puts each person at their best local hour
    (:mod:`concierge.campaigns.send_time`: engagement by local hour, shrunk toward the
    population), the first such hour at or after ``at``."""
    with cg.store.read() as conn:
        camp, version = service.get(conn, campaign_id)
    if camp.audience is None:
        raise InputError.one("audience", "only broadcast and lifecycle campaigns are scheduled")
    if camp.status != "live":
        raise InputError.one("status", "make the campaign live before scheduling it")
    when = at or (camp.schedule.at if camp.schedule else cg.clock.now())
    at_us = to_us(when)
    now = cg._now_us()
    members = _members(cg, camp.audience, now_us=now)
    import polars as pl

    if camp.schedule is not None and camp.schedule.best_time:
        from concierge.campaigns import send_time

        with cg.store.read() as conn:
            pol = service.policy(conn, cg.store)
            hours = send_time.best_hours(conn, members, default_tz=pol.default_timezone, now_us=now)
        timed = send_time.due_at(hours, at_us).select("person_id", "due")
        members = members.join(timed, on="person_id", how="left").with_columns(
            pl.col("due").fill_null(at_us)
        )
    else:
        members = members.with_columns(pl.lit(at_us).alias("due"))
    by = camp.audience.occasion_by
    occasion = (
        f"{camp.kind}:v{version}:{when.isoformat()}"
        if by == "run"
        else f"{camp.kind}:once"
        if by == "person"
        else f"{camp.kind}:entry:{camp.audience.stored}:"
        if by == "entry"
        else f"{camp.kind}:{by}="
    )
    per_value = by == "entry" or by.startswith("predictions.")
    if camp.audience.replenishment is not None:  # one per person per category cycle
        occasion, per_value = f"{camp.kind}:replenish:", True
    elif camp.audience.resale:  # one prompt per item
        occasion, per_value = f"{camp.kind}:resale:", True
    rule = [c.model_dump(mode="json") for c in camp.audience.all]
    where: dict[str, Any] = {}
    if camp.audience.stored is not None:
        where["stored_audience"] = camp.audience.stored
    if camp.audience.segment_id is not None:
        where["segment_id"] = camp.audience.segment_id
    extra = _member_contexts(members)
    rows = [
        {
            "campaign_id": camp.campaign_id,
            "person_id": pid,
            "occasion": occasion + (value or "") if per_value else occasion,
            "due_us": int(due),
            "trigger_us": at_us,
            "context": {
                "audience": rule,
                **where,
                **({"entered": f"{by}={value}"} if value and not extra else {}),
                **({"journey_version": version} if camp.journey is not None else {}),
                **extra.get(pid, {}),
            },
        }
        for pid, due, value in members.select("person_id", "due", "occasion_value").iter_rows()
    ]
    with cg.store.write() as conn:
        queued = due_queue.enqueue(conn, cg.store, rows, now_us=now)
    return {
        "campaign_id": campaign_id,
        "audience": len(rows),
        "queued": queued,
        "occasion": occasion,
    }


# -- feedback: tracking, unsubscribe, providers ----------------------------------------------


def _member_contexts(members: Any) -> dict[str, dict[str, Any]]:
    """What an audience says about each member for the message: for replenishment, the
    category due, the products bought in it (the ``trigger_items`` block) and why; for
    resale, the item ready to sell (the block), the order and the person's usual delay."""
    if "resale_product_id" in members.columns:
        return {
            pid: {
                "resale": {
                    "order_id": order,
                    "product_id": product,
                    "sell_delay_days": round(float(delay), 1),
                    "age_days": round(float(age), 1),
                },
                "product_ids": [product],
                "why": f"you often resell what you buy after about {delay:.0f} days",
            }
            for pid, order, product, delay, age in members.select(
                "person_id",
                "resale_order_id",
                "resale_product_id",
                "sell_delay_days",
                "age_days",
            ).iter_rows()
        }
    if "category" not in members.columns:
        return {}
    return {
        pid: {
            "replenish": {
                "category": cat,
                "name": cat.rsplit(">", 1)[-1],
                "cadence_days": round(float(days), 1),
            },
            "product_ids": list(pids or []),
            "why": f"you buy {cat.rsplit('>', 1)[-1]} about every {days:.0f} days",
        }
        for pid, cat, pids, days in members.select(
            "person_id", "category", "product_ids", "cadence_days"
        ).iter_rows()
    }


def _signer(cg: Concierge) -> Any:
    with cg.store.write() as conn:
        return service.signer(conn, cg.store)


def track(cg: Concierge, kind: Literal["o", "c", "u"], token: str) -> dict[str, Any] | None:
    """Turn a tracking hit into an event through ingest; the token's payload, or None when
    the token is not genuine. An unsubscribe also withdraws consent on that channel."""
    payload: dict[str, Any] | None = _signer(cg).verify(kind, token)
    if payload is None:
        return None
    key, person, campaign, channel = payload["k"], payload["p"], payload["c"], payload["ch"]
    now = cg.clock.now().isoformat()
    base = {
        "channel": channel,
        "message_id": key,
        "campaign_id": campaign,
        "timestamp": now,
        **_event_who(person),
    }
    if kind == "o":
        events: list[dict[str, Any]] = [{"type": "open", "event_id": f"open:{key}", **base}]
    elif kind == "c":
        import hashlib

        url = str(payload.get("u", ""))
        digest = hashlib.sha256(url.encode()).hexdigest()[:12]
        events = [
            {"type": "open", "event_id": f"open:{key}", **base},
            {"type": "click", "event_id": f"click:{key}:{digest}", "url": url, **base},
        ]
    else:
        events = [
            {"type": "unsubscribe", "event_id": f"unsubscribe:{key}", **base},
        ]
        if channel in ("email", "sms", "push"):
            events.append(
                {
                    "type": "consent",
                    "event_id": f"unsubscribe-consent:{key}",
                    "channel": channel,
                    "granted": False,
                    "source": f"unsubscribe link of {campaign}",
                    "timestamp": now,
                    **_event_who(person),
                }
            )
    cg.ingest(events)
    return payload


def provider_feedback(cg: Concierge, channel: str, items: list[Any]) -> dict[str, Any]:
    """Bounces and complaints reported by a provider: ``[{"type": "bounce"|"complaint",
    "address"?, "message_id"? (our outbox key or the Message-ID), "hard"?: bool, "reason"?}]``.

    Each becomes a ``bounce``/``complaint`` event of the person through ingest, and the address
    is suppressed on that channel (a soft bounce only after three)."""
    from concierge.campaigns.worker import suppress

    if channel not in ("email", "sms", "push"):
        raise InputError.one("channel", "one of email, sms, push")
    if not isinstance(items, list):
        raise InputError.one("events", "an array of provider events")
    errors = []
    for i, it in enumerate(items):
        if not isinstance(it, dict) or it.get("type") not in ("bounce", "complaint"):
            errors.append(InputError.one("type", "bounce or complaint", i).errors[0])
        elif not it.get("address") and not it.get("message_id"):
            errors.append(
                InputError.one("address", "address or message_id is required", i).errors[0]
            )
    if errors:
        raise InputError(errors)
    now_us = cg._now_us()
    events: list[dict[str, Any]] = []
    suppressed = 0
    with cg.store.write() as conn:
        for it in items:
            mid = str(it.get("message_id") or "").strip("<>").split("@")[0]
            row = None
            if mid:
                row = conn.execute(
                    select(
                        t.outbox.c.person_id,
                        t.outbox.c.address,
                        t.outbox.c.campaign_id,
                        t.outbox.c.outbox_key,
                    ).where(t.outbox.c.outbox_key == mid)
                ).first()
            address = str(it.get("address") or (row[1] if row else "")).strip()
            if channel == "email":
                address = address.lower()
            if row is None and address:
                row = conn.execute(
                    select(
                        t.outbox.c.person_id,
                        t.outbox.c.address,
                        t.outbox.c.campaign_id,
                        t.outbox.c.outbox_key,
                    )
                    .where(t.outbox.c.channel == channel, t.outbox.c.address == address)
                    .order_by(t.outbox.c.created_us.desc())
                    .limit(1)
                ).first()
            hard = it["type"] == "complaint" or bool(it.get("hard", True))
            if hard and address:
                suppress(
                    conn,
                    cg.store,
                    channel,
                    address,
                    reason=it["type"],
                    source=str(it.get("reason") or "provider webhook"),
                    now_us=now_us,
                )
                suppressed += 1
            if row is not None:
                events.append(
                    {
                        "type": it["type"],
                        "event_id": f"{it['type']}:{row[3]}",
                        "channel": channel,
                        "message_id": row[3],
                        "campaign_id": row[2],
                        "timestamp": from_us(now_us).isoformat(),
                        **_event_who(row[0]),
                    }
                )
    if events:
        cg.ingest(events)
    return {"received": len(items), "events": len(events), "suppressed": suppressed}


# -- preference center -----------------------------------------------------------------------


def preferences(cg: Concierge, token: str) -> dict[str, Any] | None:
    payload = _signer(cg).verify("p", token)
    if payload is None:
        return None
    person = payload["p"]
    with cg.store.read() as conn:
        row = conn.execute(select(t.profiles.c.doc).where(t.profiles.c.person_id == person)).first()
    doc = pdoc.loads(row[0]) if row else pdoc.empty()
    reg = doc["answers"].get(PREF_WEEKLY)
    return {
        "person_id": person,
        "channels": {ch: consented(doc, ch) for ch in ("email", "sms", "push")},
        "max_per_week": None if reg is None else reg[2],
    }


def set_preferences(
    cg: Concierge, token: str, *, channels: dict[str, bool], max_per_week: int | None
) -> dict[str, Any] | None:
    payload = _signer(cg).verify("p", token)
    if payload is None:
        return None
    person = payload["p"]
    now = cg.clock.now()
    stamp = now.isoformat()
    events: list[dict[str, Any]] = []
    for ch, granted in channels.items():
        if ch not in ("email", "sms", "push"):
            raise InputError.one(f"channels.{ch}", "one of email, sms, push")
        events.append(
            {
                "type": "consent",
                "channel": ch,
                "granted": bool(granted),
                "source": "preference center",
                "timestamp": stamp,
                **_event_who(person),
            }
        )
    if max_per_week is not None:
        if not 0 <= max_per_week <= 50:
            raise InputError.one("max_per_week", "between 0 and 50")
        events.append(
            {
                "type": "answer",
                "question_id": PREF_WEEKLY,
                "answer": max_per_week,
                "timestamp": stamp,
                **_event_who(person),
            }
        )
    if events:
        cg.ingest(events)
    return preferences(cg, token)


# -- reading ---------------------------------------------------------------------------------


def onsite_messages(cg: Concierge, customer_id: str, *, mark_seen: bool) -> list[dict[str, Any]]:
    person = cg.person_of(customer_id)
    return onsite.pull(cg.store, person, now_us=cg._now_us(), mark_seen=mark_seen)


def messages_of(cg: Concierge, person_id: str, *, limit: int = 50) -> list[dict[str, Any]]:
    """The person's message history with its reasons (for the customer 360)."""
    o = t.outbox
    with cg.store.read() as conn:
        rows = conn.execute(
            select(
                o.c.outbox_key,
                o.c.campaign_id,
                o.c.channel,
                o.c.status,
                o.c.subject,
                o.c.created_us,
                o.c.sent_us,
                o.c.error,
                o.c.explain,
            )
            .where(o.c.person_id == person_id)
            .order_by(o.c.created_us.desc())
            .limit(limit)
        ).all()
    return [
        {
            "message_id": r[0],
            "campaign_id": r[1],
            "channel": r[2],
            "status": r[3],
            "subject": r[4],
            "at": from_us(r[5]).isoformat(),
            "sent_at": None if r[6] is None else from_us(r[6]).isoformat(),
            "error": r[7],
            "explain": orjson.loads(r[8]),
        }
        for r in rows
    ]


def outbox_rows(cg: Concierge, *, status: str | None, limit: int) -> list[dict[str, Any]]:
    o = t.outbox
    q = select(
        o.c.outbox_key,
        o.c.campaign_id,
        o.c.person_id,
        o.c.channel,
        o.c.status,
        o.c.attempts,
        o.c.created_us,
        o.c.sent_us,
        o.c.error,
    )
    if status is not None:
        q = q.where(o.c.status == status)
    with cg.store.read() as conn:
        return [
            dict(r._mapping) for r in conn.execute(q.order_by(o.c.created_us.desc()).limit(limit))
        ]


def export_ads(
    cg: Concierge, campaign_id: str, out_dir: Path, *, platform: Literal["google", "meta"]
) -> dict[str, Any]:
    """The campaign's audience as hashed-identifier files, only people who consented on the
    channel of each identifier (email for emails, sms for phones)."""
    engine = cg.campaign_engine()
    with cg.store.read() as conn:
        camp, _v = service.get(conn, campaign_id)
    if camp.audience is None:
        raise InputError.one("audience", "the campaign has no audience")
    members = _members(cg, camp.audience, now_us=cg._now_us())
    ids = members.get_column("person_id").to_list()
    pairs: list[tuple[str | None, str | None]] = []
    for i in range(0, len(ids), 1000):
        with cg.store.read() as conn:
            docs = engine.docs(conn, ids[i : i + 1000])
        for pid, doc in docs.items():
            email = address_of("email", doc, pid) if consented(doc, "email") else None
            phone = address_of("sms", doc, pid) if consented(doc, "sms") else None
            pairs.append((email, phone))
    report = audiences_export.export(pairs, out_dir, name=campaign_id, platform=platform)
    return report.as_dict() | {"audience": len(ids)}


def erase_messages(conn: Any, person: str, pseudonym: str) -> None:
    """Erasure: the person's messages keep their counts (for caps and reports) under the
    pseudonym, without address or content; waiting sends and on-site messages are dropped.
    Address suppressions stay (they stop mail to that address, which the person asked for)."""
    from sqlalchemy import delete, update

    o = t.outbox
    conn.execute(
        update(o)
        .where(o.c.person_id == person)
        .values(
            person_id=pseudonym,
            address=None,
            subject=None,
            body_text=None,
            body_html=None,
            explain="{}",
        )
    )
    q = t.due_queue
    conn.execute(delete(q).where(q.c.person_id == person, q.c.status != "done"))
    conn.execute(update(q).where(q.c.person_id == person).values(person_id=pseudonym, context="{}"))
    conn.execute(delete(t.onsite_messages).where(t.onsite_messages.c.person_id == person))
    conn.execute(delete(t.suppressions).where(t.suppressions.c.address == f"person:{person}"))


def queue_counts(cg: Concierge) -> dict[str, Any]:
    from sqlalchemy import func

    with cg.store.read() as conn:
        o = t.outbox
        out = {
            str(s): int(n)
            for s, n in conn.execute(select(o.c.status, func.count()).group_by(o.c.status))
        }
        return {"due_queue": due_queue.counts(conn), "outbox": out}
