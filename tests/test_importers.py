"""File importers on real data: Online Retail (bundled sample, full file), CDNOW, mapped events."""

from __future__ import annotations

import gzip
import json
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

from concierge import Concierge
from concierge.cli.main import app
from concierge.ingest.bulk import import_file
from concierge.ingest.importers import parse
from concierge.schema.events import EventAdapter
from helpers import close

SAMPLE = Path(str(resources.files("concierge.data").joinpath("online_retail_sample.csv.gz")))
runner = CliRunner()


def cli(*args: str, code: int = 0) -> Any:
    res = runner.invoke(app, list(args))
    assert res.exit_code == code, res.output
    return json.loads(res.stdout)


def assert_canonical(events: pl.DataFrame) -> None:
    for payload in events.get_column("payload").to_list():
        assert EventAdapter.validate_json(payload).model_dump_json() == payload


def test_bundled_sample_is_small_and_attributed() -> None:
    assert SAMPLE.stat().st_size < 5_000_000
    source = SAMPLE.parent / "SAMPLE_SOURCE.md"
    assert "CC BY 4.0" in source.read_text() and "Daqing Chen" in source.read_text()


def test_online_retail_sample_imports_with_cancellations_guests_and_bad_rows(
    db_url: str,
) -> None:
    parsed = parse("online-retail", SAMPLE)
    assert parsed.n_rows == 68_460  # see SAMPLE_SOURCE.md
    assert_canonical(parsed.events)  # every payload is what the API path would store
    assert {b.field for b in parsed.bad_rows} <= {"Quantity", "UnitPrice"}
    with Concierge(db_url) as c:
        report = import_file(c, "online-retail", SAMPLE)
        assert report.rows == 68_460 and report.accepted == parsed.events.height
        assert report.duplicates == 0 and report.products > 1000
        post = {p.product_id: p for p in parsed.products}["POST"]
        assert post.active is False and post.category == ["non-merchandise"]
        types = parsed.events.get_column("type").value_counts()
        n = dict(types.iter_rows())
        # 692 customers; 5 are in "Unspecified", "European Community" or "Channel Islands"
        assert n["cancellation"] == 536 and n["purchase"] == 2_695 and n["identify"] == 687
        stats = c.stats()
        assert stats["events"] == parsed.events.height
        assert stats["event_items"] == 68_460 - len(parsed.bad_rows)
        # a guest invoice is an anonymous person; a customer has their whole history
        guest = parsed.events.filter(pl.col("anonymous_id").is_not_null()).row(0, named=True)
        anon = c.customer(anonymous_id=guest["anonymous_id"])
        assert anon["known"] is False and anon["features"]["orders"] == 1
        cid = (
            parsed.events.filter(pl.col("type") == "cancellation")
            .get_column("customer_id")
            .drop_nulls()[0]
        )
        person = c.customer(cid)
        assert person["features"]["returned_value"] > 0
        assert (
            person["traits"]["location"]["country"] in {"GB", "FR", "DE", "IE", "ES"}
            or len(person["traits"]["location"]["country"]) == 2
        )
        assert person["features"]["activity"]["cancellation"] >= 1
        again = import_file(c, "online-retail", SAMPLE)
        assert again.accepted == 0 and again.duplicates == report.accepted
        assert c.stats() == stats


def write_or(path: Path, rows: list[str]) -> Path:
    header = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


BAD_OR = [
    "536365,85123A,WHITE HANGING HEART,6,2010-12-01 08:26:00,2.55,17850,United Kingdom",
    "536365,71053,WHITE METAL LANTERN,6,2010-12-01 08:26:00,3.39,17850,United Kingdom",
    "536366,22633,HAND WARMER,six,2010-12-01 08:28:00,1.85,17850,United Kingdom",
    "A563185,B,Adjust bad debt,1,2011-08-12 14:50:00,-11062.06,,United Kingdom",
    "536367,84879,BIRD ORNAMENT,-32,2010-12-01 08:34:00,1.69,,United Kingdom",
    "C536379,D,Discount,-1,2010-12-01 09:41:00,27.5,14527,United Kingdom",
    "536368,22960,JAM MAKING SET,3,yesterday,4.25,13047,United Kingdom",
    "536369,,NO CODE,3,2010-12-01 08:35:00,4.25,13047,United Kingdom",
    "536370,22728,ALARM CLOCK,24,2010-12-01 08:45:00,3.75,,France",
]


