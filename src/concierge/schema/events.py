"""Typed events: everything a shopper does or tells us, as it arrives at ingest.

One discriminated union on ``type``. Every event has an ``event_id`` (given by the client, or
generated), a ``customer_id`` and/or an ``anonymous_id``, a timezone-aware ``timestamp`` and, once
accepted, a ``received_at`` set by the server. Unknown fields are refused (``extra="forbid"``) so a
typo never silently drops data.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    field_validator,
    model_validator,
)

from concierge.errors import FieldProblem

Id = Annotated[str, StringConstraints(min_length=1, max_length=128, strip_whitespace=True)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Channel = Literal["email", "sms", "push"]
MessageChannel = Literal["email", "sms", "push", "onsite", "ads"]

ANON_PREFIX = "anon:"
ERASED_PREFIX = "erased:"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_max_length=10_000)


class EventBase(_Model):
    event_id: Id = Field(default_factory=lambda: uuid.uuid4().hex)
    customer_id: Id | None = None
    anonymous_id: Id | None = None
    timestamp: AwareDatetime
    received_at: AwareDatetime | None = None
    session_id: Id | None = None
    context: dict[str, Any] = Field(default_factory=dict)

    @field_validator("customer_id")
    @classmethod
    def _not_reserved(cls, v: str | None) -> str | None:
        if v is not None and (v.startswith(ANON_PREFIX) or v.startswith(ERASED_PREFIX)):
            raise ValueError(
                f"customer ids may not start with {ANON_PREFIX!r} or {ERASED_PREFIX!r}"
            )
        return v

    @model_validator(mode="after")
    def _someone(self) -> EventBase:
        if self.customer_id is None and self.anonymous_id is None:
            raise FieldProblem("customer_id", "customer_id or anonymous_id is required")
        return self


# -- browsing and buying ------------------------------------------------------------------


class ViewEvent(EventBase):
    type: Literal["view"]
    product_id: Id
    variant_id: Id | None = None


class SearchEvent(EventBase):
    type: Literal["search"]
    query: Annotated[str, StringConstraints(max_length=1000)]
    result_count: int = Field(ge=0)
    clicked_product_id: Id | None = None


class CartEvent(EventBase):
    product_id: Id
    variant_id: Id | None = None
    quantity: int = Field(1, gt=0)
    unit_price: float | None = Field(None, ge=0)


class AddToCartEvent(CartEvent):
    type: Literal["add_to_cart"]


class RemoveFromCartEvent(CartEvent):
    type: Literal["remove_from_cart"]


class CheckoutEvent(EventBase):
    type: Literal["checkout"]
    order_id: Id | None = None
    value: float | None = Field(None, ge=0)


class OrderLine(_Model):
    product_id: Id
    variant_id: Id | None = None
    quantity: int = Field(gt=0)
    unit_price: float = Field(ge=0)


class PurchaseEvent(EventBase):
    type: Literal["purchase"]
    order_id: Id
    currency: Currency
    lines: list[OrderLine] = Field(min_length=1, max_length=10_000)
    total: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _total_matches(self) -> PurchaseEvent:
        if self.total is not None:
            computed = sum(line.quantity * line.unit_price for line in self.lines)
            if abs(computed - self.total) > max(0.01, 1e-6 * computed):
                raise FieldProblem(
                    "total", f"total {self.total} does not match the lines ({computed:.2f})"
                )
        return self


class ReturnEvent(EventBase):
    """Goods sent back (``return``) or an order cancelled before delivery (``cancellation``)."""

    type: Literal["return", "cancellation"]
    order_id: Id
    currency: Currency
    lines: list[OrderLine] = Field(min_length=1, max_length=10_000)
    reason: str | None = Field(None, max_length=1000)


# -- marketplace seller side --------------------------------------------------------------


class ListItemEvent(EventBase):
    """A customer puts an item up for sale (the customer is the seller)."""

    type: Literal["list_item"]
    listing_id: Id
    product_id: Id | None = None
    price: float = Field(ge=0)
    currency: Currency
    condition: Literal["new", "like_new", "good", "fair"] | None = None
    bought_order_id: Id | None = None  # when reselling something bought here


class SaleEvent(EventBase):
    """A listed item sold (the customer is the seller)."""

    type: Literal["sale"]
    listing_id: Id
    product_id: Id | None = None
    price: float = Field(ge=0)
    currency: Currency
    buyer_id: Id | None = None


# -- messages and what people tell us -----------------------------------------------------


class MessageEvent(EventBase):
    type: Literal["delivered", "open", "click", "bounce", "unsubscribe", "complaint"]
    channel: MessageChannel
    message_id: Id | None = None
    campaign_id: Id | None = None
    url: str | None = Field(None, max_length=2000)


Answer = str | int | float | bool | list[str]


class AnswerEvent(EventBase):
    """Zero-party data: the answer to a question we asked (or a preference-center choice)."""

    type: Literal["answer"]
    question_id: Id
    answer: Answer
    about_product_id: Id | None = None


class Location(_Model):
    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")] | None = None
    region: str | None = Field(None, max_length=200)
    city: str | None = Field(None, max_length=200)


class Traits(_Model):
    email: (
        Annotated[str, StringConstraints(max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
        | None
    ) = None
    phone: Annotated[str, StringConstraints(pattern=r"^\+[1-9][0-9]{6,14}$")] | None = None
    first_name: str | None = Field(None, max_length=200)
    last_name: str | None = Field(None, max_length=200)
    timezone: str | None = Field(None, max_length=64)
    locale: (
        Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}([-_][A-Za-z]{2,4})?$")] | None
    ) = None
    location: Location | None = None
    preferred_channel: Channel | None = None

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str | None) -> str | None:
        if v is not None:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(v)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(
                    f"unknown time zone {v!r} (use an IANA name like Europe/Paris)"
                ) from None
        return v


class IdentifyEvent(EventBase):
    """Who someone is. With both ids it also stitches an anonymous visitor to a customer."""

    type: Literal["identify"]
    traits: Traits = Field(default_factory=Traits)


class ConsentEvent(EventBase):
    type: Literal["consent"]
    channel: Channel
    granted: bool
    source: str | None = Field(None, max_length=200)


class MergeEvent(EventBase):
    """Two known customer ids proved to be one person.

    ``merged_customer_id`` joins ``customer_id``, which survives.
    """

    type: Literal["merge"]
    merged_customer_id: Id

    @model_validator(mode="after")
    def _two_people(self) -> MergeEvent:
        if self.customer_id is None:
            raise FieldProblem(
                "customer_id", "customer_id (the surviving customer) is required for a merge"
            )
        if self.merged_customer_id == self.customer_id:
            raise FieldProblem(
                "merged_customer_id", "merged_customer_id must differ from customer_id"
            )
        return self


Event = Annotated[
    ViewEvent
    | SearchEvent
    | AddToCartEvent
    | RemoveFromCartEvent
    | CheckoutEvent
    | PurchaseEvent
    | ReturnEvent
    | ListItemEvent
    | SaleEvent
    | MessageEvent
    | AnswerEvent
    | IdentifyEvent
    | ConsentEvent
    | MergeEvent,
    Field(discriminator="type"),
]

EVENT_TYPES: tuple[str, ...] = (
    "view",
    "search",
    "add_to_cart",
    "remove_from_cart",
    "checkout",
    "purchase",
    "return",
    "cancellation",
    "list_item",
    "sale",
    "delivered",
    "open",
    "click",
    "bounce",
    "unsubscribe",
    "complaint",
    "answer",
    "identify",
    "consent",
    "merge",
)

EventAdapter: TypeAdapter[Event] = TypeAdapter(Event)
EventListAdapter: TypeAdapter[list[Event]] = TypeAdapter(list[Event])
