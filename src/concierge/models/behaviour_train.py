"""The trainers of ``concierge train`` for cadence, segments and the out-of-pattern scan, and the
segmentation runs (memberships per run, flows between runs, a person's history)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import orjson
import polars as pl
from sqlalchemy import Connection, select

from concierge.audiences import frame as aframe
from concierge.clock import from_us
from concierge.errors import NotFoundError
from concierge.models import anomalies, cadence, people
from concierge.models.segments import SegmentModel, describe, design
from concierge.models.training import TrainContext, TrainReport
from concierge.settings import Settings
from concierge.store import tables as t

CADENCE_DOC = {
    "next_purchase_due_days": "days from the model's as-of to the expected next purchase (any)",
    "purchase_window_low_days": "80% window of the next interval, low end (days)",
    "purchase_window_high_days": "80% window of the next interval, high end (days)",
    "cadence_days": "typical days between purchases (posterior, shrunk to the population)",
    "due_soon": "the expected next purchase is within due_soon_days of the as-of",
    "overdue": "the as-of is past the 80% window of the person's own rhythm",
    "likely_to_sell": "a reseller holding a purchase inside its usual resale window",
    "sell_delay_days": "typical days from buying an item to listing it (posterior median)",
    "resale_share": "share of single-item purchases the person lists again (posterior mean)",
}


class CadenceTrainer:
    name = "cadence"

    def __init__(self, config: cadence.CadenceConfig | None = None) -> None:
        self.config = config

    def train(self, ctx: TrainContext) -> TrainReport:
        ctx.report("cadence: reading the log", 0.0)
        with ctx.store.read() as conn:
            ev, it = people.read(conn, t.events.c.ts_us <= ctx.as_of_us)
        occ = cadence.occasions(ev, it)
        if occ.height == 0:
            return TrainReport(self.name, skipped="no purchases yet")
        ctx.report("cadence: fitting", 0.4)
        model = cadence.fit_from_log(ev, it, self.config)
        times = (
            occ.filter(pl.col("category") == cadence.ALL)
            .group_by("person_id")
            .agg(pl.col("ts_us").sort())
            .sort("person_id")
        )
        ids = times["person_id"].to_numpy().astype(np.str_)
        cols = model.person_columns(ids, times["ts_us"].to_list(), as_of_us=ctx.as_of_us)
        arrays, meta = model.to_artifact()
        arrays = {**arrays, "person_id": ids, **cols}
        metrics = {
            "people": int(ids.size),
            "pairs": int(model.person_.size),
            "categories": int(model.categories_.size),
            "sellers_with_delays": int(model.seller_.size),
            "due_soon": int(cols["due_soon"].sum()),
            "overdue": int(cols["overdue"].sum()),
            "likely_to_sell": int(cols["likely_to_sell"].sum()),
            "median_cadence_days": float(np.median(cols["cadence_days"])),
        }
        info = ctx.registry.save(
            self.name,
            arrays,
            config=model.get_config(),
            metrics=metrics,
            meta=meta | {"per_person": list(CADENCE_DOC), "per_person_doc": CADENCE_DOC},
            as_of_us=ctx.as_of_us,
            log_seq=ctx.log_seq,
            created_us=int(ctx.clock.now().timestamp() * 1e6),
        )
        return TrainReport(self.name, artifacts=[info], metrics=metrics)


class SegmentsTrainer:
    name = "segments"

    def __init__(self, *, keep_runs: int = 30, **config: Any) -> None:
        self.keep_runs = keep_runs  # memberships kept for this many runs (history and flows)
        self.config = config

    def train(self, ctx: TrainContext) -> TrainReport:
        ctx.report("segments: features", 0.0)
        started = time.perf_counter()
        started_cpu = time.process_time()
        with ctx.store.read() as conn:
            frame, _versions = aframe.build(
                conn,
                ctx.registry,
                people=None,
                as_of_us=ctx.as_of_us,
                half_life_days=ctx.settings.affinity_half_life_days,
            )
        frame = frame.drop("segment_id") if "segment_id" in frame.columns else frame
        if frame.height == 0:
            return TrainReport(self.name, skipped="no profiles yet")
        features_s = time.perf_counter() - started
        features_cpu_s = time.process_time() - started_cpu  # every thread of the process
        started = time.perf_counter()
        x, names = design(frame)
        previous = None
        last = ctx.registry.latest_version(self.name)
        if last is not None:
            old = SegmentModel.from_artifact(ctx.registry.load(self.name, last))
            previous = (old.raw_centroids(), old.ids_, old.features_)
        ctx.report("segments: clustering", 0.3)
        model = SegmentModel(**self.config).fit(x, names, previous=previous)
        seg = model.segment_of
        defs = describe(frame, seg, model.personas())
        arrays, meta = model.to_artifact()
        ids = frame["person_id"].to_numpy().astype(np.str_)
        arrays = {**arrays, "person_id": ids, "segment_id": seg}
        sizes = np.array([d["size"] for d in defs])
        kept = 0 if previous is None else int(np.isin(model.ids_, previous[1]).sum())
        metrics = {
            "people": int(ids.size),
            "segments": len(defs),
            "median_size": float(np.median(sizes)),
            "largest": int(sizes.max()),
            "inertia_per_person": model.inertia_ / max(ids.size, 1),
            "ids_kept_from_previous_run": kept,
        }
        fit_s = time.perf_counter() - started
        started = time.perf_counter()
        now_us = int(ctx.clock.now().timestamp() * 1e6)
        ctx.report("segments: storing", 0.8)
        with ctx.store.write() as conn:
            info = ctx.registry.save(
                self.name,
                arrays,
                config=model.get_config(),
                metrics=metrics,
                meta=meta
                | {
                    "per_person": ["segment_id"],
                    "per_person_doc": {"segment_id": "the person's micro-segment (stable id)"},
                    "labels": {str(d["segment_id"]): d["label"] for d in defs},
                },
                as_of_us=ctx.as_of_us,
                log_seq=ctx.log_seq,
                created_us=now_us,
                conn=conn,
            )
            run = info.version
            for tbl in (t.segment_members, t.segment_defs, t.segment_runs):
                conn.execute(tbl.delete().where(tbl.c.run_id == run))  # a reused version number
            conn.execute(
                t.segment_runs.insert().values(
                    run_id=run,
                    as_of_us=ctx.as_of_us,
                    created_us=now_us,
                    n_people=int(ids.size),
                    n_segments=len(defs),
                )
            )
            conn.execute(
                t.segment_defs.insert(),
                [
                    {
                        "run_id": run,
                        "segment_id": d["segment_id"],
                        "label": d["label"],
                        "size": d["size"],
                        "figures": orjson.dumps(
                            {"figures": d["figures"], "distinguishing": d["distinguishing"]}
                        ).decode(),
                    }
                    for d in defs
                ],
            )
            stale_runs = t.segment_members.c.run_id <= run - self.keep_runs
            conn.execute(t.segment_members.delete().where(stale_runs))
            ctx.store.bulk_insert(
                conn,
                t.segment_members,
                pl.DataFrame(
                    {"run_id": np.full(ids.size, run), "person_id": ids, "segment_id": seg}
                ),
            )
        # where the time went (the report only; the artifact's metrics are about the model)
        timing = {
            "features_s": features_s,
            "features_cpu_s": features_cpu_s,
            "fit_s": fit_s,
            "store_s": time.perf_counter() - started,
        }
        return TrainReport(self.name, artifacts=[info], metrics=metrics | timing)


class OutOfPatternTrainer:
    """Fits the population's distribution of every scored dimension (the prior of the
    out-of-pattern score), stores it, then scans what was logged since the last scan."""

    name = "anomalies"

    def __init__(self, config: anomalies.OutOfPatternConfig | None = None) -> None:
        self.config = config

    def train(self, ctx: TrainContext) -> TrainReport:
        ctx.report("anomalies: population", 0.0)
        cfg = self.config or anomalies.OutOfPatternConfig()
        with ctx.store.read() as conn:
            pop = anomalies.population_from_log(conn, t.events.c.ts_us <= ctx.as_of_us)
        if pop.height == 0:
            return TrainReport(self.name, skipped="no interactions with product facets yet")
        now_us = int(ctx.clock.now().timestamp() * 1e6)
        info = ctx.registry.save(
            self.name,
            anomalies.population_arrays(pop),
            config=cfg.model_dump(mode="json"),
            metrics={"values": pop.height},
            meta={"dimensions": sorted(set(pop["dim"].to_list()))},
            as_of_us=ctx.as_of_us,
            log_seq=ctx.log_seq,
            created_us=now_us,
        )
        ctx.report("anomalies: scanning", 0.5)
        got = anomalies.scan(ctx.store, now_us=now_us, config=cfg, population_frame=pop)
        return TrainReport(self.name, artifacts=[info], metrics={"values": pop.height, **got})


def behaviour_trainers(settings: Settings | None = None) -> list[Any]:
    """The cadence, segments and out-of-pattern trainers, configured from ``settings``."""
    from concierge.models import from_settings as fs

    s = settings if settings is not None else Settings()
    return [
        CadenceTrainer(fs.cadence_config(s)),
        SegmentsTrainer(keep_runs=s.segments_keep_runs, **fs.segment_options(s)),
        OutOfPatternTrainer(fs.questions_config(s)),
    ]


def forget(conn: Connection, person: str, pseudonym: str) -> None:
    """An erasure: the person's questions go; memberships and changes move to the pseudonym
    (behaviour stays, as in the log); audiences are re-evaluated in full (the epoch moved)."""
    conn.execute(t.questions.delete().where(t.questions.c.person_id == person))
    conn.execute(t.audience_members.delete().where(t.audience_members.c.person_id == person))
    for tbl in (t.segment_members, t.audience_changes):
        conn.execute(tbl.update().where(tbl.c.person_id == person).values(person_id=pseudonym))


# -- reading the runs ------------------------------------------------------------------------


def runs(conn: Connection) -> list[dict[str, Any]]:
    r = t.segment_runs
    return [
        {
            "run_id": x.run_id,
            "as_of": from_us(x.as_of_us).isoformat(),
            "people": x.n_people,
            "segments": x.n_segments,
        }
        for x in conn.execute(select(r).order_by(r.c.run_id.desc()))
    ]


def _latest_run(conn: Connection) -> int:
    v = conn.execute(
        select(t.segment_runs.c.run_id).order_by(t.segment_runs.c.run_id.desc())
    ).first()
    if v is None:
        raise NotFoundError("segmentation run", "latest (run concierge train --only segments)")
    return int(v[0])


def segment_list(conn: Connection, run: int | None = None) -> dict[str, Any]:
    run = run if run is not None else _latest_run(conn)
    d = t.segment_defs
    rows = conn.execute(select(d).where(d.c.run_id == run).order_by(d.c.size.desc())).all()
    if not rows:
        raise NotFoundError("segmentation run", str(run))
    return {
        "run_id": run,
        "segments": [
            {
                "segment_id": r.segment_id,
                "label": r.label,
                "size": r.size,
                **orjson.loads(r.figures),
            }
            for r in rows
        ],
    }


def flows(
    conn: Connection, from_run: int | None = None, to_run: int | None = None, *, top: int = 50
) -> dict[str, Any]:
    """People moving between segments from one run to another (the two newest by default)."""
    all_runs = [r["run_id"] for r in runs(conn)]
    if to_run is None:
        if not all_runs:
            raise NotFoundError("segmentation run", "latest")
        to_run = all_runs[0]
    if from_run is None:
        older = [r for r in all_runs if r < to_run]
        if not older:
            raise NotFoundError("segmentation run", f"before {to_run}")
        from_run = older[0]
    m = t.segment_members

    def members(run: int) -> pl.DataFrame:
        return pl.read_database(
            select(m.c.person_id, m.c.segment_id).where(m.c.run_id == run),
            conn,
            schema_overrides={"person_id": pl.String, "segment_id": pl.Int64},
        )

    a = members(from_run).rename({"segment_id": "from"})
    b = members(to_run).rename({"segment_id": "to"})
    j = a.join(b, on="person_id", how="full", coalesce=True)
    counts = j.group_by("from", "to").agg(pl.len().alias("people")).sort("people", descending=True)
    stayed = int(j.filter(pl.col("from") == pl.col("to")).height)
    moved = counts.filter(
        pl.col("from").is_null() | pl.col("to").is_null() | (pl.col("from") != pl.col("to"))
    )
    labels = {
        (r.run_id, r.segment_id): r.label
        for r in conn.execute(
            select(
                t.segment_defs.c.run_id, t.segment_defs.c.segment_id, t.segment_defs.c.label
            ).where(t.segment_defs.c.run_id.in_([from_run, to_run]))
        )
    }
    return {
        "from_run": from_run,
        "to_run": to_run,
        "people": j.height,
        "stayed": stayed,
        "moved": int(j.height - stayed),
        "flows": [
            {
                "from": f,
                "to": to,
                "people": n,
                "from_label": labels.get((from_run, f)) if f is not None else None,
                "to_label": labels.get((to_run, to)) if to is not None else None,
            }
            for f, to, n in moved.head(top).iter_rows()
        ],
    }


def history(conn: Connection, person: str) -> list[dict[str, Any]]:
    m, r, d = t.segment_members, t.segment_runs, t.segment_defs
    rows = conn.execute(
        select(m.c.run_id, m.c.segment_id, r.c.as_of_us, d.c.label)
        .join(r, r.c.run_id == m.c.run_id)
        .join(d, (d.c.run_id == m.c.run_id) & (d.c.segment_id == m.c.segment_id))
        .where(m.c.person_id == person)
        .order_by(m.c.run_id)
    ).all()
    return [
        {"run_id": a, "segment_id": s, "as_of": from_us(u).isoformat(), "label": lab}
        for a, s, u, lab in rows
    ]