def test_bad_rows_are_reported_and_good_rows_imported(tmp_path: Path) -> None:
    path = write_or(tmp_path / "or.csv", BAD_OR)
    parsed = parse("online-retail", path)
    assert [(b.row, b.field) for b in parsed.bad_rows] == [
        (3, "Quantity"),
        (4, "UnitPrice"),
        (5, "Quantity"),
        (7, "InvoiceDate"),
        (8, "StockCode"),
    ]
    assert "whole number" in parsed.bad_rows[0].reason
    assert "bad-debt" in parsed.bad_rows[1].reason
    assert "outside a cancellation" in parsed.bad_rows[2].reason
    ids = sorted(parsed.events.get_column("event_id").to_list())
    assert ids == ["or:536365", "or:536370", "or:C536379", "or:identify:14527", "or:identify:17850"]
    assert_canonical(parsed.events)
    cancel = parsed.events.filter(pl.col("event_id") == "or:C536379").row(0, named=True)
    assert cancel["type"] == "cancellation" and '"quantity":1' in cancel["payload"]
    guest = parsed.events.filter(pl.col("event_id") == "or:536370").row(0, named=True)
    assert guest["customer_id"] is None and guest["anonymous_id"] == "or-guest-536370"
    first = parsed.events.filter(pl.col("event_id") == "or:536365").row(0, named=True)
    assert first["payload"].count("product_id") == 2
    assert '"timestamp":"2010-12-01T08:26:00Z"' in first["payload"]  # GMT in December


def test_strict_imports_nothing_and_the_cli_reports_rows(tmp_path: Path) -> None:
    path = write_or(tmp_path / "or.csv", BAD_OR)
    db = f"sqlite:///{tmp_path / 's.db'}"
    out = cli(
        "import", "--format", "online-retail", "--strict", "--db", db, "--json", str(path), code=1
    )
    assert out["refused"] is True and out["accepted"] == 0
    assert out["bad_rows"][0] == {
        "row": 3,
        "field": "Quantity",
        "reason": out["bad_rows"][0]["reason"],
    }
    assert cli("stats", "--db", db, "--json")["events"] == 0
    out = cli("import", "--format", "online-retail", "--db", db, "--json", str(path))
    assert out["accepted"] == 5 and len(out["bad_rows"]) == 5
    assert cli("stats", "--db", db, "--json")["events"] == 5


def test_summer_time_is_converted(tmp_path: Path) -> None:
    path = write_or(
        tmp_path / "or.csv",
        ["550000,22728,ALARM CLOCK,2,2011-07-01 10:00:00,3.75,12345,United Kingdom"],
    )
    payload = parse("online-retail", path).events.row(0, named=True)["payload"]
    assert '"timestamp":"2011-07-01T09:00:00Z"' in payload  # BST is UTC+1
    utc = parse("online-retail", path, timezone="UTC").events.row(0, named=True)["payload"]
    assert '"timestamp":"2011-07-01T10:00:00Z"' in utc


@pytest.mark.realdata
def test_full_online_retail_csv_and_parquet_agree_and_rebuild_matches(
    shared_data: Path, tmp_path: Path
) -> None:
    folder = shared_data / "online_retail"
    csv, parquet = (
        parse("online-retail", folder / "online_retail.csv.gz"),
        parse("online-retail", folder / "online_retail.parquet"),
    )
    assert csv.n_rows == parquet.n_rows == 541_909
    assert csv.events.sort("event_id").equals(parquet.events.sort("event_id"))
    # 1,336 stock write-offs, 1,139 guest lines priced 0 (stock found or checked), 2 bad debts
    reasons = [b.reason.split(" (")[0] for b in csv.bad_rows]
    assert {r: reasons.count(r) for r in set(reasons)} == {
        "negative quantity outside a cancellation": 1_336,
        "zero unit price without a customer": 1_139,
        "negative unit price": 2,
    }
    assert csv.items.height == 541_909 - 2_477
    n = dict(csv.events.get_column("type").value_counts().iter_rows())
    assert n == {"purchase": 19_964, "cancellation": 3_836, "identify": 4_358}
    assert_canonical(csv.events)
    with Concierge(f"sqlite:///{tmp_path / 'or.db'}") as c:
        report = import_file(c, "online-retail", folder / "online_retail.csv.gz")
        assert report.accepted == csv.events.height
        known = c.stats()["profiles"]
        incremental = c.profile_docs()
        result = c.rebuild()
        assert result.people == known
        assert close(c.profile_docs(), incremental) == []


