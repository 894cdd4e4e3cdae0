"""Queries the marketer dashboard needs beyond the parts' own facade methods.

Everything here reads what the parts already store (segment runs and members, audience changes,
profiles and the newest per-person artifacts) and shapes it for a page: no model is fitted and
nothing is written. The headline predictions are one vectorised pass over the in-memory
per-person frame (Polars), not a loop over people, so the overview stays fast on large stores.
"""

from __future__ import annotations

from typing import Any, Literal

import polars as pl
from sqlalchemy import Connection, select

from concierge.clock import from_us
from concierge.errors import InputError, NotFoundError
from concierge.models.behaviour_train import segment_list
from concierge.store import tables as t

SegmentOrder = Literal["size", "value", "churn", "recency"]

# what "sort by value" means on the segments page: CLV when the lifetime model fed the
# segmentation, else net revenue (always present)
_VALUE = ("clv", "net_revenue")

#: a person counts as "at high churn risk" on the overview from this calibrated probability on
HIGH_CHURN = 0.5


def _figure(seg: dict[str, Any], name: str) -> float:
    v = (seg.get("figures") or {}).get(name)
    return float(v) if v is not None else float("-inf")


def sorted_segments(
    conn: Connection, *, run: int | None = None, order: SegmentOrder = "size"
) -> dict[str, Any]:
    """The segments of a run, sorted for the segments page.

    ``size`` puts the biggest first; ``value`` the highest mean CLV (or net revenue when the run
    has no CLV); ``churn`` the highest mean churn risk; ``recency`` the most recently active
    (smallest mean days since the last purchase). Ties go to the higher net revenue, then the
    bigger segment, then the smaller id, so the page is stable from one load to the next.
    """
    data = segment_list(conn, run)
    segs = list(data["segments"])

    def ties(s: dict[str, Any]) -> tuple[float, float, int]:
        return (-_figure(s, "net_revenue"), -float(s["size"]), int(s["segment_id"]))

    if order == "size":
        segs.sort(key=lambda s: (-s["size"], int(s["segment_id"])))
    elif order == "value":
        name = next(
            (n for n in _VALUE if any(_figure(s, n) > float("-inf") for s in segs)), "net_revenue"
        )
        segs.sort(key=lambda s: (-_figure(s, name), *ties(s)))
    elif order == "churn":
        segs.sort(key=lambda s: (-_figure(s, "churn_risk"), *ties(s)))
    elif order == "recency":
        segs.sort(key=lambda s: (_recency(s), *ties(s)))
    else:  # pragma: no cover - the facade validates the order
        raise InputError.one("order", "one of size, value, churn, recency")
    total = sum(s["size"] for s in segs)
    for s in segs:
        s["share"] = s["size"] / total if total else 0.0
    top = max((s["share"] for s in segs), default=0.0)
    return {"run_id": data["run_id"], "people": total, "max_share": top or 1.0, "segments": segs}


def _recency(seg: dict[str, Any]) -> float:
    v = (seg.get("figures") or {}).get("recency_days")
    return float(v) if v is not None else float("inf")


def segment_detail(
    conn: Connection, segment_id: int, *, run: int | None = None, limit: int = 50, offset: int = 0
) -> dict[str, Any]:
    """One segment of a run with a page of its members (orders, revenue, last seen), biggest
    spenders first, and its size in every run it appears in."""
    data = segment_list(conn, run)
    seg = next((s for s in data["segments"] if s["segment_id"] == segment_id), None)
    if seg is None:
        raise NotFoundError("segment", f"{segment_id} in run {data['run_id']}")
    m, p = t.segment_members, t.profiles
    rows = conn.execute(
        select(p.c.person_id, p.c.known, p.c.n_orders, p.c.revenue, p.c.last_seen_us)
        .join(m, m.c.person_id == p.c.person_id)
        .where(m.c.run_id == data["run_id"], m.c.segment_id == segment_id)
        .order_by(p.c.revenue.desc(), p.c.person_id)
        .limit(limit)
        .offset(offset)
    ).all()
    d = t.segment_defs
    sizes = [
        {"run_id": r, "size": n, "label": lab}
        for r, n, lab in conn.execute(
            select(d.c.run_id, d.c.size, d.c.label)
            .where(d.c.segment_id == segment_id)
            .order_by(d.c.run_id)
        )
    ]
    return {
        "run_id": data["run_id"],
        "segment": seg,
        "runs": sizes,
        "members": [
            {
                "person_id": pid,
                "known": bool(known),
                "orders": int(n),
                "revenue": float(rev),
                "last_seen": from_us(int(seen)).isoformat(),
            }
            for pid, known, n, rev, seen in rows
        ],
        "total": int(seg["size"]),
    }


