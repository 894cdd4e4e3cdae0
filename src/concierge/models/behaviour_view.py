"""What the customer 360 shows of cadence, segments and out-of-pattern behaviour, read live.

Everything is computed at read time from the newest artifacts and the person's own log, against
``as_of``: a purchase moves the cadence flags at once, and an answer to a clarifying question
takes the item out of the person's affinities at once (and after a rebuild, since both come from
the log).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl
from sqlalchemy import Connection, and_, or_, select

from concierge.audiences.frame import cadence_model
from concierge.clock import from_us
from concierge.models import anomalies
from concierge.models.behaviour_train import history
from concierge.models.cadence import ALL, interval_stats
from concierge.models.people import deepest
from concierge.models.registry import Registry
from concierge.profiles import doc as pdoc
from concierge.profiles.doc import DAY_US
from concierge.store import tables as t


def _reason(code: str, text: str, **data: Any) -> dict[str, Any]:
    return {"code": code, "text": text, "data": data}


def _r(x: float | None, nd: int = 1) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), nd)


def purchase_times(
    conn: Connection, cids: Sequence[str], aids: Sequence[str]
) -> dict[str, list[int]]:
    """The person's purchase times per most specific category (from the log)."""
    who: list[Any] = []
    if cids:
        who.append(t.events.c.customer_id.in_(list(cids)))
    if aids:
        who.append(and_(t.events.c.customer_id.is_(None), t.events.c.anonymous_id.in_(list(aids))))
    if not who:
        return {}
    rows = conn.execute(
        select(t.events.c.ts_us, t.event_items.c.facets)
        .join(t.event_items, t.event_items.c.event_id == t.events.c.event_id)
        .where(or_(*who), t.events.c.type == "purchase")
    ).all()
    if not rows:
        return {}
    f = pl.DataFrame(
        [tuple(r) for r in rows], schema={"ts_us": pl.Int64, "facets": pl.String}, orient="row"
    ).with_columns(deepest("cat", pl.col("facets")).alias("category"))
    out: dict[str, list[int]] = {}
    for cat, times in (
        f.filter(pl.col("category").is_not_null())
        .group_by("category")
        .agg(pl.col("ts_us").unique().sort())
        .iter_rows()
    ):
        out[cat] = list(times)
    return out


def cadence_view(
    conn: Connection,
    registry: Registry,
    person: str,
    doc: pdoc.Doc,
    cids: Sequence[str],
    aids: Sequence[str],
    *,
    as_of_us: int,
) -> dict[str, Any] | None:
    model, version = cadence_model(registry)
    if model is None:
        return None
    pid = np.array([person], dtype=np.str_)
    overall = model.person_columns(pid, [doc["order_times"]], as_of_us=as_of_us)
    by_cat = purchase_times(conn, cids, aids)
    cats = sorted(by_cat)
    cats_out = []
    if cats:
        st = np.array([interval_stats(np.asarray(by_cat[c], dtype=np.float64)) for c in cats])
        last = np.array([max(by_cat[c]) for c in cats], dtype=np.int64)
        w = model.windows(
            np.array(cats, dtype=np.str_), st[:, 0], st[:, 1], st[:, 2], last, as_of_us=as_of_us
        )
        for i, c in enumerate(cats):
            cats_out.append(
                {
                    "category": c,
                    "purchases": len(by_cat[c]),
                    "last_purchase": from_us(int(last[i])).isoformat(),
                    "expected_interval_days": _r(w["expected_interval_days"][i]),
                    "window_days": [_r(w["window_low_days"][i]), _r(w["window_high_days"][i])],
                    "next_purchase_due_days": _r(w["next_purchase_due_days"][i]),
                    "due_soon": bool(w["due_soon"][i]),
                    "overdue": bool(w["overdue"][i]),
                }
            )
    n = doc["n_orders"]
    out: dict[str, Any] = {
        "version": version,
        "next_purchase_due_days": _r(overall["next_purchase_due_days"][0]),
        "purchase_window_days": [
            _r(overall["purchase_window_low_days"][0]),
            _r(overall["purchase_window_high_days"][0]),
        ],
        "cadence_days": _r(overall["cadence_days"][0]),
        "due_soon": bool(overall["due_soon"][0]),
        "overdue": bool(overall["overdue"][0]),
        "likely_to_sell": bool(overall["likely_to_sell"][0]),
        "sell_delay_days": _r(overall["sell_delay_days"][0]),
        "resale_share": _r(overall["resale_share"][0], 3),
        "categories": cats_out,
    }
    times = sorted(set(doc["order_times"]))
    reasons = [
        _reason(
            "cadence.evidence",
            f"{max(len(times) - 1, 0)} intervals of their own, shrunk toward the population "
            f"of all buyers"
            if n
            else "no purchase yet: the population's rhythm",
            intervals=max(len(times) - 1, 0),
            category=ALL,
        )
    ]
    if times:
        since = (as_of_us - times[-1]) / DAY_US
        reasons.append(
            _reason(
                "cadence.since_last",
                f"{since:.0f} days since the last purchase",
                days=round(since, 1),
            )
        )
    if out["overdue"]:
        reasons.append(_reason("cadence.overdue", "later than 80% of their usual intervals"))
    elif out["due_soon"]:
        reasons.append(_reason("cadence.due_soon", "their next purchase is due within two weeks"))
    if out["likely_to_sell"]:
        reasons.append(
            _reason(
                "cadence.resale",
                "a reseller holding a purchase inside their usual resale window",
                share=out["resale_share"],
            )
        )
    out["reasons"] = reasons
    return out


