"""``concierge recommend`` and ``concierge evaluate recommendations``; ``concierge rules …``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from concierge.cli.main import DbOpt, JsonOpt, _emit, _fail, _open, _progress, app, evaluate_app
from concierge.errors import ConciergeError, InputError

rules_app = typer.Typer(help="Merchandising rules of the recommendations.", no_args_is_help=True)
app.add_typer(rules_app, name="rules")


@app.command()
def recommend(
    customer_id: Annotated[str | None, typer.Argument(help="Customer id.")] = None,
    anonymous: Annotated[
        str | None, typer.Option("--anonymous", help="Anonymous id instead.")
    ] = None,
    slot: Annotated[
        str, typer.Option(help="home, product, cart, post_purchase or email.")
    ] = "home",
    k: Annotated[int, typer.Option("-k", help="How many items.")] = 10,
    anchor: Annotated[str | None, typer.Option(help="The page's product (product slot).")] = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Recommendations for a person, with reasons."""
    c = _open(db)
    try:
        recs = c.recommend(
            customer_id, anonymous_id=anonymous, slot=slot, k=k, anchor_product_id=anchor
        )
    except ConciergeError as exc:
        _fail(exc, as_json)
        return
    finally:
        c.close()
    data = recs.as_dict()
    table = Table("rank", "product", "score", "why", title=f"{slot} (fallback: {recs.fallback})")
    for item in recs.items:
        table.add_row(
            str(item.rank),
            item.product_id,
            f"{item.score:.3f}",
            "; ".join(r.text for r in item.reasons),
        )
    _emit(as_json, data, table)  # type: ignore[arg-type]


@evaluate_app.command("recommendations")
def evaluate_recommendations(
    split_date: Annotated[
        str, typer.Option("--split-date", help="Train up to this date (YYYY-MM-DD).")
    ],
    val_days: Annotated[
        float, typer.Option(help="Validation window before the split, for tuning.")
    ] = 28.0,
    truth: Annotated[Path | None, typer.Option(help="Simulator truth file: adds taste@10.")] = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Temporal-split evaluation of every baseline and the full ranker (variants all and new)."""
    try:
        split = datetime.fromisoformat(split_date)
    except ValueError:
        _fail(InputError.one("split_date", "expected a date such as 2011-11-09"), as_json)
        return
    if split.tzinfo is None:
        split = split.replace(tzinfo=UTC)
    c = _open(db)
    try:
        with _progress(not as_json) as bar:
            task = bar.add_task("evaluating", total=1.0)

            def step(what: str, done: float) -> None:
                bar.update(task, description=what, completed=done)

            report = c.evaluate_recommendations(
                split=split, val_days=val_days, truth=truth, progress=step
            )
    except (ConciergeError, ValueError) as exc:
        _fail(
            exc if isinstance(exc, ConciergeError) else InputError.one("split_date", str(exc)),
            as_json,
        )
        return
    finally:
        c.close()
    if as_json:
        _emit(True, report)
        return
    for variant in ("all", "new"):
        table = Table(
            "method",
            "recall@10",
            "recall@20",
            "ndcg@10",
            "ndcg@20",
            "map@20",
            "hit@20",
            "coverage@20",
            title=f"variant {variant}",
        )
        for name, m in report["metrics"][variant].items():
            table.add_row(
                name,
                *(
                    f"{m[x]:.4f}"
                    for x in (
                        "recall@10",
                        "recall@20",
                        "ndcg@10",
                        "ndcg@20",
                        "map@20",
                        "hit_rate@20",
                        "coverage@20",
                    )
                ),
            )
        _emit(False, None, table)  # type: ignore[arg-type]
    _emit(False, None, json.dumps(report["margins"], indent=2))


@rules_app.command("create")
def rules_create(
    rule_json: Annotated[
        str, typer.Argument(help='The rule as JSON, e.g. {"name": …, "action": "pin", …}.')
    ],
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a merchandising rule (pin, boost, bury, exclude)."""
    c = _open(db)
    try:
        out = c.create_rule(json.loads(rule_json))
    except ConciergeError as exc:
        _fail(exc, as_json)
        return
    except json.JSONDecodeError as exc:
        _fail(InputError.one("rule", f"not JSON: {exc}"), as_json)
        return
    finally:
        c.close()
    _emit(as_json, out, f"created rule {out['rule_id']}")


@rules_app.command("list")
def rules_list(db: DbOpt = None, as_json: JsonOpt = False) -> None:
    c = _open(db)
    try:
        rows = c.rules()
    finally:
        c.close()
    _emit(as_json, rows)


@rules_app.command("delete")
def rules_delete(rule_id: str, db: DbOpt = None, as_json: JsonOpt = False) -> None:
    c = _open(db)
    try:
        c.delete_rule(rule_id)
    except ConciergeError as exc:
        _fail(exc, as_json)
        return
    finally:
        c.close()
    _emit(as_json, {"deleted": rule_id}, f"deleted {rule_id}")
