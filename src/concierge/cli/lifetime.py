"""``concierge evaluate predictions``: the lifetime and churn models on a holdout of the log."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from concierge.cli.main import DbOpt, JsonOpt, _emit, _fail, _open, evaluate_app, out
from concierge.errors import ConciergeError

_DATES = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"]


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def _f(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


@evaluate_app.command("predictions")
def evaluate_predictions(
    calibration_end: Annotated[
        datetime,
        typer.Option("--calibration-end", help="Fit on purchases up to this time.", formats=_DATES),
    ],
    holdout_end: Annotated[
        datetime | None,
        typer.Option(
            "--holdout-end", help="Score purchases up to this time (default: now).", formats=_DATES
        ),
    ] = None,
    unit: Annotated[
        str, typer.Option(help="Time unit of the fitted parameters: days | weeks.")
    ] = "days",
    truth: Annotated[
        Path | None,
        typer.Option(
            help="Simulator hidden-truth file: compare P(alive) with the true churn, and the "
            "recovered cadences and sell delays with the true ones.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    include_anonymous: Annotated[
        bool,
        typer.Option("--include-anonymous", help="Also model people never identified."),
    ] = False,
    no_lifetimes: Annotated[
        bool, typer.Option("--no-lifetimes", help="Skip the comparison with `lifetimes`.")
    ] = False,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fit BG/NBD, Pareto/NBD, Gamma-Gamma and churn before --calibration-end; score the holdout."""
    if unit not in ("days", "weeks"):
        _fail_unit(as_json)
    c = _open(db)
    try:
        report = c.evaluate_predictions(
            calibration_end=_aware(calibration_end),
            holdout_end=_aware(holdout_end) if holdout_end is not None else None,
            compare_lifetimes=not no_lifetimes,
            period_days=7.0 if unit == "weeks" else 1.0,
            truth_path=truth,
            include_anonymous=include_anonymous,
        )
    except ConciergeError as exc:
        _fail(exc, as_json)
    finally:
        c.close()
    if as_json:
        _emit(True, report)
        return
    _print(report, unit)


def _fail_unit(as_json: bool) -> None:
    from concierge.errors import InputError

    _fail(InputError.one("unit", "expected days or weeks"), as_json)