def segment_view(conn: Connection, registry: Registry, person: str) -> dict[str, Any] | None:
    version = registry.latest_version("segments")
    if version is None:
        return None
    m, d = t.segment_members, t.segment_defs
    row = conn.execute(
        select(m.c.segment_id, d.c.label, d.c.size, d.c.figures)
        .join(d, (d.c.run_id == m.c.run_id) & (d.c.segment_id == m.c.segment_id))
        .where(m.c.run_id == version, m.c.person_id == person)
    ).first()
    if row is None:
        return {
            "version": version,
            "segment_id": None,
            "reasons": [_reason("segments.not_in_run", "joined after the last segmentation run")],
        }
    import orjson

    figs = orjson.loads(row.figures)
    return {
        "version": version,
        "segment_id": row.segment_id,
        "label": row.label,
        "size": row.size,
        "history": history(conn, person),
        "reasons": [
            _reason(
                "segments.distinguishing",
                f"{x['feature']} at {x['z']:+.1f} standard deviations from the population",
                feature=x["feature"],
                z=x["z"],
            )
            for x in figs.get("distinguishing", [])[:4]
        ],
    }


def anomalies_view(
    conn: Connection,
    registry: Registry,
    person: str,
    doc: pdoc.Doc,
    lines: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    qs = anomalies.pending(conn, person, doc)
    kept = [
        {"product_id": x["product_id"], "type": x["type"], "at": from_us(x["ts_us"]).isoformat()}
        for x in lines
    ]
    reasons = [
        _reason(
            "anomalies.question",
            f"{q['text']} ({q['dimension']} {q['value']} is unusual "
            f"for them: surprise {q['surprise']})",
            question_id=q["question_id"],
        )
        for q in qs
        if q["status"] == "pending"
    ]
    if kept:
        reasons.append(
            _reason(
                "anomalies.kept_apart",
                f"{len(kept)} interactions kept apart "
                "from taste (answered as a gift or for someone else)",
            )
        )
    return {
        "version": registry.latest_version("anomalies"),
        "questions": qs,
        "pending": sum(1 for q in qs if q["status"] == "pending"),
        "kept_apart_from_taste": kept,
        "reasons": reasons,
    }


def behaviour(
    conn: Connection,
    registry: Registry,
    person: str,
    doc: pdoc.Doc,
    cids: Sequence[str],
    aids: Sequence[str],
    *,
    as_of_us: int,
    half_life_days: float,
) -> tuple[pdoc.Doc, dict[str, Any]]:
    """The doc corrected by the person's answers, and the predictions of this part."""
    lines = anomalies.excluded_lines(conn, doc, cids, aids)
    corrected = anomalies.correct_doc(doc, lines, half_life_days=half_life_days)
    preds: dict[str, Any] = {}
    cad = cadence_view(conn, registry, person, doc, cids, aids, as_of_us=as_of_us)
    if cad is not None:
        preds["cadence"] = cad
    seg = segment_view(conn, registry, person)
    if seg is not None:
        preds["segments"] = seg
    preds["anomalies"] = anomalies_view(conn, registry, person, doc, lines)
    return corrected, preds