def recent_audience_changes(
    conn: Connection, audience_id: str, *, limit: int
) -> list[dict[str, Any]]:
    """The newest entered/left changes of an audience, newest first."""
    c = t.audience_changes
    rows = conn.execute(
        select(c.c.seq, c.c.person_id, c.c.change, c.c.at_us)
        .where(c.c.audience_id == audience_id)
        .order_by(c.c.seq.desc())
        .limit(limit)
    ).all()
    return [{"seq": s, "person_id": pid, "change": ch, "at_us": a} for s, pid, ch, a in rows]


#: the prediction columns shown next to a person in member lists, when a model provides them
MEMBER_COLUMNS = ("clv", "churn_risk", "p_alive", "due_soon", "overdue", "segment_id")


def people_figures(
    conn: Connection, predictions: pl.DataFrame, person_ids: list[str]
) -> list[dict[str, Any]]:
    """Orders, revenue and last seen (profiles) plus the member-list prediction columns of
    ``person_ids``, in that order; a person without a profile is left out."""
    if not person_ids:
        return []
    p = t.profiles
    from concierge.store.engine import among

    prof: dict[str, Any] = {}
    for clause in among(conn, p.c.person_id, person_ids):
        for r in conn.execute(
            select(p.c.person_id, p.c.known, p.c.n_orders, p.c.revenue, p.c.last_seen_us).where(
                clause
            )
        ):
            prof[r.person_id] = r
    cols = [c for c in MEMBER_COLUMNS if c in predictions.columns]
    preds: dict[str, dict[str, Any]] = {}
    if cols and predictions.height:
        for row in predictions.select("person_id", *cols).iter_rows(named=True):
            preds[row.pop("person_id")] = row
    out = []
    for pid in person_ids:
        rec = prof.get(pid)
        if rec is None:
            continue
        out.append(
            {
                "person_id": pid,
                "known": bool(rec.known),
                "orders": int(rec.n_orders),
                "revenue": float(rec.revenue),
                "last_seen": from_us(int(rec.last_seen_us)).isoformat(),
                **{c: preds.get(pid, {}).get(c) for c in cols},
            }
        )
    return out


def headline(
    frame: pl.DataFrame,
    conn: Connection,
    *,
    versions: dict[str, int],
    high_churn: float = HIGH_CHURN,
) -> dict[str, Any] | None:
    """The overview's headline predictions; ``None`` when no per-person model was trained.

    ``frame`` is the joined per-person frame (:meth:`Concierge.predictions`); each figure is
    present only when the column that feeds it exists, so a store with only the lifetime model
    shows CLV and churn but no cadence figures.
    """
    if not versions:
        return None
    cols = set(frame.columns)
    aggs: list[pl.Expr] = []
    if "churn_risk" in cols:
        aggs += [
            (pl.col("churn_risk") >= high_churn).sum().alias("high_churn"),
            pl.col("churn_risk").is_not_null().sum().alias("churn_scored"),
        ]
    if "clv" in cols:
        aggs += [pl.col("clv").sum().alias("total_clv"), pl.col("clv").mean().alias("mean_clv")]
    if "p_alive" in cols:
        aggs.append((pl.col("p_alive") >= 0.5).sum().alias("likely_active"))
    for flag in ("due_soon", "overdue", "likely_to_sell"):
        if flag in cols:
            aggs.append(pl.col(flag).cast(pl.Boolean).sum().alias(flag))
    out: dict[str, Any] = {"models": versions, "people_scored": frame.height}
    if aggs and frame.height:
        out |= {
            k: (None if v is None else float(v))
            for k, v in frame.select(aggs).row(0, named=True).items()
        }
    elif aggs:
        out |= dict.fromkeys(frame.select(aggs).columns, 0.0)
    run = conn.execute(
        select(t.segment_runs.c.run_id, t.segment_runs.c.n_segments, t.segment_runs.c.as_of_us)
        .order_by(t.segment_runs.c.run_id.desc())
        .limit(1)
    ).first()
    if run is not None:
        out["segments"] = int(run.n_segments)
        out["segment_run"] = int(run.run_id)
    out["high_churn_threshold"] = high_churn
    return out
