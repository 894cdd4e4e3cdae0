"""``concierge …``: the command line, a thin layer over the facade.

Every command takes ``--db URL`` (default: ``CONCIERGE_DATABASE_URL``, else ``./concierge.db``) and
``--json`` for machine-readable output. Long work shows a Rich progress bar (on stderr, and only
when not ``--json``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from concierge.errors import ConciergeError, InputError
from concierge.settings import Settings, load_settings

app = typer.Typer(
    name="concierge",
    help="A personal concierge for every shopper.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="API keys (admin).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
catalog_app = typer.Typer(help="The catalog: product feeds.", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")
evaluate_app = typer.Typer(help="Offline evaluation of models and campaigns.", no_args_is_help=True)
app.add_typer(evaluate_app, name="evaluate")

err = Console(stderr=True)
out = Console()

DbOpt = Annotated[
    str | None,
    typer.Option("--db", help="Database URL or SQLite path (env CONCIERGE_DATABASE_URL)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]

DEMO_ADMIN_KEY = "demo-admin-key-not-for-production"


def _settings(db: str | None) -> Settings:
    settings = load_settings()
    if db is not None:
        settings = settings.model_copy(update={"database_url": db})
    return settings


def _open(db: str | None) -> Any:
    from concierge.facade import Concierge

    return Concierge(settings=_settings(db))


def _emit(as_json: bool, data: Any, human: str | None = None) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data, default=str, indent=2) + "\n")
    else:
        out.print(human if human is not None else data)


@contextmanager
def _progress(enabled: bool) -> Iterator[Progress]:
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=not enabled,
        transient=False,
    )
    with progress:
        yield progress


def _fail(exc: ConciergeError, as_json: bool) -> None:
    if isinstance(exc, InputError):
        detail = [e.as_dict() for e in exc.errors]
    else:
        detail = [{"reason": str(exc)}]
    if as_json:
        sys.stdout.write(json.dumps({"error": type(exc).__name__, "detail": detail}) + "\n")
    else:
        err.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(2)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")


@app.command()
def init(db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Create or upgrade the store's schema."""
    from concierge.store.migrate import current_revision

    c = _open(db)
    stats = c.stats()
    revision = current_revision(c.store.engine)
    c.close()
    _emit(
        as_json,
        {"database": c.settings.database_url, "revision": revision, **stats},
        f"store ready at {c.settings.database_url} (schema {revision})",
    )


@app.command("import")
def import_(
    path: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, help="CSV (.csv, .csv.gz) or Parquet file."),
    ],
    format: Annotated[str, typer.Option("--format", "-f", help="online-retail | cdnow | events")],
    mapping: Annotated[
        Path | None, typer.Option(help="YAML column mapping (format events).")
    ] = None,
    map_: Annotated[
        list[str] | None, typer.Option("--map", help="target=source column (repeatable).")
    ] = None,
    timezone: Annotated[
        str | None, typer.Option(help="Zone of naive timestamps in the file.")
    ] = None,
    strict: Annotated[bool, typer.Option(help="Import nothing when any row is bad.")] = False,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import a file of events (Online Retail, CDNOW, or any events file with a column mapping)."""
    from concierge.ingest.bulk import import_file

    c = _open(db)
    try:
        with _progress(not as_json) as progress:
            report = import_file(
                c,
                format,
                path,
                mapping_file=mapping,
                mapping_pairs=map_ or [],
                timezone=timezone,
                strict=strict,
                progress=progress,
            )
    except ConciergeError as exc:
        _fail(exc, as_json)
    finally:
        c.close()
    data = report.as_dict()
    if as_json:
        _emit(True, data)
        if report.refused:
            raise typer.Exit(1)
        return
    out.print(
        f"read {report.rows:,} rows in {report.seconds:.2f} s "
        f"({report.rows_per_second:,.0f} rows/s): "
        f"{report.accepted:,} events stored, {report.duplicates:,} duplicates, "
        f"{report.products:,} products, {len(report.bad_rows):,} bad rows"
    )
    for bad in report.bad_rows[:20]:
        out.print(f"  row {bad.row}: {bad.field}: {bad.reason}")
    if len(report.bad_rows) > 20:
        out.print(f"  … and {len(report.bad_rows) - 20:,} more (use --json for all)")
    if report.refused:
        out.print("[red]nothing imported (--strict)[/red]")
        raise typer.Exit(1)
        raise typer.Exit(1)


@app.command()
def rebuild(db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Recompute identities and every profile from the event log."""
    c = _open(db)
    start = time.perf_counter()
    with _progress(not as_json) as progress:
        task = progress.add_task("rebuild", total=1.0)

        def step(stage: str, done: float) -> None:
            progress.update(task, description=stage, completed=done)

        result = c.rebuild(progress=step)
    c.close()
    secs = time.perf_counter() - start
    _emit(
        as_json,
        {
            "events": result.events,
            "people": result.people,
            "identities": result.identities,
            "seconds": round(secs, 3),
        },
        f"rebuilt {result.people:,} profiles from {result.events:,} events in {secs:.2f} s",
    )


