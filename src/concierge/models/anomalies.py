"""Out-of-pattern behaviour: how unusual a purchase or a view is for this person, and when to ask.

Scoring
-------
For a dimension *d* (department; size within a top-level category; price band within a top-level
category; top-level category) a person's history gives weighted counts :math:`c_v` of the values
they interacted with (purchase 5, add to cart 3, view 1, as for affinities), gift lines
excluded. With the population's distribution :math:`p_0(v)` as a Dirichlet prior of strength
:math:`\\alpha`, the smoothed probability of value *v* is

.. math:: \\hat p(v) = \\frac{c_v + \\alpha\\, p_0(v)}{C + \\alpha}, \\qquad C = \\sum_v c_v,

the *surprise* of an interaction with *v* is :math:`-\\log \\hat p(v)` and its *lift* against
the population :math:`\\log p_0(v) - \\log \\hat p(v)` (how much rarer *v* is for this person
than for shoppers at large). An interaction is out of pattern when both pass their thresholds and
the person has enough history (``C >= min_history``).

Asking
------
A clarifying question is worth asking only when the answer would change what Concierge does: the
dimension is one that filters what we show (department or size), the person's history is
concentrated (their top value holds at least ``concentration`` of it, so we were sure and now we
are not), and we do not know the answer yet. A purchase asks "Was this a gift?"; repeated views
(``min_views`` within a scan) ask "Shopping for someone else?". A person gets at most
``max_per_period`` new questions per ``period_days``, and a question (kind and value, e.g. a gift
in department *women*) is never asked twice (a unique key in the ``questions`` table).

Answers
-------
An ``answer`` event naming the question id (``oop-…``) with a yes (``true``, ``"yes"``, …)
marks the person's interactions with ``about_product_id`` up to the answer as *kept apart from
taste*: they leave the person's affinities (:func:`correct_doc` at read time) and the histories
scored here, and are shown as gift purchases instead. Because the answer is an event of the log
and the correction is computed from the log, it holds after ``concierge rebuild``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import orjson
import polars as pl
from pydantic import Field
from sqlalchemy import Connection, and_, func, or_, select

from concierge.models.base import ModelConfig
from concierge.models.people import first, identities, with_person
from concierge.profiles import doc as pdoc
from concierge.profiles.doc import AFFINITY_WEIGHTS, ANCHOR_US, DAY_US
from concierge.store import log as eventlog
from concierge.store import tables as t
from concierge.store.engine import Store

SCANNED = "oop_scanned_seq"  # meta key: the last log sequence the scan looked at
PREFIX = "oop-"
YES = frozenset({"yes", "y", "true", "1", "gift", "someone else", "someone_else", "oui", "ja"})
TEXTS = {"gift": "Was this a gift?", "someone_else": "Shopping for someone else?"}
ASKABLE = ("dept", "size")
INTERACTIONS = ("view", "add_to_cart", "purchase")


class OutOfPatternConfig(ModelConfig):
    """Thresholds of the out-of-pattern scan and of asking."""

    prior_strength: float = Field(2.0, gt=0.0, description="Dirichlet strength of the population.")
    min_history: float = Field(15.0, ge=0.0, description="Weighted history needed to judge.")
    min_surprise: float = Field(2.0, ge=0.0, description="-log p̂(v) from which it is unusual.")
    min_lift: float = Field(1.0, ge=0.0, description="log p0(v) - log p̂(v) needed as well.")
    concentration: float = Field(
        0.8, gt=0.0, le=1.0, description="Top value's share for the history to count as sure."
    )
    min_views: int = Field(2, ge=1, description="Unusual views in one scan to ask about them.")
    max_per_period: int = Field(1, ge=0, description="New questions per person per period.")
    period_days: float = Field(30.0, gt=0.0, description="The period of the limit.")
    max_age_days: float = Field(
        30.0, gt=0.0, description="Only behaviour this recent (before now) is asked about."
    )


def is_yes(answer: Any) -> bool:
    if isinstance(answer, bool):
        return answer
    if isinstance(answer, int | float):
        return answer == 1
    if isinstance(answer, list):
        return any(is_yes(a) for a in answer)
    return str(answer).strip().lower() in YES


def question_id(person: str, key: str) -> str:
    kind = key.split(":", 1)[0]
    return f"{PREFIX}{kind}-" + hashlib.sha256(f"{person}|{key}".encode()).hexdigest()[:16]


def dimensions(facets: pl.Expr) -> list[pl.Expr]:
    """The scored dimensions of an item, as ``dim`` → value columns (null when not applicable)."""
    top = first("cat", facets)
    return [
        first("dept", facets).alias("dept"),
        pl.when(first("size", facets).is_not_null())
        .then(top.fill_null("") + ":" + first("size", facets))
        .alias("size"),
        pl.when(first("price", facets).is_not_null())
        .then(top.fill_null("") + ":" + first("price", facets))
        .alias("price"),
        top.alias("cat"),
    ]


def gift_answers(events: pl.DataFrame) -> pl.DataFrame:
    """Affirmative answers to our questions: person_id, product_id, until_us."""
    ans = events.filter(pl.col("type") == "answer")
    rows = []
    for person, ts, payload in ans.select("person_id", "ts_us", "payload").iter_rows():
        body = orjson.loads(payload)
        qid = str(body.get("question_id", ""))
        pid = body.get("about_product_id")
        if qid.startswith(PREFIX) and pid and is_yes(body.get("answer")):
            rows.append((person, pid, ts))
    return pl.DataFrame(
        rows,
        schema={"person_id": pl.String, "product_id": pl.String, "until_us": pl.Int64},
        orient="row",
    )


def interactions(events: pl.DataFrame, items: pl.DataFrame) -> pl.DataFrame:
    """Item interactions with weights, gift lines flagged: one row per (event, line)."""
    w = pl.DataFrame({"type": list(AFFINITY_WEIGHTS), "w": list(AFFINITY_WEIGHTS.values())})
    ev = events.filter(pl.col("type").is_in(INTERACTIONS)).select(
        "seq", "event_id", "type", "person_id", "ts_us"
    )
    rows = (
        items.join(ev, on="event_id").join(w, on="type").with_columns(*dimensions(pl.col("facets")))
    )
    gifts = gift_answers(events)
    if gifts.height:
        flagged = (
            rows.select("event_id", "line", "person_id", "product_id", "ts_us")
            .join(gifts, on=["person_id", "product_id"])
            .filter(pl.col("ts_us") <= pl.col("until_us"))
            .select("event_id", "line")
            .unique()
            .with_columns(pl.lit(True).alias("gift"))
        )
        rows = rows.join(flagged, on=["event_id", "line"], how="left").with_columns(
            pl.col("gift").fill_null(False)
        )
    else:
        rows = rows.with_columns(pl.lit(False).alias("gift"))
    return rows


def population(rows: pl.DataFrame) -> pl.DataFrame:
    """p0 per (dim, value) over everyone's non-gift interactions."""
    long = (
        rows.filter(~pl.col("gift"))
        .unpivot(
            index=["w"],
            on=[*ASKABLE, "price", "cat"],
            variable_name="dim",
            value_name="value",
        )
        .filter(pl.col("value").is_not_null())
    )
    tot = long.group_by("dim", "value").agg(pl.col("w").sum())
    return tot.with_columns((pl.col("w") / pl.col("w").sum().over("dim")).alias("p0")).drop("w")


