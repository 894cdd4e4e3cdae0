"""``concierge audiences|segments|questions …`` and ``concierge evaluate cadence``: thin
commands over the facade's behaviour section."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from concierge.cli.main import DbOpt, JsonOpt, _emit, _fail, _open, app, evaluate_app, out
from concierge.errors import ConciergeError

audiences_app = typer.Typer(
    help="Rule-based audiences over profiles and predictions.", no_args_is_help=True
)
segments_app = typer.Typer(help="Micro-segments: personas, runs, flows.", no_args_is_help=True)
questions_app = typer.Typer(
    help="Clarifying questions from out-of-pattern behaviour.", no_args_is_help=True
)
app.add_typer(audiences_app, name="audiences")
app.add_typer(segments_app, name="segments")
app.add_typer(questions_app, name="questions")


def _show(as_json: bool, data: Any, human: Table | str) -> None:
    if as_json:
        _emit(True, data)
    else:
        out.print(human)


def _with(db: str | None, as_json: bool, fn: Any) -> Any:
    c = _open(db)
    try:
        return fn(c)
    except ConciergeError as exc:
        _fail(exc, as_json)
    finally:
        c.close()


# -- audiences ----------------------------------------------------------------------------


@audiences_app.command("create")
def audiences_create(
    name: str,
    rule: Annotated[str, typer.Argument(help='e.g. "churn_risk > 0.6 and consent.email"')],
    description: Annotated[str | None, typer.Option(help="What it is for.")] = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Define an audience and evaluate it now."""
    aud = _with(db, as_json, lambda c: c.create_audience(name, rule, description=description))
    _emit(as_json, aud, f"{aud['audience_id']} {aud['name']!r}: {aud['members']:,} members")


@audiences_app.command("list")
def audiences_list(db: DbOpt = None, as_json: JsonOpt = False) -> None:
    data = _with(db, as_json, lambda c: c.audiences())
    table = Table("id", "name", "members", "rule")
    for a in data:
        table.add_row(a["audience_id"], a["name"], f"{a['members']:,}", a["rule"])
    _show(as_json, data, table if data else "no audiences")


