"""``concierge evaluate campaigns``: the closed loop on a simulated store.

The simulator's hidden truth decides how people react (:func:`concierge.sim.response.
respond_to_message`: opens depend on responsiveness, channel, send hour and how tired they are
of contact; clicks and purchases on how well the featured item fits their hidden tastes;
unsubscribes climb once they get more than they tolerate). Two ways of messaging the same
consenting people over the same weeks are compared:

* **individual** — each person's message features the in-stock item that best fits what the
  store *knows* of them (their profile's affinities over brand, category, department, colour
  and attributes matched against each product's facets; the crowd's popularity breaks ties), is
  sent at the hour of day they were last active, when their own purchase rhythm says they are
  due (at most weekly; otherwise every two weeks), and never more often than the contact
  policy's learned frequency allows (:func:`concierge.campaigns.policy.weekly_limit`: people who
  never open get one a week);
* **segment** (the baseline) — one message per broad segment (department), featuring the
  segment's most popular in-stock item, twice a week to everyone at 10:00 UTC.

Reported per arm: recipients, messages, opens, clicks, conversions, revenue, revenue per
recipient and unsubscribe rate. The profile is never updated by the simulated reactions during
the period (both arms see the same knowledge), so the comparison isolates the targeting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from sqlalchemy import select

from concierge.campaigns.definitions import ContactPolicy
from concierge.campaigns.policy import weekly_limit
from concierge.profiles import doc as pdoc
from concierge.profiles.doc import DAY_US
from concierge.sim.response import respond_to_message
from concierge.sim.world import CHANNELS
from concierge.store import tables as t

if TYPE_CHECKING:
    from concierge.facade import Concierge
    from concierge.sim.truth import Truth

HOUR_US = 3_600_000_000
EMAIL = CHANNELS.index("email")


@dataclass
class Arm:
    name: str
    recipients: set[int] = field(default_factory=set)
    messages: int = 0
    opens: int = 0
    clicks: int = 0
    conversions: int = 0
    revenue: float = 0.0
    unsubscribed: set[int] = field(default_factory=set)

    def as_dict(self) -> dict[str, Any]:
        n = max(1, len(self.recipients))
        return {
            "recipients": len(self.recipients),
            "messages": self.messages,
            "opens": self.opens,
            "clicks": self.clicks,
            "conversions": self.conversions,
            "revenue": round(self.revenue, 2),
            "revenue_per_recipient": round(self.revenue / n, 4),
            "unsubscribe_rate": round(len(self.unsubscribed) / n, 4),
        }


def evaluate(cg: Concierge, truth: Truth, *, weeks: int = 8, seed: int = 42) -> dict[str, Any]:
    sh, cat = truth.shoppers, truth.catalog
    start_us = int(cg._now_us())
    with cg.store.read() as conn:
        prod = pl.read_database(
            select(t.products.c.product_id, t.products.c.facets, t.products.c.department),
            conn,
            schema_overrides={
                "product_id": pl.String,
                "facets": pl.String,
                "department": pl.String,
            },
        )
        in_stock = select(t.variants.c.product_id).where(t.variants.c.stock > 0)
        stock = {str(p) for p in conn.execute(in_stock).scalars()}
        docs = {
            pid: pdoc.loads(d)
            for pid, d in conn.execute(
                select(t.profiles.c.person_id, t.profiles.c.doc).where(t.profiles.c.known)
            )
        }
    cat_index = {pid: i for i, pid in enumerate(cat.ids)}
    regular = [
        (pid, f, dep)
        for pid, f, dep in prod.iter_rows()
        if pid in cat_index and pid in stock and cat.seller[cat_index[pid]] < 0
    ]
    if not regular:
        raise ValueError("the simulated store has no product in stock")
    p_ids = [r[0] for r in regular]
    p_sim = np.array([cat_index[p] for p in p_ids])
    facet_names: dict[str, int] = {}
    rows, cols = [], []
    for i, (_pid, facets, _d) in enumerate(regular):
        for f in (facets or "").split("|"):
            if f:
                rows.append(i)
                cols.append(facet_names.setdefault(f, len(facet_names)))
    # dense: a simulated store has hundreds of products and facets, thousands of people
    product_facets = np.zeros((len(regular), len(facet_names)))
    product_facets[rows, cols] = 1.0
    # the people: known shoppers of the truth with email consent now
    people = [i for i, cid in enumerate(sh.ids) if cid in docs]
    people = [i for i in people if docs[sh.ids[i]]["consent"].get("email", [0, "", False])[2]]
    if not people:
        raise ValueError("nobody in the simulated store consented to email")
    s_idx = np.array(people)
    prow, pcol, pval = [], [], []
    for r, i in enumerate(people):
        aff = docs[sh.ids[i]]["affinity"]
        total = sum(v for v in aff.values() if v > 0) or 1.0
        for f, v in aff.items():
            j = facet_names.get(f)
            if j is not None and v > 0:
                prow.append(r)
                pcol.append(j)
                pval.append(v / total)
    person_facets = np.zeros((len(people), len(facet_names)))
    np.add.at(person_facets, (prow, pcol), pval)
    popularity = _popularity(cg, p_ids, start_us)
    scores = person_facets @ product_facets.T + 0.05 * popularity[None, :]
    best = p_sim[np.argmax(scores, axis=1)]
    # the baseline: per department segment, its most popular item
    seg_of = sh.department[s_idx]
    seg_item = {}
    for seg in np.unique(seg_of):
        dep_ok = np.array([cat.department[k] == seg for k in p_sim])
        pool = np.where(dep_ok, popularity, -np.inf)
        seg_item[int(seg)] = (
            int(p_sim[int(np.argmax(pool))])
            if dep_ok.any()
            else int(p_sim[int(np.argmax(popularity))])
        )
    baseline_item = np.array([seg_item[int(g)] for g in seg_of])
    # timing of the individual arm: last active hour (UTC) and own purchase rhythm
    last_seen = np.array([docs[sh.ids[i]]["last_seen_us"] or start_us for i in people])
    hour_utc = (last_seen % DAY_US) // HOUR_US
    rhythm = np.array([_rhythm(docs[sh.ids[i]]) for i in people])
    last_order = np.array([docs[sh.ids[i]]["last_order_us"] or 0 for i in people])
    policy = ContactPolicy()
    arms = {"individual": Arm("individual"), "segment": Arm("segment")}
    rngs = {"individual": np.random.default_rng(seed), "segment": np.random.default_rng(seed + 1)}
    sent_days: dict[str, list[list[int]]] = {k: [[] for _ in people] for k in arms}
    delivered = {k: np.zeros(len(people), int) for k in arms}
    opened = {k: np.zeros(len(people), int) for k in arms}
    for day in range(weeks * 7):
        day_us = start_us + day * DAY_US
        for name, arm in arms.items():
            alive = np.array([r not in arm.unsubscribed for r in range(len(people))])
            last_week = np.array(
                [
                    sum(1 for d in sent_days[name][r] if day - 7 < d <= day)
                    for r in range(len(people))
                ]
            )
            if name == "segment":
                send = alive & (day % 7 in (0, 3))
                at = np.full(len(people), day_us + 10 * HOUR_US)
                item = baseline_item
            else:
                due = (day_us - last_order) >= 0.8 * rhythm * DAY_US
                limits = np.array(
                    [
                        weekly_limit(
                            policy,
                            {
                                "counts": {
                                    "delivered:email": int(delivered[name][r]),
                                    "open:email": int(opened[name][r]),
                                },
                                "answers": {},
                            },
                            "email",
                        )[0]
                        for r in range(len(people))
                    ]
                )
                since = np.array(
                    [
                        day - sent_days[name][r][-1] if sent_days[name][r] else 99
                        for r in range(len(people))
                    ]
                )
                # due by their own rhythm: at most weekly; otherwise keep in touch fortnightly
                send = alive & (last_week < limits) & (((since >= 7) & due) | (since >= 14))
                at = day_us + hour_utc * HOUR_US
                item = best
            r_idx = np.nonzero(send)[0]
            if r_idx.size == 0:
                continue
            local = _local_hour(sh, s_idx[r_idx], at[r_idx])
            resp = respond_to_message(
                sh,
                cat,
                rngs[name],
                s=s_idx[r_idx],
                channel=np.full(r_idx.size, EMAIL),
                local_hour=local,
                sent_last_week=last_week[r_idx],
                product=item[r_idx],
                day=float(truth.config.days + day),  # days since the simulation began
            )
            arm.messages += int(r_idx.size)
            arm.recipients.update(int(r) for r in r_idx)
            arm.opens += int(resp.opened.sum())
            arm.clicks += int(resp.clicked.sum())
            arm.conversions += int(resp.purchased.sum())
            arm.revenue += float(cat.price[item[r_idx]][resp.purchased].sum())
            arm.unsubscribed.update(int(r) for r in r_idx[resp.unsubscribed])
            delivered[name][r_idx] += 1
            opened[name][r_idx] += resp.opened.astype(int)
            for row in r_idx.tolist():
                sent_days[name][row].append(day)
    ind, seg = arms["individual"].as_dict(), arms["segment"].as_dict()
    return {
        "people": len(people),
        "weeks": weeks,
        "seed": seed,
        "individual": ind,
        "segment": seg,
        "individual_wins": ind["revenue_per_recipient"] > seg["revenue_per_recipient"]
        and ind["unsubscribe_rate"] <= seg["unsubscribe_rate"],
    }


def _rhythm(doc: pdoc.Doc) -> float:
    times = sorted(set(doc["order_times"]))
    if len(times) < 2:
        return 30.0
    gaps = np.diff(np.array(times, dtype=np.float64)) / DAY_US
    return float(max(7.0, np.median(gaps)))


def _popularity(cg: Concierge, p_ids: list[str], now_us: int) -> np.ndarray:
    from concierge.campaigns.sources import CatalogView, PopularSource

    ranking = PopularSource(CatalogView(cg.store), now_us=lambda: now_us, days=90).ranking()
    rank = {p: r for r, p in enumerate(ranking)}
    n = max(1, len(ranking))
    return np.array([1.0 - rank[p] / n if p in rank else 0.0 for p in p_ids])


def _local_hour(sh: Any, s: np.ndarray, at_us: np.ndarray) -> np.ndarray:
    from concierge.sim.response import local_hours

    return np.asarray(local_hours(sh, s, at_us))