def score(
    rows: pl.DataFrame, pop: pl.DataFrame, cfg: OutOfPatternConfig, *, since_seq: int
) -> pl.DataFrame:
    """Surprise of each interaction after ``since_seq`` against the person's history before it.

    ``rows`` is an :func:`interactions` frame holding the people's whole history. Counts before
    each row are running sums in time order per (person, dimension[, value]), so the cost is
    linear in the history (a person's own later behaviour never makes an earlier one usual).
    """
    dims = [*ASKABLE, "price", "cat"]
    long = (
        rows.filter(~pl.col("gift"))
        .unpivot(
            index=["person_id", "event_id", "line", "type", "product_id", "ts_us", "seq", "w"],
            on=dims,
            variable_name="dim",
            value_name="value",
        )
        .filter(pl.col("value").is_not_null())
        .sort("person_id", "dim", "ts_us", "seq", "line")
    )
    g, gv = ["person_id", "dim"], ["person_id", "dim", "value"]
    a = cfg.prior_strength
    out = (
        long.with_columns(
            (pl.col("w").cum_sum().over(gv) - pl.col("w")).alias("c_v"),
            (pl.col("w").cum_sum().over(g) - pl.col("w")).alias("history"),
            pl.col("w").cum_sum().over(gv).alias("_after"),
        )
        .with_columns(pl.col("_after").cum_max().shift(1).over(g).fill_null(0.0).alias("top"))
        .filter(pl.col("seq") > since_seq)
        .join(pop, on=["dim", "value"], how="left")
        .with_columns(pl.col("p0").fill_null(1e-4))
        .with_columns(
            ((pl.col("c_v") + a * pl.col("p0")) / (pl.col("history") + a)).alias("p_hat"),
            pl.when(pl.col("history") > 0)
            .then(pl.col("top") / pl.col("history"))
            .otherwise(0.0)
            .alias("top_share"),
        )
        .with_columns(
            (-pl.col("p_hat").log()).alias("surprise"),
            (pl.col("p0").log() - pl.col("p_hat").log()).alias("lift"),
        )
        .with_columns(
            (
                (pl.col("history") >= cfg.min_history)
                & (pl.col("surprise") >= cfg.min_surprise)
                & (pl.col("lift") >= cfg.min_lift)
            ).alias("unusual")
        )
        .drop("_after")
    )
    return out


