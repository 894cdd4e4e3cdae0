"""The frame audiences are evaluated over: profile fields, live cadence, every per-person column.

Cadence flags (``due_soon``, ``overdue``, ``likely_to_sell``, …) are recomputed here from each
person's order times at the evaluation's ``as_of`` with the newest ``cadence`` artifact (its
priors and resale posteriors), so a purchase moves them as soon as its profile is updated;
every other model's per-person columns are joined as stored in its newest version.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import polars as pl
from sqlalchemy import Connection

from concierge.models import anomalies
from concierge.models.anomalies import count_pending
from concierge.models.cadence import CadenceModel
from concierge.models.person_frame import (
    PROFILE_FIELDS,
    order_times,
    paused_gc,
    per_person,
    profile_columns,
    read_docs,
    read_frame_chunks,
)
from concierge.models.registry import Registry

# columns a rule may name before the model that makes them was trained (the contract between
# the parts); they are null, so a comparison with them is false, until the artifact exists
CONTRACT_FIELDS: dict[str, tuple[pl.DataType, str]] = {
    "p_alive": (pl.Float64(), "lifetime: probability the customer is still active"),
    "expected_purchases_30d": (pl.Float64(), "lifetime: expected purchases in 30 days"),
    "expected_purchases_90d": (pl.Float64(), "lifetime: expected purchases in 90 days"),
    "expected_spend": (pl.Float64(), "lifetime: expected spend per order"),
    "clv": (pl.Float64(), "lifetime: discounted customer lifetime value"),
    "churn_risk": (pl.Float64(), "lifetime: calibrated probability of churn"),
    "next_purchase_due_days": (pl.Float64(), "cadence: days until the expected next purchase"),
    "purchase_window_low_days": (pl.Float64(), "cadence: 80% window of the interval, low"),
    "purchase_window_high_days": (pl.Float64(), "cadence: 80% window of the interval, high"),
    "cadence_days": (pl.Float64(), "cadence: the person's typical interval between purchases"),
    "due_soon": (pl.Boolean(), "cadence: the next purchase is due within two weeks"),
    "overdue": (pl.Boolean(), "cadence: later than the 80% window of their own rhythm"),
    "likely_to_sell": (pl.Boolean(), "cadence: a reseller whose purchase is due to be listed"),
    "sell_delay_days": (pl.Float64(), "cadence: typical days from buying to listing"),
    "resale_share": (pl.Float64(), "cadence: share of purchases the person resells"),
    "segment_id": (pl.Int64(), "segments: the person's micro-segment"),
}

# fields whose value moves with time alone (a rule naming one is re-evaluated in full when the
# as-of moves); decayed affinity *shares* do not move (one decay factor for all)
TIME_FIELDS = frozenset(
    {
        "recency_days",
        "days_since_seen",
        "tenure_days",
        "orders_per_year",
        "lifecycle_stage",
        "next_purchase_due_days",
        "due_soon",
        "overdue",
        "likely_to_sell",
    }
)
CADENCE_LIVE = (
    "next_purchase_due_days",
    "purchase_window_low_days",
    "purchase_window_high_days",
    "cadence_days",
    "due_soon",
    "overdue",
    "likely_to_sell",
    "sell_delay_days",
    "resale_share",
)

# the newest cadence model of each registry, kept in memory for the request path
_CADENCE: weakref.WeakKeyDictionary[Registry, tuple[int, CadenceModel]] = (
    weakref.WeakKeyDictionary()
)


def cadence_model(registry: Registry) -> tuple[CadenceModel | None, int | None]:
    """The newest cadence model (loaded once per version: one indexed query per call)."""
    version = registry.latest_version("cadence")
    if version is None:
        return None, None
    hit = _CADENCE.get(registry)
    if hit is None or hit[0] != version:
        hit = (version, CadenceModel.from_artifact(registry.load("cadence", version)))
        _CADENCE[registry] = hit
    return hit[1], version


def model_versions(registry: Registry) -> dict[str, int]:
    """The newest version of every model with per-person columns (what a frame reads)."""
    newest: dict[str, int] = {}
    for info in registry.versions():  # newest first within each name
        if info.name not in newest:
            newest[info.name] = info.version if info.meta.get("per_person") else -1
    return {k: v for k, v in sorted(newest.items()) if v >= 0}


def known_fields(registry: Registry) -> dict[str, pl.DataType]:
    """Every field a rule may name, with its type."""
    fields = {k: v[0] for k, v in PROFILE_FIELDS.items()}
    fields.update({k: v[0] for k, v in CONTRACT_FIELDS.items()})
    for info in registry.versions():
        for col in info.meta.get("per_person", []):
            fields.setdefault(col, pl.Float64())
    return fields


def field_docs(registry: Registry) -> dict[str, str]:
    out = {k: v[1] for k, v in PROFILE_FIELDS.items()}
    out.update({k: v[1] for k, v in CONTRACT_FIELDS.items()})
    for info in registry.versions():
        for col, doc in (info.meta.get("per_person_doc") or {}).items():
            out.setdefault(col, doc)
    return out


def build(
    conn: Connection,
    registry: Registry,
    *,
    people: Iterable[str] | None,
    as_of_us: int,
    half_life_days: float,
) -> tuple[pl.DataFrame, dict[str, int]]:
    """The evaluation frame for ``people`` (everyone when ``None``) and the model versions used.

    The documents are read and decoded a chunk at a time (only the parts the frame reads, see
    :class:`~concierge.models.person_frame.FrameDoc`) and each chunk is summarized column by
    column (:func:`~concierge.models.person_frame.profile_columns`); only the chunk's frame, its
    order times and the rare answers are kept.
    """
    parts: list[pl.DataFrame] = []
    owners: list[npt.NDArray[np.int64]] = []
    times: list[npt.NDArray[np.int64]] = []
    answered: dict[str, set[str]] = {}
    offset = 0
    with paused_gc():  # chunks of containers and no cycles (see paused_gc)
        for chunk, docs in read_frame_chunks(conn, people):
            for i in [i for i, d in enumerate(docs) if d.answers]:  # rare: a few people answer
                p = chunk[i]
                answered[p] = set(docs[i].answers)
                if any(q.startswith(anomalies.PREFIX) for q in docs[i].answers):
                    # answers that keep items apart from taste (a few queries each, the whole
                    # document among them)
                    doc = read_docs(conn, [p])[p]
                    cids, aids = anomalies.aliases_of(conn, [p])
                    lines = anomalies.excluded_lines(conn, doc, cids, aids)
                    corrected = anomalies.correct_doc(doc, lines, half_life_days=half_life_days)
                    docs[i] = msgspec.structs.replace(docs[i], affinity=corrected["affinity"])
            parts.append(
                profile_columns(chunk, docs, as_of_us=as_of_us, half_life_days=half_life_days)
            )
            owner, ts = order_times(docs)
            owners.append(owner + offset)
            times.append(ts)
            offset += len(docs)
    frame = (
        pl.concat(parts, how="vertical")
        if parts
        else pl.DataFrame(schema={k: v[0] for k, v in PROFILE_FIELDS.items()})
    )
    # by person id in code-point order (a database's collation may differ; chunks of a list of
    # ids are sorted each, not their union)
    order = frame["person_id"].arg_sort().to_numpy()
    if np.any(order != np.arange(order.size)):
        frame = frame[order]
        inverse = np.empty_like(order)
        inverse[order] = np.arange(order.size)
        owners = [inverse[o] for o in owners]
    persons = frame["person_id"].to_list()
    pending = count_pending(conn, persons, answered)
    if pending:
        frame = frame.with_columns(
            pl.col("person_id")
            .replace_strict(pending, default=0, return_dtype=pl.Int64)
            .alias("questions_pending")
        )
    pp = per_person(registry, skip=("cadence",))
    versions = dict(pp.versions)
    if pp.frame.height and frame.height:
        extra = pp.frame.filter(pl.col("person_id").is_in(persons))
        frame = frame.join(extra, on="person_id", how="left")
    model, version = cadence_model(registry)
    if model is not None and frame.height:
        ids = np.array(persons, dtype=np.str_)
        cols = model.person_columns_flat(
            ids,
            np.concatenate(owners) if owners else np.zeros(0, dtype=np.int64),
            np.concatenate(times) if times else np.zeros(0, dtype=np.int64),
            as_of_us=as_of_us,
        )
        live: dict[str, Any] = {k: cols[k] for k in CADENCE_LIVE}
        frame = frame.drop([c for c in CADENCE_LIVE if c in frame.columns]).with_columns(
            **{k: pl.Series(k, v) for k, v in live.items()}
        )
        frame = frame.with_columns(
            pl.col("next_purchase_due_days").fill_nan(None),
        )
        if version is not None:
            versions["cadence"] = version
    for name, (dtype, _doc) in CONTRACT_FIELDS.items():
        if name not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=dtype).alias(name))
    return frame, versions
