"""Best send time per person, in their own time zone, from their engagement history.

A person's engagement (``open`` and ``click`` events, a click counting ``click_weight``
opens) is counted by *local* hour of day, in the person's time zone (their newest
``timezone`` trait, else the policy's default zone). Few people open often enough for their
own 24 counts to mean much, so each person's hour distribution is shrunk toward the
population's (a Dirichlet prior with ``prior_strength`` pseudo-engagements spread like the
population): ``p(h) = (n_h + k * pop_h) / (n + k)``. The best hour is the mode of that
posterior; someone without engagement gets the population's best hour, and if nobody has
engaged yet the hour of day of their last activity (the old rule) is kept.

Everything is columnar (Polars over the event log): one read of the engagement events, one
of the ``timezone`` traits (from ``identify`` payloads with a JSON path, no profile document
parsed), group-bys per (person, local hour), and the due time computed per time zone (one
conversion per distinct zone, not per person), so it scales with the audience like the rest
of the broadcast path.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl
from sqlalchemy import Connection, select

from concierge.models.people import identities, with_person
from concierge.store import tables as t

HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US


def _valid_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def zones(conn: Connection, ids: pl.DataFrame) -> pl.DataFrame:
    """``person_id`` → ``tz``: each person's newest valid ``timezone`` trait."""
    ev = t.events
    frame = pl.read_database(
        select(ev.c.customer_id, ev.c.anonymous_id, ev.c.ts_us, ev.c.payload).where(
            ev.c.type == "identify", ev.c.payload.like('%"timezone"%')
        ),
        conn,
        schema_overrides={
            "customer_id": pl.String,
            "anonymous_id": pl.String,
            "ts_us": pl.Int64,
            "payload": pl.String,
        },
    )
    if frame.height == 0:
        return pl.DataFrame(schema={"person_id": pl.String, "tz": pl.String})
    frame = frame.with_columns(
        pl.col("payload").str.json_path_match("$.traits.timezone").alias("tz")
    ).filter(pl.col("tz").is_not_null())
    frame = with_person(frame, ids).sort("ts_us").group_by("person_id").agg(pl.col("tz").last())
    ok = {z for z in frame["tz"].unique().to_list() if _valid_zone(z)}
    return frame.filter(pl.col("tz").is_in(list(ok))).select("person_id", "tz")