def population_from_log(conn: Connection, *where: Any) -> pl.DataFrame:
    """p0 per (dim, value) over every interaction of the log (matching ``where``)."""
    ev, items = eventlog.read(conn, t.events.c.type.in_(INTERACTIONS), *where)
    ev = ev.with_columns(pl.lit("").alias("person_id"))
    return population(interactions(ev, items))


def population_arrays(pop: pl.DataFrame) -> dict[str, Any]:
    import numpy as np

    return {
        "dim": pop["dim"].to_numpy().astype(np.str_),
        "value": pop["value"].to_numpy().astype(np.str_),
        "p0": pop["p0"].to_numpy().astype(np.float64),
    }


def population_of(arrays: dict[str, Any]) -> pl.DataFrame:
    return pl.DataFrame(
        {"dim": arrays["dim"].astype(str), "value": arrays["value"].astype(str), "p0": arrays["p0"]}
    )


def aliases_of(conn: Connection, people: Sequence[str]) -> tuple[list[str], list[str]]:
    from concierge.store.engine import among

    cids = {p for p in people if not p.startswith("anon:")}
    aids = {p[5:] for p in people if p.startswith("anon:")}
    for clause in among(conn, t.identities.c.person_id, list(people)):
        for alias in conn.execute(select(t.identities.c.alias).where(clause)).scalars():
            (cids if alias.startswith("c:") else aids).add(alias[2:])
    return sorted(cids), sorted(aids)