@pytest.mark.realdata
def test_cdnow_master_and_sample(shared_data: Path, tmp_path: Path) -> None:
    master = parse("cdnow", shared_data / "cdnow" / "CDNOW_master.txt")
    assert master.n_rows == 69_659 and not master.bad_rows
    assert master.events.get_column("customer_id").n_unique() == 23_570
    assert_canonical(master.events.head(2000))
    sample = parse("cdnow", shared_data / "cdnow" / "CDNOW_sample.txt")
    assert sample.n_rows == 6_919 and sample.events.get_column("customer_id").n_unique() == 2_357
    with Concierge(f"sqlite:///{tmp_path / 'cd.db'}") as c:
        report = import_file(c, "cdnow", shared_data / "cdnow" / "CDNOW_sample.txt")
        assert report.accepted == 6_919
        one = sample.events.get_column("customer_id")[0]
        f = c.customer(one)["features"]
        assert f["orders"] >= 1 and f["revenue"] > 0


def test_cdnow_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "cd.txt"
    path.write_text(
        "00001 19970101  1   11.77\n00001 19970101  2   20.00\n00002 1997-01-12 1 "
        "12.00\n00003 19970112 0 12.00\n00004 19970112 1\n00005 19970112 1 -3\n"
    )
    parsed = parse("cdnow", path)
    assert [(b.row, b.field) for b in parsed.bad_rows] == [
        (3, "date"),
        (4, "number_of_cds"),
        (5, "line"),
        (6, "dollar_value"),
    ]
    assert parsed.events.get_column("event_id").to_list() == [
        "cdnow:00001:19970101:0",
        "cdnow:00001:19970101:1",
    ]
    assert_canonical(parsed.events)


EVENTS_CSV = """id,kind,user,device,ts,item,qty,price,order,mail,country
1,view,u1,,2026-01-01 10:00:00,p1,,,,,
2,view,,d1,2026-01-01T10:05:00+02:00,p2,,,,,
3,purchase,u1,,2026-01-02 10:00,p1,2,10.5,o1,,
4,purchase,u1,,2026-01-02 10:00,p2,1,3,o1,,
5,identify,u1,d1,2026-01-03,,,,,u1@example.com,FR
6,view,u2,,not a date,p1,,,,,
7,teleport,u2,,2026-01-01,p1,,,,,
8,add_to_cart,u2,,2026-01-01,p1,-1,,,,
9,purchase,u3,,2026-01-02 10:00,p1,x,1,o2,,
"""
MAPPING = """columns:
  type: kind
  customer_id: user
  anonymous_id: device
  timestamp: ts
  product_id: item
  quantity: qty
  unit_price: price
  order_id: order
  traits.email: mail
  traits.location.country: country
constants:
  currency: EUR
timezone: Europe/Paris
"""


def test_mapped_events_file_via_yaml(db_url: str, tmp_path: Path) -> None:
    (tmp_path / "ev.csv").write_text(EVENTS_CSV)
    (tmp_path / "map.yaml").write_text(MAPPING)
    out = cli(
        "import",
        "--format",
        "events",
        "--mapping",
        str(tmp_path / "map.yaml"),
        "--db",
        db_url,
        "--json",
        str(tmp_path / "ev.csv"),
    )
    assert out["accepted"] == 4
    assert [(b["row"], b["field"]) for b in out["bad_rows"]] == [
        (6, "timestamp (column ts)"),
        (7, "type (column kind)"),
        (8, "quantity (column qty)"),
        (9, "quantity (column qty)"),
    ]
    with Concierge(db_url) as c:
        u1 = c.customer("u1")
        assert u1["traits"]["email"] == "u1@example.com"
        assert u1["anonymous_ids"] == ["d1"]  # the identify row stitched the device
        assert u1["features"]["orders"] == 1 and u1["features"]["revenue"] == 24.0
        assert u1["features"]["activity"]["view"] == 2
        views = {h["event_id"]: h["timestamp"] for h in u1["history"] if h["type"] == "view"}
        assert sorted(views.values()) == ["2026-01-01T08:05:00Z", "2026-01-01T09:00:00Z"]
    again = cli(
        "import",
        "--format",
        "events",
        "--mapping",
        str(tmp_path / "map.yaml"),
        "--db",
        db_url,
        "--json",
        str(tmp_path / "ev.csv"),
    )
    assert again["accepted"] == 0 and again["duplicates"] == 4  # derived ids are stable