@app.command()
def train(
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Train only this model (repeatable).")
    ] = None,
    as_of: Annotated[
        datetime | None,
        typer.Option("--as-of", help="Use data up to this time (default: now).", formats=_DATES),
    ] = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fit the models on the event log and store each as a new version with its metrics."""
    c = _open(db)
    try:
        with _progress(not as_json) as progress:
            tasks: dict[str, Any] = {}

            def step(what: str, done: float) -> None:
                if what not in tasks:
                    tasks[what] = progress.add_task(what, total=1.0)
                progress.update(tasks[what], completed=done)

            reports = c.train(only=only, as_of=_aware(as_of), progress=step)
    except ConciergeError as exc:
        _fail(exc, as_json)
    finally:
        c.close()
    data = [r.as_dict() for r in reports]
    lines = [
        f"{r['name']:>14}: "
        + (
            f"skipped ({r['skipped']})"
            if r["skipped"]
            else ", ".join(f"{k} v{v}" for k, v in r["versions"].items())
            + f" in {r['seconds']:.2f} s"
        )
        for r in data
    ]
    _emit(as_json, data, "\n".join(lines) or "no models to train")


@app.command()
def models(
    name: Annotated[str | None, typer.Argument(help="Only this model.")] = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The trained model versions kept in the store, newest first, with their metrics."""
    c = _open(db)
    data = c.models(name)
    c.close()
    table = Table("model", "version", "trained", "as of", "bytes", "metrics")
    for m in data:
        table.add_row(
            m["name"],
            str(m["version"]),
            _fmt_us(m["created_us"]),
            _fmt_us(m["as_of_us"]),
            f"{m['payload_bytes']:,}",
            ", ".join(f"{k}={v}" for k, v in list(m["metrics"].items())[:4]),
        )
    if as_json:
        _emit(True, data)
    else:
        out.print(table if data else "no trained models (run concierge train)")


_DATES = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"]


def _aware(dt: datetime | None) -> datetime | None:
    """Dates given without a zone are UTC."""
    if dt is None or dt.tzinfo is not None:
        return dt
    return dt.replace(tzinfo=UTC)


def _fmt_us(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).strftime("%Y-%m-%d %H:%M")