@audiences_app.command("members")
def audiences_members(
    audience: str,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 100,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Members of an audience (by id or name)."""
    data = _with(db, as_json, lambda c: c.audience_members(audience, limit=limit, offset=offset))
    human = "\n".join(m["person_id"] for m in data["members"]) + f"\n({data['total']:,} in all)"
    _emit(as_json, data, human)


@audiences_app.command("refresh")
def audiences_refresh(
    audience: Annotated[str | None, typer.Argument(help="Only this audience.")] = None,
    full: Annotated[bool, typer.Option(help="Re-evaluate everyone.")] = False,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-evaluate audiences (incrementally where possible); prints who entered and left."""
    data = _with(db, as_json, lambda c: c.refresh_audiences(only=audience, full=full))
    lines = [
        f"{r['name']}: {r['mode']}, +{r['entered']} -{r['left']} = {r['members']:,}" for r in data
    ]
    _emit(as_json, data, "\n".join(lines) or "no audiences")


@audiences_app.command("changes")
def audiences_changes(
    audience: str,
    since: Annotated[int, typer.Option(help="Changes after this sequence number.")] = 0,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    data = _with(db, as_json, lambda c: c.audience_changes(audience, since=since))
    _emit(as_json, data, "\n".join(f"{x['seq']} {x['change']:>7} {x['person_id']}" for x in data))


@audiences_app.command("delete")
def audiences_delete(audience: str, db: DbOpt = None, as_json: JsonOpt = False) -> None:
    _with(db, as_json, lambda c: c.delete_audience(audience))
    _emit(as_json, {"deleted": audience}, f"deleted {audience}")


@audiences_app.command("fields")
def audiences_fields(db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Every field a rule may name."""
    data = _with(db, as_json, lambda c: c.audience_fields())
    _emit(as_json, data, "\n".join(f"{k:<28} {v}" for k, v in sorted(data.items())))


# -- segments -----------------------------------------------------------------------------


@segments_app.command("list")
def segments_list(
    run: Annotated[int | None, typer.Option(help="A run (default: the newest).")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 30,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The segments of a run, largest first, with their personas."""
    data = _with(db, as_json, lambda c: c.segments(run=run))
    table = Table("id", "size", "persona", title=f"run {data['run_id']}")
    for s in data["segments"][:limit]:
        table.add_row(str(s["segment_id"]), f"{s['size']:,}", s["label"])
    _show(as_json, data, table)


@segments_app.command("refresh")
def segments_refresh(
    max_age_hours: Annotated[
        float, typer.Option(help="Refit when the newest run is older.")
    ] = 24.0,
    every_minutes: Annotated[
        float | None, typer.Option(help="Keep running, checking this often (else once).")
    ] = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The scheduled refit: lifetime, cadence, segments and the out-of-pattern population when
    stale, then every audience. Run it from cron, or keep it running with --every-minutes."""
    import time

    while True:
        data = _with(db, as_json, lambda c: c.refresh_behaviour(max_age_hours=max_age_hours))
        moved = ", ".join(f"{a['name']} +{a['entered']} -{a['left']}" for a in data["audiences"])
        _emit(
            as_json,
            data,
            ("refitted" if data["refitted"] else "up to date")
            + (f"; audiences: {moved}" if moved else ""),
        )
        if every_minutes is None:
            return
        time.sleep(every_minutes * 60)


@segments_app.command("runs")
def segments_runs(db: DbOpt = None, as_json: JsonOpt = False) -> None:
    data = _with(db, as_json, lambda c: c.segment_runs())
    _emit(
        as_json,
        data,
        "\n".join(
            f"run {r['run_id']}: {r['segments']} segments, {r['people']:,} people, "
            f"as of {r['as_of']}"
            for r in data
        )
        or "no runs yet (concierge train --only segments)",
    )


@segments_app.command("flows")
def segments_flows(
    from_run: Annotated[int | None, typer.Option("--from", help="Older run.")] = None,
    to_run: Annotated[int | None, typer.Option("--to", help="Newer run.")] = None,
    top: Annotated[int, typer.Option(min=1)] = 20,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Flows of people between segments from one run to the next."""
    data = _with(db, as_json, lambda c: c.segment_flows(from_run=from_run, to_run=to_run, top=top))
    table = Table(
        "from",
        "to",
        "people",
        title=(
            f"run {data['from_run']} -> {data['to_run']}: {data['stayed']:,} stayed, "
            f"{data['moved']:,} moved"
        ),
    )
    for f in data["flows"]:
        table.add_row(
            f"{f['from']} {f['from_label'] or ''}",
            f"{f['to']} {f['to_label'] or ''}",
            f"{f['people']:,}",
        )
    _show(as_json, data, table)


@segments_app.command("history")
def segments_history(
    customer_id: str,
    anonymous: Annotated[bool, typer.Option(help="The id is an anonymous id.")] = False,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A customer's segment in every kept run."""
    data = _with(
        db,
        as_json,
        lambda c: (
            c.segment_history(anonymous_id=customer_id)
            if anonymous
            else c.segment_history(customer_id)
        ),
    )
    _emit(
        as_json,
        data,
        "\n".join(
            f"run {h['run_id']} ({h['as_of']}): {h['segment_id']} {h['label']}" for h in data
        ),
    )


# -- questions ----------------------------------------------------------------------------


@questions_app.command("scan")
def questions_scan(db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Score interactions logged since the last scan; raise clarifying questions."""
    data = _with(db, as_json, lambda c: c.scan_behaviour())
    _emit(
        as_json,
        data,
        f"scanned {data['scanned']:,} events: {data['unusual']:,} unusual, "
        f"{data['questions']:,} new questions",
    )


@questions_app.command("list")
def questions_list(
    customer_id: str,
    anonymous: Annotated[bool, typer.Option(help="The id is an anonymous id.")] = False,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A customer's clarifying questions."""
    data = _with(
        db,
        as_json,
        lambda c: c.questions(anonymous_id=customer_id) if anonymous else c.questions(customer_id),
    )
    _emit(
        as_json,
        data,
        "\n".join(
            f"{q['question_id']} [{q['status']}] {q['text']} ({q['about_product_id']})"
            for q in data
        )
        or "no questions",
    )


# -- evaluation ---------------------------------------------------------------------------


@evaluate_app.command("cadence")
def evaluate_cadence(
    truth: Annotated[
        Path,
        typer.Option("--truth", help="The simulation's truth file.", exists=True, dir_okay=False),
    ],
    holdout_days: Annotated[float, typer.Option(help="Days at the end held out.")] = 120.0,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Recovered cadences and sell delays against a simulation's hidden truth."""
    import orjson

    from concierge.models import cadence, people

    def go(c: Any) -> dict[str, Any]:
        with c.store.read() as conn:
            ev, it = people.read(conn)
        return cadence.evaluate_on_simulation(
            ev, it, orjson.loads(truth.read_bytes()), holdout_days=holdout_days
        )

    data = _with(db, as_json, go)
    _emit(as_json, data, json.dumps(data, indent=2))
    if not as_json:
        out.print("")