def history_of(conn: Connection, people: Sequence[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The whole log of some people (events with person_id, and their items)."""
    cids, aids = aliases_of(conn, people)
    clauses: list[Any] = []
    if cids:
        clauses.append(t.events.c.customer_id.in_(cids))
    if aids:
        clauses.append(and_(t.events.c.customer_id.is_(None), t.events.c.anonymous_id.in_(aids)))
    if not clauses:
        ev, it = eventlog.read(conn, t.events.c.seq < 0)
    else:
        ev, it = eventlog.read(conn, or_(*clauses))
    ev = with_person(ev, identities(conn))
    return ev.filter(pl.col("person_id").is_in(list(people))), it


def scan(
    store: Store,
    *,
    now_us: int,
    config: OutOfPatternConfig | None = None,
    population_frame: pl.DataFrame | None = None,
    limit: int = 200_000,
) -> dict[str, Any]:
    """Score the log's new interactions since the last scan; raise questions where worth it."""
    cfg = config or OutOfPatternConfig()
    with store.write() as conn:
        store.lock_writers(conn)
        since = int(store.get_meta(conn, SCANNED) or 0)
        ev, _items = eventlog.read(
            conn, t.events.c.seq > since, t.events.c.type.in_(INTERACTIONS), limit=limit
        )
        if ev.height == 0:
            return {"scanned": 0, "unusual": 0, "questions": 0}
        top = int(ev["seq"].to_numpy().max())
        ev = with_person(ev, identities(conn))
        people = ev["person_id"].unique().to_list()
        hev, hit = history_of(conn, people)
        hist = interactions(hev, hit)
        if population_frame is None:
            population_frame = population_from_log(conn)
        scored = score(hist.filter(pl.col("seq") <= top), population_frame, cfg, since_seq=since)
        unusual = scored.filter(pl.col("unusual"))
        made = _ask(conn, unusual, gift_answers(hev), cfg, now_us=now_us)
        store.set_meta(conn, SCANNED, str(top))
    return {"scanned": int(ev.height), "unusual": int(unusual.height), "questions": made}


def _ask(
    conn: Connection,
    unusual: pl.DataFrame,
    answered: pl.DataFrame,
    cfg: OutOfPatternConfig,
    *,
    now_us: int,
) -> int:
    cand = unusual.filter(
        pl.col("dim").is_in(list(ASKABLE)),
        pl.col("top_share") >= cfg.concentration,
        pl.col("ts_us") >= now_us - int(cfg.max_age_days * DAY_US),
    )
    if cand.height == 0:
        return 0
    buys = cand.filter(pl.col("type") == "purchase").with_columns(pl.lit("gift").alias("kind"))
    views = (
        cand.filter(pl.col("type") != "purchase")
        .group_by("person_id", "dim", "value")
        .agg(
            pl.len().alias("n"),
            pl.col("product_id").last(),
            pl.col("event_id").last(),
            pl.col("ts_us").max(),
            pl.col("surprise").max(),
        )
        .filter(pl.col("n") >= cfg.min_views)
        .with_columns(pl.lit("someone_else").alias("kind"))
    )
    cols = ["person_id", "kind", "dim", "value", "product_id", "event_id", "ts_us", "surprise"]
    both = pl.concat([buys.select(cols), views.select(cols)]).sort(
        "ts_us", "surprise", descending=[False, True]
    )
    people = both["person_id"].unique().to_list()
    q = t.questions
    asked: dict[str, set[str]] = {}
    recent: dict[str, list[int]] = {}
    from concierge.store.engine import among

    for clause in among(conn, q.c.person_id, people):
        for person, key, created in conn.execute(
            select(q.c.person_id, q.c.key, q.c.seen_us).where(clause)
        ):
            asked.setdefault(person, set()).add(key)
            recent.setdefault(person, []).append(int(created))
    made = 0
    period = int(cfg.period_days * DAY_US)
    for person, kind, dim, value, pid, eid, ts, surprise in both.iter_rows():
        dim_value = value.split(":", 1)[-1] if dim == "size" else value
        key = f"{kind}:{dim}={value}"
        if key in asked.get(person, set()):
            continue
        if answered.filter(pl.col("person_id") == person, pl.col("product_id") == pid).height:
            continue
        times = recent.get(person, [])
        if sum(1 for x in times if ts - period < x <= ts + period) >= cfg.max_per_period:
            continue
        conn.execute(
            q.insert().values(
                person_id=person,
                question_id=question_id(person, key),
                key=key,
                kind=kind,
                text=TEXTS[kind],
                about_product_id=pid,
                about_event_id=eid,
                dimension=dim,
                value=dim_value,
                surprise=float(surprise),
                seen_us=int(ts),
                created_us=now_us,
            )
        )
        asked.setdefault(person, set()).add(key)
        recent.setdefault(person, []).append(int(ts))
        made += 1
    return made


# -- the profile, read with the answers applied --------------------------------------------


def excluded_lines(
    conn: Connection, doc: pdoc.Doc, cids: Sequence[str], aids: Sequence[str]
) -> list[dict[str, Any]]:
    """The person's interactions kept apart from taste by their answers (from the log)."""
    wanted = [
        (reg[3], reg[0])
        for qid, reg in doc["answers"].items()
        if qid.startswith(PREFIX) and reg[3] and is_yes(reg[2])
    ]
    if not wanted:
        return []
    who: list[Any] = []
    if cids:
        who.append(t.events.c.customer_id.in_(list(cids)))
    if aids:
        who.append(and_(t.events.c.customer_id.is_(None), t.events.c.anonymous_id.in_(list(aids))))
    out = []
    for pid, until in wanted:
        rows = conn.execute(
            select(
                t.events.c.type,
                t.events.c.ts_us,
                t.event_items.c.facets,
                t.event_items.c.quantity,
                t.event_items.c.unit_price,
            )
            .join(t.event_items, t.event_items.c.event_id == t.events.c.event_id)
            .where(
                or_(*who),
                t.event_items.c.product_id == pid,
                t.events.c.ts_us <= until,
                t.events.c.type.in_(list(AFFINITY_WEIGHTS)),
            )
        ).all()
        for typ, ts, facets, qty, price in rows:
            out.append(
                {
                    "product_id": pid,
                    "type": typ,
                    "ts_us": int(ts),
                    "facets": facets,
                    "quantity": qty,
                    "unit_price": price,
                }
            )
    return out


def correct_doc(
    doc: pdoc.Doc, lines: Sequence[dict[str, Any]], *, half_life_days: float
) -> pdoc.Doc:
    """A copy of ``doc`` whose affinities leave out ``lines`` (kept in ``gift_affinity``)."""
    if not lines:
        return doc
    hl_us = half_life_days * DAY_US
    aff = dict(doc["affinity"])
    gift: dict[str, float] = {}
    for line in lines:
        if not line["facets"]:
            continue
        w = AFFINITY_WEIGHTS[line["type"]] * math.exp(
            (line["ts_us"] - ANCHOR_US) / hl_us * math.log(2)
        )
        for facet in line["facets"].split("|"):
            aff[facet] = aff.get(facet, 0.0) - w
            gift[facet] = gift.get(facet, 0.0) + w
    return {**doc, "affinity": aff, "gift_affinity": gift}


def pending(conn: Connection, person: str, doc: pdoc.Doc | None) -> list[dict[str, Any]]:
    """The person's questions, each with its answer if the log has one."""
    from concierge.clock import from_us

    q = t.questions
    rows = conn.execute(select(q).where(q.c.person_id == person).order_by(q.c.seen_us)).all()
    answers = doc["answers"] if doc is not None else {}
    out = []
    for r in rows:
        reg = answers.get(r.question_id)
        out.append(
            {
                "question_id": r.question_id,
                "kind": r.kind,
                "text": r.text,
                "about_product_id": r.about_product_id,
                "dimension": r.dimension,
                "value": r.value,
                "surprise": round(float(r.surprise), 3),
                "seen_at": from_us(r.seen_us).isoformat(),
                "status": "pending" if reg is None else "answered",
                "answer": None if reg is None else reg[2],
            }
        )
    return out


def count_pending(
    conn: Connection, people: Sequence[str], answered: Mapping[str, Collection[str]]
) -> dict[str, int]:
    """Questions not answered yet, per person of ``people`` (``answered``: the question ids each
    person's document has an answer for; people without answers may be left out)."""
    q = t.questions
    out: dict[str, int] = {}
    from concierge.store.engine import among

    if not people:
        return out
    wanted = set(people)
    if len(people) > 5000:
        rows = conn.execute(select(q.c.person_id, q.c.question_id)).all()
    else:
        rows = []
        for clause in among(conn, q.c.person_id, list(people)):
            rows += conn.execute(select(q.c.person_id, q.c.question_id).where(clause)).all()
    for person, qid in rows:  # one row per question asked (a few per person at most)
        if person in wanted and qid not in answered.get(person, ()):
            out[person] = out.get(person, 0) + 1
    return out


def n_questions(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(t.questions)).scalar() or 0)
