"""Audiences: stored rules, their members, and the entered/left changes between evaluations.

Incremental evaluation
----------------------
An audience remembers where its last evaluation stood: the applied log position
(``applied_seq``), the profiles epoch (bumped by rebuilds and erasures), the versions of the
per-person models it read, and the as-of. A refresh then re-evaluates

* **everyone** when the epoch moved, a model it can read has a new version, it was never
  evaluated, or its rule names a field that moves with time alone (``recency_days``,
  ``due_soon``, …) and the as-of moved;
* otherwise **only the people whose profile changed**: the persons of the events applied since
  (with both sides of a ``merge``), so the cost follows the traffic, not the store.

Members that entered or left are written to ``audience_changes`` in the same transaction as the
membership, so campaigns can trigger on "audience entry" by reading changes past a sequence
number. The property test checks that incremental evaluation equals a full one for any sequence
of profile changes.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import orjson
import polars as pl
from sqlalchemy import Connection, delete, func, select, update

from concierge.audiences import frame as aframe
from concierge.audiences.rules import compile_rule
from concierge.errors import ConflictError, InputError, NotFoundError
from concierge.ingest.service import APPLIED, EPOCH
from concierge.models.people import identities, with_person
from concierge.models.registry import Registry
from concierge.store import tables as t
from concierge.store.engine import Store, among

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.:-]{0,199}$")


def _row(r: Any) -> dict[str, Any]:
    return {
        "audience_id": r.audience_id,
        "name": r.name,
        "rule": r.rule,
        "description": r.description,
        "created_us": r.created_us,
        "evaluated_us": r.evaluated_us,
        "evaluated_seq": r.evaluated_seq,
        "models": orjson.loads(r.evaluated_models) if r.evaluated_models else {},
        "members": r.n_members,
    }


def create(
    conn: Connection,
    registry: Registry,
    *,
    name: str,
    rule: str,
    description: str | None,
    now_us: int,
) -> dict[str, Any]:
    if not isinstance(name, str) or not NAME.match(name):
        raise InputError.one(
            "name", "1-200 letters, digits, spaces or _ . : - (starting with a letter or digit)"
        )
    compile_rule(rule, aframe.known_fields(registry))
    tbl = t.audiences
    if conn.execute(select(tbl.c.audience_id).where(tbl.c.name == name)).first() is not None:
        raise ConflictError(f"an audience named {name!r} exists")
    aid = "aud_" + uuid.uuid4().hex[:16]
    conn.execute(
        tbl.insert().values(
            audience_id=aid,
            name=name,
            rule=rule,
            description=description,
            created_us=now_us,
            n_members=0,
        )
    )
    return get(conn, aid)


def get(conn: Connection, key: str) -> dict[str, Any]:
    tbl = t.audiences
    r = conn.execute(select(tbl).where((tbl.c.audience_id == key) | (tbl.c.name == key))).first()
    if r is None:
        raise NotFoundError("audience", key)
    return _row(r)


def list_all(conn: Connection) -> list[dict[str, Any]]:
    return [_row(r) for r in conn.execute(select(t.audiences).order_by(t.audiences.c.name))]


def remove(conn: Connection, key: str) -> None:
    aid = get(conn, key)["audience_id"]
    for tbl in (t.audience_members, t.audience_changes, t.audiences):
        conn.execute(delete(tbl).where(tbl.c.audience_id == aid))


def members(conn: Connection, key: str, *, limit: int, offset: int) -> dict[str, Any]:
    aud = get(conn, key)
    m = t.audience_members
    rows = conn.execute(
        select(m.c.person_id, m.c.entered_us)
        .where(m.c.audience_id == aud["audience_id"])
        .order_by(m.c.person_id)
        .limit(limit)
        .offset(offset)
    ).all()
    return {
        "audience_id": aud["audience_id"],
        "name": aud["name"],
        "total": aud["members"],
        "members": [{"person_id": p, "entered_us": e} for p, e in rows],
    }


def changes(conn: Connection, key: str, *, since: int, limit: int) -> list[dict[str, Any]]:
    aid = get(conn, key)["audience_id"]
    c = t.audience_changes
    rows = conn.execute(
        select(c.c.seq, c.c.person_id, c.c.change, c.c.at_us)
        .where(c.c.audience_id == aid, c.c.seq > since)
        .order_by(c.c.seq)
        .limit(limit)
    ).all()
    return [{"seq": s, "person_id": p, "change": ch, "at_us": a} for s, p, ch, a in rows]


def changed_people(conn: Connection, since_seq: int, upto_seq: int) -> set[str]:
    """Persons whose profile the events in (since, upto] changed (both sides of merges)."""
    ev = pl.read_database(
        select(
            t.events.c.type, t.events.c.customer_id, t.events.c.anonymous_id, t.events.c.payload
        ).where(t.events.c.seq > since_seq, t.events.c.seq <= upto_seq),
        conn,
        schema_overrides={"customer_id": pl.String, "anonymous_id": pl.String},
    )
    if ev.height == 0:
        return set()
    out = set(with_person(ev, identities(conn))["person_id"].to_list())
    merges = ev.filter(pl.col("type") == "merge")
    for payload in merges["payload"].to_list():
        lost = orjson.loads(payload).get("merged_customer_id")
        if lost:
            out.add(lost)
    return out


def refresh(
    store: Store,
    registry: Registry,
    *,
    as_of_us: int,
    now_us: int,
    half_life_days: float,
    only: str | None = None,
    full: bool = False,
) -> list[dict[str, Any]]:
    """Re-evaluate audiences (all, or ``only``); returns per audience what moved."""
    fields = aframe.known_fields(registry)
    with store.write() as conn:
        store.lock_writers(conn)
        auds = [get(conn, only)] if only is not None else list_all(conn)
        if not auds:
            return []
        applied = int(store.get_meta(conn, APPLIED) or 0)
        epoch = store.get_meta(conn, EPOCH) or ""
        tbl = t.audiences
        state = {
            r.audience_id: r
            for r in conn.execute(
                select(tbl).where(tbl.c.audience_id.in_([a["audience_id"] for a in auds]))
            )
        }
        versions = aframe.model_versions(registry)
        plans: dict[str, set[str] | None] = {}
        cache: dict[int, set[str]] = {}
        for a in auds:
            r = state[a["audience_id"]]
            compiled = compile_rule(r.rule, fields)
            models = orjson.loads(r.evaluated_models) if r.evaluated_models else {}
            if (
                full
                or r.evaluated_seq is None
                or (r.evaluated_epoch or "") != epoch
                or models != versions
                or (compiled.fields & aframe.TIME_FIELDS and r.evaluated_us != as_of_us)
            ):
                plans[a["audience_id"]] = None
            else:
                since = int(r.evaluated_seq)
                if since not in cache:
                    cache[since] = changed_people(conn, since, applied)
                plans[a["audience_id"]] = cache[since]
        need_all = any(p is None for p in plans.values())
        wanted: set[str] = set()
        for p in plans.values():
            if p is not None:
                wanted |= p
        frame_all: pl.DataFrame | None = None
        if need_all:
            frame_all, _v = aframe.build(
                conn, registry, people=None, as_of_us=as_of_us, half_life_days=half_life_days
            )
        frame_some: pl.DataFrame | None = None
        if wanted and frame_all is None:
            frame_some, _v = aframe.build(
                conn, registry, people=wanted, as_of_us=as_of_us, half_life_days=half_life_days
            )
        out = []
        for a in auds:
            aid = a["audience_id"]
            r = state[aid]
            compiled = compile_rule(r.rule, fields)
            scope = plans[aid]
            if scope is None:
                f = frame_all
            elif frame_all is not None:
                f = frame_all.filter(pl.col("person_id").is_in(list(scope)))
            else:
                f = frame_some if frame_some is not None else None
                if f is not None:
                    f = f.filter(pl.col("person_id").is_in(list(scope)))
            matched: set[str] = set()
            if f is not None and f.height:
                matched = set(f.filter(compiled.expr)["person_id"].to_list())
            entered, left = _apply(conn, aid, scope, matched, now_us=now_us)
            total = int(
                conn.execute(
                    select(func.count())
                    .select_from(t.audience_members)
                    .where(t.audience_members.c.audience_id == aid)
                ).scalar()
                or 0
            )
            conn.execute(
                update(tbl)
                .where(tbl.c.audience_id == aid)
                .values(
                    evaluated_seq=applied,
                    evaluated_epoch=epoch,
                    evaluated_models=orjson.dumps(versions, option=orjson.OPT_SORT_KEYS).decode(),
                    evaluated_us=as_of_us,
                    n_members=total,
                )
            )
            out.append(
                {
                    "audience_id": aid,
                    "name": a["name"],
                    "mode": "full" if scope is None else "incremental",
                    "evaluated": None if scope is None else len(scope),
                    "entered": len(entered),
                    "left": len(left),
                    "members": total,
                }
            )
        return out


def _apply(
    conn: Connection, aid: str, scope: set[str] | None, matched: set[str], *, now_us: int
) -> tuple[list[str], list[str]]:
    m = t.audience_members
    if scope is None:
        current = set(
            conn.execute(select(m.c.person_id).where(m.c.audience_id == aid)).scalars().all()
        )
    else:
        current = set()
        for clause in among(conn, m.c.person_id, sorted(scope)):
            current |= set(
                conn.execute(select(m.c.person_id).where(m.c.audience_id == aid, clause))
                .scalars()
                .all()
            )
    entered = sorted(matched - current)
    left = sorted(current - matched)
    if entered:
        conn.execute(
            m.insert(),
            [{"audience_id": aid, "person_id": p, "entered_us": now_us} for p in entered],
        )
    for clause in among(conn, m.c.person_id, left):
        conn.execute(delete(m).where(m.c.audience_id == aid, clause))
    moves = [
        {"audience_id": aid, "person_id": p, "change": "entered", "at_us": now_us} for p in entered
    ]
    moves += [{"audience_id": aid, "person_id": p, "change": "left", "at_us": now_us} for p in left]
    if moves:
        conn.execute(t.audience_changes.insert(), moves)
    return entered, left


def evaluate_all(
    conn: Connection, registry: Registry, rule: str, *, as_of_us: int, half_life_days: float
) -> set[str]:
    """Everyone matching ``rule`` now (a full evaluation without storing anything)."""
    compiled = compile_rule(rule, aframe.known_fields(registry))
    f, _v = aframe.build(
        conn, registry, people=None, as_of_us=as_of_us, half_life_days=half_life_days
    )
    return set(f.filter(compiled.expr)["person_id"].to_list()) if f.height else set()
