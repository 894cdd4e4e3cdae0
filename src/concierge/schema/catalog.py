"""Catalog shapes: products with variants (sizes) and stock, and marketplace listings."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from concierge.errors import FieldProblem
from concierge.schema.events import Currency, Id

Attr = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    variant_id: Id
    size: Attr | None = None
    stock: int = Field(0, ge=0)
    price: float | None = Field(None, ge=0)  # overrides the product's price when set


class Product(BaseModel):
    """A sellable item. One-of-a-kind marketplace items are products with one variant of stock 1."""

    model_config = ConfigDict(extra="forbid")

    product_id: Id
    title: Annotated[str, StringConstraints(max_length=500)] = ""
    brand: Attr | None = None
    category: list[Attr] = Field(default_factory=list, max_length=10)  # path, root first
    department: Attr | None = None  # gender/department, e.g. "men", "women", "kids", "unisex"
    price: float = Field(ge=0)
    currency: Currency
    colour: Attr | None = None
    images: list[Annotated[str, StringConstraints(max_length=2000)]] = Field(
        default_factory=list, max_length=50
    )
    attributes: dict[Attr, Attr] = Field(default_factory=dict, max_length=100)
    variants: list[Variant] = Field(default_factory=list, max_length=500)
    active: bool = True
    # marketplace listing (set when a customer sells this item)
    seller_id: Id | None = None
    condition: Literal["new", "like_new", "good", "fair"] | None = None
    one_of_a_kind: bool = False

    @model_validator(mode="after")
    def _variants_unique(self) -> Product:
        ids = [v.variant_id for v in self.variants]
        if len(ids) != len(set(ids)):
            raise FieldProblem("variants", "variant ids must be unique within a product")
        if self.one_of_a_kind and sum(v.stock for v in self.variants) > 1:
            raise FieldProblem("variants", "a one-of-a-kind item has a stock of at most 1")
        return self


class StockUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    product_id: Id
    variant_id: Id | None = None  # None: the product's only (or default) variant
    stock: int = Field(ge=0)


class PriceUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    product_id: Id
    price: float = Field(ge=0)
    variant_id: Id | None = None


CatalogEventType = Literal[
    "price_drop", "price_rise", "back_in_stock", "out_of_stock", "new_product"
]