def _print(r: dict[str, Any], unit: str) -> None:
    out.print(
        f"{r['customers']:,} customers before the calibration end ({r['repeat_buyers']:,} repeat "
        f"buyers); holdout {r['holdout_periods']:.2f} {unit}, {r['holdout_buyers']:,} bought in it"
    )
    table = Table(
        "model",
        "log-lik",
        "fit s",
        "MAE",
        "corr",
        "pred total",
        "actual total",
        title="repeat purchases in the holdout",
    )
    rows = [(n, m) for n, m in r["models"].items() if "purchases" in m]
    lt = r.get("lifetimes_bgnbd", {})
    if lt.get("converged"):
        rows.append(("lifetimes BG/NBD", lt | {"log_likelihood": None}))
    for name, m in rows:
        p = m["purchases"]
        out.print(f"{name}: " + ", ".join(f"{k}={v:.4g}" for k, v in m["params"].items()))
        table.add_row(
            name,
            _f(m.get("log_likelihood"), 1),
            _f(m["fit_seconds"], 4),
            _f(p.get("mae")),
            _f(p.get("correlation")),
            _f(p.get("total_predicted"), 1),
            _f(p.get("total_actual"), 1),
        )
    out.print(table)
    if lt and not lt.get("converged"):
        out.print(f"lifetimes BG/NBD: {lt.get('error') or lt.get('reason')}")
    elif lt.get("non_finite_predictions"):
        out.print(
            f"lifetimes BG/NBD: {lt['non_finite_predictions']:,} predictions are not finite "
            "(left out of its errors)"
        )
    freq = Table(
        "x (calibration)",
        "n",
        "BG/NBD predicted",
        "Pareto/NBD predicted",
        "actual",
        title="mean holdout purchases by calibration frequency",
    )
    pareto = {row["x"]: row for row in r["models"]["pareto_nbd"]["by_frequency"]}
    for row in r["models"]["bgnbd"]["by_frequency"]:
        freq.add_row(
            row["x"],
            f"{row['n']:,}",
            _f(row["predicted"]),
            _f(pareto.get(row["x"], {}).get("predicted")),
            _f(row["actual"]),
        )
    out.print(freq)
    gg = r["models"].get("gamma_gamma")
    if gg:
        s = gg["spend"]
        out.print(
            "Gamma-Gamma "
            + ", ".join(f"{k}={v:.4g}" for k, v in gg["params"].items())
            + f": spend per purchase in the holdout, MAE {_f(s.get('mae'), 2)}, "
            f"correlation {_f(s.get('correlation'))} over {s.get('n', 0):,} buyers"
        )
    churn = r.get("churn", {})
    if "holdout" in churn:
        h, b = churn["holdout"], churn["baseline_1_minus_p_alive"]
        out.print(
            f"churn (no purchase in {churn['window_days']} days): Brier {_f(h['brier'])}, "
            f"log loss {_f(h['log_loss'])}, AUC {_f(h['auc'])}; baseline 1-P(alive): "
            f"Brier {_f(b['brier'])}, AUC {_f(b['auc'])}; observed rate {_f(h['observed_rate'])}"
        )
        ref = (churn.get("reference_shrunk_mean_rhythm") or {}).get("holdout")
        if ref:
            out.print(
                f"  rhythm: {churn.get('rhythm')} (cadence posterior); reference with the "
                f"shrunk mean gap: Brier {_f(ref['brier'])}, log loss {_f(ref['log_loss'])}, "
                f"AUC {_f(ref['auc'])}"
            )
        out.print(f"  method: {churn['method']}")
        rel = Table("predicted", "n", "mean predicted", "observed", title="churn reliability")
        for row in h["reliability"]:
            rel.add_row(row["bin"], f"{row['n']:,}", _f(row["mean_predicted"]), _f(row["observed"]))
        out.print(rel)
    else:
        out.print(f"churn: skipped ({churn.get('skipped')})")
    if "truth" in r:
        t = r["truth"]
        out.print(
            f"hidden truth: {t['customers']:,} shoppers, {_f(t['truly_alive_share'])} truly "
            f"active; AUC of P(alive) {_f(t['auc_p_alive_vs_truth'])}; mean P(alive) "
            f"{_f(t['mean_p_alive_truly_alive'])} (active) vs "
            f"{_f(t['mean_p_alive_truly_churned'])} (churned)"
        )
        _print_cadence(t.get("cadence") or {})


def _print_cadence(cad: dict[str, Any]) -> None:
    """The cadence part of the truth comparison (as ``concierge evaluate cadence``)."""
    if "skipped" in cad or not cad:
        out.print(f"cadence vs truth: skipped ({cad.get('skipped')})")
        return
    table = Table(
        "purchases seen",
        "pairs",
        "corr (log)",
        "MAE days",
        "median AE",
        "plain average MAE",
        title="recovered cadence (person x category) vs the hidden truth",
    )
    for key, row in cad.get("cadence", {}).items():
        plain = row.get("plain_average", {})
        table.add_row(
            key,
            f"{row['pairs']:,}",
            _f(row.get("corr_log")),
            _f(row.get("mae_days"), 1),
            _f(row.get("median_ae_days"), 1),
            _f(plain.get("mae_days"), 1),
        )
    out.print(table)
    cov = cad.get("coverage", {})
    if cov.get("pairs"):
        out.print(
            f"next purchase inside the {_f(cov['nominal'], 2)} window: {_f(cov['covered'])} "
            f"of {cov['pairs']:,} (person, category) pairs"
        )
    sd = cad.get("sell_delay", {})
    if "corr_log" in sd:
        out.print(
            f"sell delays: {sd['sellers']:,} resellers, corr (log) {_f(sd['corr_log'])}, "
            f"MAE {_f(sd['mae_days'], 1)} days, median AE {_f(sd['median_ae_days'], 1)} days"
        )
    else:
        out.print(f"sell delays: {sd.get('sellers', 0)} resellers with a matched listing")