def test_mapped_events_parquet_with_map_pairs(tmp_path: Path) -> None:
    pl.DataFrame(
        {
            "eid": ["a", "b"],
            "who": ["u1", "u2"],
            "when": [1767261600, 1767265200],
            "q": ["trail shoes", "sandals"],
            "n": [12, 0],
        }
    ).write_parquet(tmp_path / "s.parquet")
    (tmp_path / "m.yaml").write_text("constants: {type: search}\ntimestamp_unit: s\n")
    db = f"sqlite:///{tmp_path / 'p.db'}"
    out = cli(
        "import",
        "--format",
        "events",
        "--mapping",
        str(tmp_path / "m.yaml"),
        "--map",
        "event_id=eid",
        "--map",
        "customer_id=who",
        "--map",
        "timestamp=when",
        "--map",
        "query=q",
        "--map",
        "result_count=n",
        "--db",
        db,
        "--json",
        str(tmp_path / "s.parquet"),
    )
    assert out["accepted"] == 2 and out["bad_rows"] == []
    with Concierge(db) as c:
        s = c.customer("u1")["features"]["recent_searches"][0]
        assert s["query"] == "trail shoes" and s["at"] == "2026-01-01T10:00:00+00:00"


def test_mapping_errors_name_the_key(tmp_path: Path) -> None:
    (tmp_path / "ev.csv").write_text(EVENTS_CSV)
    db = f"sqlite:///{tmp_path / 'm.db'}"
    out = cli(
        "import",
        "--format",
        "events",
        "--map",
        "timestamp=nope",
        "--map",
        "type=kind",
        "--db",
        db,
        "--json",
        str(tmp_path / "ev.csv"),
        code=2,
    )
    assert out["detail"][0]["field"] == "mapping.columns.timestamp"
    out = cli(
        "import",
        "--format",
        "events",
        "--map",
        "colour=kind",
        "--db",
        db,
        "--json",
        str(tmp_path / "ev.csv"),
        code=2,
    )
    assert out["detail"][0]["field"] == "mapping.columns.colour"
    out = cli(
        "import", "--format", "events", "--db", db, "--json", str(tmp_path / "ev.csv"), code=2
    )
    assert out["detail"][0]["field"] == "mapping"


def test_gzipped_csv_and_unknown_suffix(tmp_path: Path) -> None:
    gz = tmp_path / "or.csv.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write(
            "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,"
            "Country\n536365,85123A,X,6,2010-12-01 08:26:00,2.55,17850,United Kingdom\n"
        )
    assert parse("online-retail", gz).events.height == 2
    other = tmp_path / "or.xlsx"
    other.write_bytes(b"x")
    from concierge.errors import InputError

    with pytest.raises(InputError) as err:
        parse("online-retail", other)
    assert err.value.errors[0].field == "path"