def best_hours(
    conn: Connection,
    people: pl.DataFrame,
    *,
    default_tz: str,
    now_us: int,
    days: float = 180.0,
    prior_strength: float = 4.0,
    click_weight: float = 2.0,
) -> pl.DataFrame:
    """For ``people`` (a frame with ``person_id`` and ``last_seen_us``): ``person_id``, ``tz``,
    ``hour`` (0-23, local) and ``n_engaged`` (their weighted engagements counted)."""
    ids = identities(conn)
    ev = t.events
    raw = pl.read_database(
        select(ev.c.customer_id, ev.c.anonymous_id, ev.c.ts_us, ev.c.type).where(
            ev.c.type.in_(["open", "click"]),
            ev.c.ts_us >= now_us - int(days * DAY_US),
            ev.c.ts_us <= now_us,
        ),
        conn,
        schema_overrides={
            "customer_id": pl.String,
            "anonymous_id": pl.String,
            "ts_us": pl.Int64,
            "type": pl.String,
        },
    )
    tz = zones(conn, ids)
    base = (
        people.select("person_id", "last_seen_us")
        .join(tz, on="person_id", how="left")
        .with_columns(pl.col("tz").fill_null(default_tz))
    )
    eng = (
        with_person(raw, ids)
        .select("person_id", "ts_us", "type")
        .join(base.select("person_id", "tz"), on="person_id", how="inner")
    )
    eng = _local_hour(eng, "ts_us").with_columns(
        pl.when(pl.col("type") == "click").then(click_weight).otherwise(1.0).alias("w")
    )
    counts = eng.group_by("person_id", "hour").agg(pl.col("w").sum().alias("n_h"))
    if counts.height == 0:  # nobody engaged yet: the hour of their last activity
        out = _local_hour(
            base.with_columns(pl.col("last_seen_us").fill_null(now_us).alias("ts_us")), "ts_us"
        )
        return out.select("person_id", "tz", pl.col("hour"), pl.lit(0.0).alias("n_engaged"))
    pop = counts.group_by("hour").agg(pl.col("n_h").sum())
    pop = pl.DataFrame({"hour": pl.Series(range(24), dtype=pl.Int8)}).join(
        pop.with_columns(pl.col("hour").cast(pl.Int8)), on="hour", how="left"
    )
    pop = pop.with_columns(pl.col("n_h").fill_null(0.0)).with_columns(
        (pl.col("n_h") / pl.col("n_h").sum()).alias("pop")
    )
    pop_best = int(pop.sort(["pop", "hour"], descending=[True, False])["hour"][0])
    per = counts.with_columns(pl.col("hour").cast(pl.Int8)).join(
        pop.select("hour", "pop"), on="hour", how="left"
    )
    totals = per.group_by("person_id").agg(pl.col("n_h").sum().alias("n"))
    # the posterior mode: only hours a person engaged in can beat the population's best hour
    # (elsewhere their posterior is k * pop_h / (n + k) ≤ the same at pop_best)
    cand = per.join(totals, on="person_id").with_columns(
        ((pl.col("n_h") + prior_strength * pl.col("pop")) / (pl.col("n") + prior_strength)).alias(
            "post"
        )
    )
    at_pop = (
        totals.with_columns(pl.lit(pop_best, dtype=pl.Int8).alias("hour"))
        .join(per.select("person_id", "hour", "n_h"), on=["person_id", "hour"], how="left")
        .with_columns(
            (
                (pl.col("n_h").fill_null(0.0) + prior_strength * float(pop["pop"][pop_best]))
                / (pl.col("n") + prior_strength)
            ).alias("post")
        )
        .select("person_id", "hour", "post", "n")
    )
    best = (
        pl.concat([cand.select("person_id", "hour", "post", "n"), at_pop])
        .sort(["person_id", "post", "hour"], descending=[False, True, False])
        .group_by("person_id", maintain_order=True)
        .first()
    )
    return (
        base.join(best, on="person_id", how="left")
        .with_columns(
            pl.col("hour").fill_null(pop_best).cast(pl.Int8),
            pl.col("n").fill_null(0.0).alias("n_engaged"),
        )
        .select("person_id", "tz", "hour", "n_engaged")
    )


def _local_hour(frame: pl.DataFrame, col: str) -> pl.DataFrame:
    """Add ``hour``: the local hour of ``col`` (epoch µs) in each row's ``tz``, one conversion
    per distinct zone."""
    parts = []
    for zone in frame["tz"].unique().to_list():
        part = frame.filter(pl.col("tz") == zone)
        parts.append(
            part.with_columns(
                pl.from_epoch(pl.col(col), time_unit="us")
                .dt.replace_time_zone("UTC")
                .dt.convert_time_zone(zone)
                .dt.hour()
                .cast(pl.Int8)
                .alias("hour")
            )
        )
    if not parts:
        return frame.with_columns(pl.lit(None, dtype=pl.Int8).alias("hour"))
    return pl.concat(parts)


def due_at(hours: pl.DataFrame, at_us: int) -> pl.DataFrame:
    """Add ``due`` (epoch µs): the first local ``hour``:00 at or after ``at_us`` in each row's
    ``tz`` (wall-clock hours, so daylight saving moves the UTC instant, not the local hour)."""
    parts = []
    for zone in hours["tz"].unique().to_list():
        part = hours.filter(pl.col("tz") == zone)
        midnight = (
            pl.lit(at_us, dtype=pl.Int64)
            .pipe(lambda e: pl.from_epoch(e, time_unit="us"))
            .dt.replace_time_zone("UTC")
            .dt.convert_time_zone(zone)
            .dt.truncate("1d")
        )
        local = midnight.dt.offset_by(pl.format("{}h", pl.col("hour")))
        first = local.dt.epoch("us")
        nxt = local.dt.offset_by("1d").dt.epoch("us")
        parts.append(
            part.with_columns(
                pl.when(first >= at_us).then(first).otherwise(nxt).cast(pl.Int64).alias("due")
            )
        )
    if not parts:
        return hours.with_columns(pl.lit(None, dtype=pl.Int64).alias("due"))
    return pl.concat(parts)