@app.command()
def stats(db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Counts of what the store holds."""
    c = _open(db)
    data = c.stats()
    c.close()
    _emit(as_json, data, "\n".join(f"{k:>15}: {v:,}" for k, v in data.items()))


@app.command()
def customer(
    customer_id: str,
    anonymous: Annotated[bool, typer.Option(help="The id is an anonymous id.")] = False,
    history: Annotated[int, typer.Option(help="How many recent events to show.")] = 10,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a customer 360."""
    c = _open(db)
    try:
        data = (
            c.customer(anonymous_id=customer_id, history=history)
            if anonymous
            else c.customer(customer_id, history=history)
        )
    except ConciergeError as exc:
        _fail(exc, as_json)
    finally:
        c.close()
    _emit(as_json, data, json.dumps(data, default=str, indent=2))


@app.command()
def simulate(
    shoppers: Annotated[int, typer.Option(help="Number of simulated shoppers.")] = 2000,
    days: Annotated[int, typer.Option(help="Length of the simulated history.")] = 365,
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same store.")] = 42,
    truth: Annotated[Path, typer.Option(help="Where to write the hidden truth.")] = Path(
        "simulation-truth.json"
    ),
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fill the store with a deterministic simulated marketplace (hidden truth kept apart)."""
    from concierge.demo import load_simulation

    c = _open(db)
    try:
        with _progress(not as_json) as progress:
            report = load_simulation(
                c, shoppers=shoppers, days=days, seed=seed, truth_path=truth, progress=progress
            )
    except ConciergeError as exc:
        _fail(exc, as_json)
    finally:
        c.close()
    _emit(
        as_json,
        report,
        f"simulated {report['shoppers']:,} shoppers: {report['events']:,} events, "
        f"{report['products']:,} products; hidden truth in {truth}",
    )


@app.command()
def serve(
    db: DbOpt = None,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    workers: Annotated[int, typer.Option(help="Processes (keep 1 on SQLite).")] = 1,
) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs)."""
    from concierge.api.server import serve as run

    settings = _settings(db)
    _open(db).close()  # migrate once before the workers start
    run(settings, host=host, port=port, workers=workers)


@app.command()
def demo(
    dataset: Annotated[str, typer.Option(help="simulator | online-retail")] = "simulator",
    db: DbOpt = None,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    serve_api: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Serve the API afterwards.")
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """Build a demo store (once; a second run reuses it) and serve it."""
    from concierge.demo import build_demo

    default = "concierge.db" if dataset == "simulator" else f"concierge-{dataset}.db"
    if db is None and not os.environ.get("CONCIERGE_DATABASE_URL"):
        db = default
    settings = _settings(db)
    with _progress(not as_json) as progress:
        report = build_demo(settings, dataset=dataset, progress=progress, admin_key=DEMO_ADMIN_KEY)
    _emit(as_json, report, _demo_banner(report, host, port, serve_api))
    if serve_api:
        from concierge.api.server import serve as run

        run(settings, host=host, port=port, workers=1)


def _demo_banner(report: dict[str, Any], host: str, port: int, serving: bool) -> str:
    base = f"http://{host}:{port}"
    lines = [
        f"demo store ({report['dataset']}): {report['database']} — "
        + ("reused" if report["reused"] else f"built in {report['seconds']:.1f} s"),
        f"  {report['stats']['events']:,} events, {report['stats']['profiles']:,} profiles, "
        f"{report['stats']['products']:,} products",
    ]
    if report.get("trained"):
        lines.append(
            "  trained:   "
            + ", ".join(
                f"{name} v{v}" for r in report["trained"] for name, v in r["versions"].items()
            )
        )
    if serving:
        lines += [
            f"  dashboard: {base}/dashboard  (sign in with the admin key)",
            f"  API docs:  {base}/docs",
            f"  admin key: {report['admin_key']}  (demo only)",
            f"  try:       curl -H 'Authorization: Bearer {report['admin_key']}' "
            f"{base}/v1/customers/{report['example_customer']}",
        ]
    return "\n".join(lines)


@catalog_app.command("import")
def catalog_import(
    path: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, help=".json, .jsonl, .csv or .parquet feed."),
    ],
    strict: Annotated[bool, typer.Option(help="Import nothing when any product is bad.")] = False,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import products (with variants, stock, listings) from a catalog feed."""
    c = _open(db)
    try:
        report = c.import_catalog(path, strict=strict)
    except ConciergeError as exc:
        _fail(exc, as_json)
    finally:
        c.close()
    if as_json:
        _emit(True, report)
    else:
        out.print(
            f"{report['rows']:,} rows: {report['products']:,} products "
            f"({report['created']:,} new, {report['updated']:,} updated), "
            f"{len(report['bad_rows']):,} bad"
        )
        for bad in report["bad_rows"][:20]:
            out.print(f"  row {bad['row']}: {bad['field']}: {bad['reason']}")
    if report["refused"]:
        raise typer.Exit(1)


@keys_app.command("create")
def keys_create(
    name: str,
    role: Annotated[str, typer.Option(help="ingest | read | admin")],
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API key; the secret is shown once."""
    c = _open(db)
    try:
        key, secret = c.create_api_key(name, role)
    except ConciergeError as exc:
        _fail(exc, as_json)
    finally:
        c.close()
    _emit(
        as_json,
        {"key_id": key.key_id, "name": key.name, "role": key.role, "secret": secret},
        f"key {key.key_id} ({key.role}): {secret}\nthe secret is not stored; keep it now",
    )


@keys_app.command("list")
def keys_list(db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """List API keys (never their secrets)."""
    c = _open(db)
    rows = c.api_keys()
    c.close()
    if as_json:
        _emit(True, rows)
        return
    table = Table("key_id", "name", "role", "revoked")
    for r in rows:
        table.add_row(
            str(r["key_id"]), str(r["name"]), str(r["role"]), "yes" if r["revoked_us"] else ""
        )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str, db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Revoke an API key."""
    c = _open(db)
    try:
        c.revoke_api_key(key_id)
    except ConciergeError as exc:
        _fail(exc, as_json)
    finally:
        c.close()
    _emit(as_json, {"revoked": key_id}, f"revoked {key_id}")


from concierge.cli import behaviour as _behaviour  # noqa: E402,F401  (registers commands)
from concierge.cli import campaigns as _campaigns  # noqa: E402, F401
from concierge.cli import lifetime as _lifetime  # noqa: E402,F401  (registers its commands)
from concierge.cli import recs as _recs  # noqa: E402, F401  registers the recommendation commands
