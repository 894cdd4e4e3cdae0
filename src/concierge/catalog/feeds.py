"""Catalog feeds: products from a JSON or JSON-lines file, or from a CSV/Parquet feed.

JSON (``.json``: an array of products or ``{"products": [...]}``; ``.jsonl``: one per line) holds
products in the shape of :class:`concierge.schema.catalog.Product`.

A CSV or Parquet feed has one row per variant (or per product, when it has no sizes) and these
columns (``product_id`` and ``price`` and ``currency`` are required; the rest optional):

``product_id, title, brand, category, department, price, currency, colour, images, attributes,
variant_id, size, stock, variant_price, seller_id, condition, one_of_a_kind, active``

* ``category`` is a path, ``Shoes > Running`` (``>`` or ``/`` between levels);
* ``images`` is one or more URLs separated by ``|``;
* ``attributes`` is ``drop: 4 mm; pronation: neutral`` (or a JSON object);
* rows sharing a ``product_id`` are the variants of one product (product columns are taken from
  its first row).

Rows are grouped and checked by the same pydantic models the API uses; a product that fails is
reported with the row number (1 = first row after the header), the field and the reason, and the
others are imported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import ValidationError

from concierge.errors import FieldError, InputError
from concierge.schema.catalog import Product

COLUMNS = (
    "product_id", "title", "brand", "category", "department", "price", "currency", "colour",
    "images", "attributes", "variant_id", "size", "stock", "variant_price", "seller_id",
    "condition", "one_of_a_kind", "active",
)  # fmt: skip
TRUE = {"1", "true", "yes", "y", "t"}


@dataclass
class FeedReport:
    path: str
    rows: int = 0
    products: int = 0
    created: int = 0
    updated: int = 0
    bad_rows: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "rows": self.rows,
            "products": self.products,
            "created": self.created,
            "updated": self.updated,
            "bad_rows": self.bad_rows,
        }


def read_feed(path: Path) -> tuple[list[tuple[list[int], dict[str, Any]]], int]:
    """(rows of the file behind each product, raw product), and the number of rows read."""
    name = path.name.lower()
    try:
        if name.endswith(".jsonl") or name.endswith(".ndjson"):
            lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
            return [([i + 1], json.loads(ln)) for i, ln in enumerate(lines)], len(lines)
        if name.endswith(".json"):
            data = json.loads(path.read_text())
            items = data.get("products") if isinstance(data, dict) else data
            if not isinstance(items, list):
                raise InputError.one("path", "a JSON feed is an array of products")
            return [([i + 1], p) for i, p in enumerate(items)], len(items)
        if name.endswith(".parquet"):
            df = pl.read_parquet(path)
        elif name.endswith((".csv", ".csv.gz", ".tsv")):
            df = pl.read_csv(path, infer_schema=False, separator="\t" if ".tsv" in name else ",")
        else:
            raise InputError.one("path", f"{path.name}: expected .json, .jsonl, .csv or .parquet")
    except (json.JSONDecodeError, pl.exceptions.PolarsError, UnicodeDecodeError) as exc:
        raise InputError.one("path", f"{path.name} cannot be read: {exc}") from exc
    missing = [c for c in ("product_id", "price", "currency") if c not in df.columns]
    if missing:
        raise InputError.one("path", f"the feed has no {', '.join(missing)} column")
    unknown = [c for c in df.columns if c not in COLUMNS]
    if unknown:
        raise InputError.one("path", f"unknown columns {', '.join(unknown)}; see the docs")
    df = df.with_columns(pl.all().cast(pl.String).str.strip_chars()).with_row_index("row", 1)
    out = []
    for group in df.partition_by("product_id", maintain_order=True):  # one per product
        rows = group.get_column("row").to_list()
        first = group.row(0, named=True)
        product = _product(first)
        variants = [_variant(r) for r in group.iter_rows(named=True)]
        product["variants"] = [v for v in variants if v]
        out.append(([int(r) for r in rows], product))
    return out, df.height


def _blank(v: Any) -> bool:
    return v is None or v == ""


def _product(r: dict[str, Any]) -> dict[str, Any]:
    p: dict[str, Any] = {
        k: r[k]
        for k in ("product_id", "title", "brand", "department", "price", "currency", "colour",
                  "seller_id", "condition")
        if k in r and not _blank(r[k])
    }  # fmt: skip
    if not _blank(r.get("category")):
        sep = ">" if ">" in r["category"] else "/"
        p["category"] = [c.strip() for c in r["category"].split(sep) if c.strip()]
    if not _blank(r.get("images")):
        p["images"] = [u.strip() for u in r["images"].split("|") if u.strip()]
    if not _blank(r.get("attributes")):
        p["attributes"] = _attributes(r["attributes"])
    for flag in ("one_of_a_kind", "active"):
        if not _blank(r.get(flag)):
            p[flag] = str(r[flag]).lower() in TRUE
    return p


def _attributes(text: str) -> Any:
    if text.startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text  # pydantic names the field
    out = {}
    for part in text.split(";"):
        if part.strip():
            key, sep, value = part.partition(":")
            out[key.strip()] = value.strip() if sep else ""
    return out


def _variant(r: dict[str, Any]) -> dict[str, Any] | None:
    if all(_blank(r.get(k)) for k in ("variant_id", "size", "stock", "variant_price")):
        return None
    v: dict[str, Any] = {}
    if not _blank(r.get("variant_id")):
        v["variant_id"] = r["variant_id"]
    elif not _blank(r.get("size")):
        v["variant_id"] = f"{r['product_id']}-{r['size']}"
    if not _blank(r.get("size")):
        v["size"] = r["size"]
    if not _blank(r.get("stock")):
        v["stock"] = r["stock"]
    if not _blank(r.get("variant_price")):
        v["price"] = r["variant_price"]
    return v


def validate_feed(
    raw: list[tuple[list[int], dict[str, Any]]],
) -> tuple[list[Product], list[dict[str, Any]]]:
    """Products that pass, and the refused ones as ``{row, field, reason}``."""
    from concierge.facade import validation_errors

    good: list[Product] = []
    bad: list[dict[str, Any]] = []
    for rows, item in raw:
        try:
            good.append(Product.model_validate(item))
        except ValidationError as exc:
            for e in validation_errors(exc):
                bad.append({"row": _row_of(rows, e), "field": e.field, "reason": e.reason})
    return good, bad


def _row_of(rows: list[int], e: FieldError) -> int:
    parts = e.field.split(".")
    if len(parts) > 1 and parts[0] == "variants" and parts[1].isdigit():
        i = int(parts[1])
        return rows[i] if i < len(rows) else rows[0]
    return rows[0]