def test_zero_prices_reserved_ids_and_huge_quantities(tmp_path: Path) -> None:
    path = write_or(
        tmp_path / "or.csv",
        [
            "536371,22728,ALARM CLOCK,2,2010-12-01 09:00:00,0,12647,United Kingdom",
            "536372,22139,found,56,2010-12-01 09:01:00,0,,United Kingdom",
            "536373,22139,RETROSPOT,5,2010-12-01 09:02:00,2.1,anon:42,United Kingdom",
            "536374,22139,RETROSPOT,99999999999999999999,2010-12-01 09:03:00,2.1,1,EIRE",
            "536375,22139,RETROSPOT,1.5,2010-12-01 09:04:00,2.1,1,EIRE",
            "536376,22139,RETROSPOT,2,2011-03-27 01:30:00,2.1,1,EIRE",  # clocks went forward
            "536377,22139,RETROSPOT,0,2010-12-01 09:04:00,2.1,1,EIRE",
            "C536378,22139,RETROSPOT,3,2010-12-01 09:05:00,2.1,1,EIRE",
        ],
    )
    parsed = parse("online-retail", path)
    assert [(b.row, b.field, b.reason.split(" (")[0]) for b in parsed.bad_rows] == [
        (2, "UnitPrice", "zero unit price without a customer"),
        (3, "CustomerID", "customer ids may not start with 'anon:' or 'erased:'"),
        (4, "Quantity", "not a whole number"),
        (5, "Quantity", "not a whole number"),
        (6, "InvoiceDate", "not a date and time this importer reads"),
        (7, "Quantity", "zero"),
        (8, "Quantity", "positive quantity in a cancellation"),
    ]
    free = parsed.events.filter(pl.col("event_id") == "or:536371").row(0, named=True)
    assert '"unit_price":0.0' in free["payload"]  # a customer's free item is a real line
    assert_canonical(parsed.events)


def test_online_retail_ii_columns_from_parquet(tmp_path: Path) -> None:
    """Online Retail II names (Invoice, Price, Customer ID); a float customer column as pandas
    writes it (NaN for guests) and real timestamps."""
    pl.DataFrame(
        {
            "Invoice": ["489434", "489434", "C489449", "489450"],
            "StockCode": ["85048", "79323P", "22087", "21523"],
            "Description": ["15CM CHRISTMAS GLASS BALL", "PINK CHERRY LIGHTS", "PAPER", "MAT"],
            "Quantity": [12, 12, -12, 10],
            "InvoiceDate": [datetime(2009, 12, 1, 7, 45)] * 2 + [datetime(2009, 12, 1, 10, 33)] * 2,
            "Price": [6.95, 6.75, 2.95, 5.95],
            "Customer ID": [13085.0, 13085.0, 16321.0, float("nan")],
            "Country": ["United Kingdom", "United Kingdom", "Australia", "United Kingdom"],
        }
    ).write_parquet(tmp_path / "or2.parquet")
    parsed = parse("online-retail", tmp_path / "or2.parquet")
    assert parsed.bad_rows == []
    rows = {r["event_id"]: r for r in parsed.events.iter_rows(named=True)}
    assert set(rows) == {"or:489434", "or:C489449", "or:489450", "or:identify:13085",
                         "or:identify:16321"}  # fmt: skip
    assert rows["or:489434"]["customer_id"] == "13085"
    assert rows["or:C489449"]["type"] == "cancellation"
    assert rows["or:489450"]["anonymous_id"] == "or-guest-489450"
    assert '"country":"AU"' in rows["or:identify:16321"]["payload"]
    assert '"timestamp":"2009-12-01T07:45:00Z"' in rows["or:489434"]["payload"]
    assert parsed.items.get_column("line").to_list() == [0, 1, 0, 0]
    assert {p.product_id: p.title for p in parsed.products}["79323P"] == "PINK CHERRY LIGHTS"
    assert_canonical(parsed.events)


def test_strict_through_the_facade(tmp_path: Path) -> None:
    path = write_or(tmp_path / "or.csv", BAD_OR)
    with Concierge(f"sqlite:///{tmp_path / 'f.db'}") as c:
        report = import_file(c, "online-retail", path, strict=True)
        assert report.refused and report.accepted == 0 and len(report.bad_rows) == 5
        assert c.stats()["events"] == 0 and report.products == 0
        report = import_file(c, "online-retail", path)
        assert not report.refused and report.accepted == 5


def test_mapped_message_consent_answer_and_cart_events(tmp_path: Path) -> None:
    (tmp_path / "ev.csv").write_text(
        "kind,user,ts,chan,ok,campaign,question,answer,item,qty,price\n"
        "consent,u1,2026-01-01T10:00:00Z,email,yes,,,,,,\n"
        "open,u1,2026-01-02T10:00:00Z,email,,c1,,,,,\n"
        "click,u1,2026-01-02T10:01:00Z,email,,c1,,,,,\n"
        "answer,u1,2026-01-03T10:00:00Z,,,,shoe_size,42,,,\n"
        "add_to_cart,u1,2026-01-04T10:00:00Z,,,,,,p1,2,9.5\n"
        "remove_from_cart,u1,2026-01-04T10:02:00Z,,,,,,p1,1,9.5\n"
        "checkout,u1,2026-01-04T10:03:00Z,,,,,,,,\n"
        "consent,u1,2026-01-05T10:00:00Z,fax,yes,,,,,,\n"
    )
    mapping = {
        "columns": {
            "type": "kind",
            "customer_id": "user",
            "timestamp": "ts",
            "channel": "chan",
            "granted": "ok",
            "campaign_id": "campaign",
            "question_id": "question",
            "answer": "answer",
            "product_id": "item",
            "quantity": "qty",
            "unit_price": "price",
        }
    }
    parsed = parse("events", tmp_path / "ev.csv", mapping=mapping)
    assert [(b.row, b.field) for b in parsed.bad_rows] == [(8, "channel (column chan)")]
    assert parsed.events.get_column("type").to_list() == [
        "consent", "open", "click", "answer", "add_to_cart", "remove_from_cart", "checkout",
    ]  # fmt: skip
    assert parsed.items.get_column("quantity").to_list() == [2, 1]
    payloads = parsed.events.get_column("payload").to_list()
    assert '"granted":true' in payloads[0] and '"answer":"42"' in payloads[3]
    assert_canonical(parsed.events)


def test_derived_event_ids_are_a_digest_of_the_row(tmp_path: Path) -> None:
    """Golden value: the id must not change with the Polars version, or a re-import after an
    upgrade would store every row again."""
    (tmp_path / "v.csv").write_text("user,ts,item\nu1,2026-01-01T10:00:00Z,p1\n")
    mapping = {
        "columns": {"customer_id": "user", "timestamp": "ts", "product_id": "item"},
        "constants": {"type": "view"},
    }
    parsed = parse("events", tmp_path / "v.csv", mapping=mapping)
    assert parsed.events.get_column("event_id").to_list() == ["ev:aa188ebc443fb18425c713824a2851e6"]


def test_unknown_time_zone_is_an_input_error(tmp_path: Path) -> None:
    from concierge.errors import InputError

    path = write_or(tmp_path / "or.csv", BAD_OR[:1])
    with pytest.raises(InputError) as err:
        parse("online-retail", path, timezone="Mars/Olympus")
    assert err.value.errors[0].field == "timezone"
    (tmp_path / "ev.csv").write_text(EVENTS_CSV)
    with pytest.raises(InputError) as err:
        parse(
            "events",
            tmp_path / "ev.csv",
            mapping={"columns": {"type": "kind", "timestamp": "ts"}, "timezone": "Paris"},
        )
    assert err.value.errors[0].field == "mapping.timezone"


def test_unreadable_files_name_the_path(tmp_path: Path) -> None:
    from concierge.errors import InputError

    (tmp_path / "ragged.csv").write_text("InvoiceNo,StockCode\n1,2,3\n")
    (tmp_path / "junk.parquet").write_bytes(b"junk")
    for name in ("ragged.csv", "junk.parquet"):
        with pytest.raises(InputError) as err:
            parse("online-retail", tmp_path / name)
        assert err.value.errors[0].field == "path" and "cannot be read" in str(err.value)


def test_an_order_with_a_bad_line_reports_every_line(tmp_path: Path) -> None:
    (tmp_path / "o.csv").write_text(
        "order,user,ts,item,qty,price\n"
        "o1,u1,2026-01-02T10:00:00Z,p1,2,10\n"
        "o1,u1,2026-01-02T10:00:00Z,p2,-1,3\n"
        "o2,u1,2026-01-03T10:00:00Z,p1,1,10\n"
    )
    mapping = {
        "columns": {
            "order_id": "order",
            "customer_id": "user",
            "timestamp": "ts",
            "product_id": "item",
            "quantity": "qty",
            "unit_price": "price",
        },
        "constants": {"type": "purchase", "currency": "EUR"},
    }
    parsed = parse("events", tmp_path / "o.csv", mapping=mapping)
    assert sorted((b.row, b.field) for b in parsed.bad_rows) == [
        (1, "order_id"),
        (2, "quantity (column qty)"),
    ]
    assert "row 2" in next(b.reason for b in parsed.bad_rows if b.row == 1)
    assert parsed.events.get_column("event_id").to_list() == ["ev:purchase:o2"]
    assert parsed.items.height == 1
