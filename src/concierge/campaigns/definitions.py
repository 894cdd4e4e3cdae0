"""Campaign definitions as data (JSON or YAML through the API and the CLI), validated at creation.

A campaign says *who* (a trigger, or an audience rule over profiles and per-person prediction
artifacts), *when* (a delay after the trigger, or a time for a broadcast), *on which channel*,
*what* (a template with declared variables and product blocks) and *how much it matters*
(``priority`` and ``expected_value``, which arbitrate when campaigns compete for a person).
The :class:`ContactPolicy` of the store bounds everything.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from concierge.errors import FieldProblem

Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")]
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
ChannelName = Literal["email", "sms", "push", "onsite"]
TriggerKind = Literal[
    "cart_abandonment",
    "browse_abandonment",
    "search_abandonment",
    "post_purchase",
    "welcome",
    "item_sold",
    "back_in_stock",
    "price_drop",
]
Scalar = str | int | float | bool

# what ends a wait, per trigger, unless the campaign says otherwise
DEFAULT_EXIT: dict[str, list[str]] = {
    "cart_abandonment": ["purchase", "checkout"],
    "browse_abandonment": ["add_to_cart", "purchase"],
    "search_abandonment": ["view", "add_to_cart", "purchase"],
    "post_purchase": ["return", "cancellation"],
    "welcome": ["unsubscribe"],
    "item_sold": [],
    "back_in_stock": ["purchase"],
    "price_drop": ["purchase"],
}
# the event types that start each trigger (catalog triggers start from catalog events)
STARTS: dict[str, tuple[str, ...]] = {
    "cart_abandonment": ("add_to_cart",),
    "browse_abandonment": ("view",),
    "search_abandonment": ("search",),
    "post_purchase": ("purchase",),
    "welcome": ("consent",),
    "item_sold": ("sale",),
}


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VariableSpec(_M):
    """A template variable: where its value comes from and what to say when there is none.

    ``source`` is a dotted path: ``traits.first_name``, ``features.orders``,
    ``predictions.clv``, ``trigger.query``, ``person_id``. Without a ``fallback``, a person
    lacking the value does not get the message (it is held back and reported).
    """

    source: Annotated[str, StringConstraints(pattern=r"^[a-z_]+(\.[A-Za-z0-9_]+)*$")]
    fallback: Scalar | None = None


class BlockSpec(_M):
    """A dynamic product block. ``min_items`` in stock or the message is held back."""

    source: Literal["recommended", "last_viewed", "popular", "trigger_items", "cart"]
    k: int = Field(3, ge=1, le=20)
    min_items: int = Field(1, ge=1, le=20)


class TemplateSpec(_M):
    subject: str = Field("", max_length=998)
    text: str = Field(..., min_length=1, max_length=100_000)
    html: str | None = Field(None, max_length=500_000)
    layout: str | None = None  # a stored asset "layout:<name>" the HTML extends
    variables: dict[Name, VariableSpec] = Field(default_factory=dict)
    blocks: dict[Name, BlockSpec] = Field(default_factory=dict)


class TriggerSpec(_M):
    on: TriggerKind
    delay_minutes: float = Field(60.0, ge=0, le=60 * 24 * 90)
    exit_on: list[str] | None = None  # event types after the trigger that cancel the send
    reentry_days: float = Field(7.0, ge=0)  # no new occasion within this time of the last

    def exits(self) -> list[str]:
        return self.exit_on if self.exit_on is not None else DEFAULT_EXIT[self.on]


class Condition(_M):
    """``field op value`` over a person: ``features.orders``, ``features.lifecycle_stage``,
    ``traits.location``…, or a per-person prediction column ``predictions.<column>``."""

    field: Annotated[str, StringConstraints(pattern=r"^[a-z_]+(\.[A-Za-z0-9_]+)*$")]
    op: Literal["==", "!=", ">", ">=", "<", "<=", "in", "exists"]
    value: Scalar | list[Scalar] | None = None


class ReplenishmentSpec(_M):
    """People due to buy again *in a category*, on their own rhythm there (see
    :mod:`concierge.campaigns.replenishment`): ``due_soon``, ``overdue`` or ``due`` (either),
    in the ``categories`` named (and their sub-categories; all when empty), after at least
    ``min_purchases`` purchases in the category. The message's ``trigger_items`` block gets
    the products they bought there, and the occasion is the category's cycle (its last
    purchase): one message per person per cycle."""

    when: Literal["due_soon", "overdue", "due"] = "due"
    categories: list[Annotated[str, StringConstraints(min_length=1, max_length=200)]] = Field(
        default_factory=list
    )
    min_purchases: int = Field(2, ge=2, le=1000)


class AudienceSpec(_M):
    """People who satisfy every condition (and are known customers).

    ``stored`` names a stored rule-based audience (its id or its name, see
    :mod:`concierge.audiences`): only its current members count, refreshed before each run.
    ``segment_id`` keeps only the people of that micro-segment in the newest ``segments``
    artifact. Both combine with the inline conditions of ``all`` (every one must hold).

    ``occasion_by`` says when a person counts again: ``run`` (every scheduled run),
    ``person`` (once ever), ``predictions.<column>`` (once per value of that column: the
    entry into a segment or a CLV tier, not every run while they stay in it), or ``entry``
    (once per entry into the ``stored`` audience: the occasion is the sequence number of the
    person's ``entered`` row in ``audience_changes``, so leaving and coming back is a new
    occasion while staying in is not). ``replenishment`` keeps the people due in a category
    (:class:`ReplenishmentSpec`); its occasion is then the category's purchase cycle.
    ``resale`` keeps the resellers holding an item their own resale delay says is ready to
    sell; the occasion is then the item."""

    all: list[Condition] = Field(default_factory=list)
    stored: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    segment_id: int | None = Field(None, ge=0)
    occasion_by: Annotated[
        str, StringConstraints(pattern=r"^(run|person|entry|predictions\.[A-Za-z0-9_]+)$")
    ] = "run"
    replenishment: ReplenishmentSpec | None = None
    # "sell your item": resellers holding an item inside their resale window (see
    # concierge.campaigns.resale); the item fills trigger_items, the occasion is the item
    resale: bool = False

    @model_validator(mode="after")
    def _entry_needs_stored(self) -> AudienceSpec:
        if self.resale and self.replenishment is not None:
            raise FieldProblem("resale", "an audience is either replenishment or resale")
        if self.occasion_by == "entry" and self.stored is None:
            raise FieldProblem(
                "occasion_by", "'entry' counts entries into a stored audience: name it in stored"
            )
        return self


class ScheduleSpec(_M):
    at: AwareDatetime  # when a broadcast or a lifecycle run goes out
    best_time: bool = False  # each person at their usual hour, in their own time zone


class CampaignCaps(_M):
    per_person: int = Field(1, ge=1)  # messages of this campaign per person …
    per_days: float = Field(7.0, gt=0)  # … within this many days


class JourneyStep(_M):
    """One step of a journey. ``send`` (the campaign's channel and template unless the step
    gives its own) and ``wait`` (``minutes``) go on to ``next``; ``branch`` goes to ``then``
    when its check holds (``opened``/``clicked`` the message of send step ``of_step``,
    ``bought`` since the journey began, or a ``condition`` on the person), else to
    ``otherwise``; ``split`` sends ``percent`` % of people (a stable hash of the person) to
    ``then`` and the rest to ``otherwise`` (an A/B test); ``exit`` ends the journey. A step
    without a following step ends it too."""

    id: Name
    type: Literal["send", "wait", "branch", "split", "exit"]
    next: Name | None = None
    channel: ChannelName | None = None
    template: TemplateSpec | None = None
    minutes: float | None = Field(None, ge=0, le=60 * 24 * 365)
    check: Literal["opened", "clicked", "bought", "condition"] | None = None
    of_step: Name | None = None
    condition: Condition | None = None
    percent: int | None = Field(None, ge=0, le=100)
    then: Name | None = None
    otherwise: Name | None = None

    def following(self) -> list[str]:
        return [n for n in (self.next, self.then, self.otherwise) if n is not None]


class JourneySpec(_M):
    """A multi-step flow as data; a person's position is their pending due-queue row."""

    steps: list[JourneyStep] = Field(min_length=1, max_length=100)
    goal: list[str] = Field(default_factory=list)  # event types that end the journey early

    @model_validator(mode="after")
    def _graph(self) -> JourneySpec:
        ids = [s.id for s in self.steps]
        if "main" in ids:
            raise FieldProblem("steps", "'main' is reserved (the entry)")
        if len(set(ids)) != len(ids):
            raise FieldProblem("steps", "step ids must be unique")
        known = set(ids)
        sends = {s.id for s in self.steps if s.type == "send"}
        for i, s in enumerate(self.steps):
            where = f"steps.{i}"
            for n in s.following():
                if n not in known:
                    raise FieldProblem(where, f"step {s.id!r} leads to unknown step {n!r}")
            if s.type == "wait" and s.minutes is None:
                raise FieldProblem(f"{where}.minutes", "a wait needs minutes")
            if s.type == "branch":
                if s.check is None or s.then is None or s.otherwise is None:
                    raise FieldProblem(where, "a branch needs check, then and otherwise")
                if s.check in ("opened", "clicked") and s.of_step not in sends:
                    raise FieldProblem(f"{where}.of_step", "name a send step of this journey")
                if s.check == "condition" and s.condition is None:
                    raise FieldProblem(f"{where}.condition", "a condition branch needs one")
            if s.type == "split" and (s.percent is None or s.then is None or s.otherwise is None):
                raise FieldProblem(where, "a split needs percent, then and otherwise")
        by_id = {s.id: s for s in self.steps}
        state: dict[str, int] = {}

        def visit(node: str) -> None:  # no cycles: every journey ends
            if state.get(node) == 1:
                raise FieldProblem("steps", f"the steps loop back to {node!r}")
            if state.get(node) == 2:
                return
            state[node] = 1
            for n in by_id[node].following():
                visit(n)
            state[node] = 2

        for node in ids:
            visit(node)
        return self

    def step(self, step_id: str) -> JourneyStep | None:
        if step_id == "main":
            return self.steps[0]
        return next((s for s in self.steps if s.id == step_id), None)


class Campaign(_M):
    campaign_id: Id
    name: str = Field("", max_length=200)
    kind: Literal["triggered", "lifecycle", "broadcast"]
    channel: ChannelName
    status: Literal["draft", "live", "paused"] = "draft"
    priority: int = Field(0, ge=-100, le=100)
    expected_value: float = Field(0.0, ge=0)
    trigger: TriggerSpec | None = None
    audience: AudienceSpec | None = None
    schedule: ScheduleSpec | None = None
    template: TemplateSpec
    caps: CampaignCaps = Field(default_factory=CampaignCaps)
    journey: JourneySpec | None = None

    def at_step(self, step: JourneyStep) -> Campaign:
        """The campaign as one send step of its journey sends it."""
        return self.model_copy(
            update={
                "channel": step.channel or self.channel,
                "template": step.template or self.template,
            }
        )

    @model_validator(mode="after")
    def _consistent(self) -> Campaign:
        if self.kind == "triggered" and self.trigger is None:
            raise FieldProblem("trigger", "a triggered campaign needs a trigger")
        if self.kind != "triggered" and self.trigger is not None:
            raise FieldProblem("trigger", f"a {self.kind} campaign has no trigger")
        if self.kind in ("broadcast", "lifecycle") and self.audience is None:
            raise FieldProblem("audience", f"a {self.kind} campaign needs an audience")
        if self.channel == "email" and not self.template.subject:
            raise FieldProblem("template.subject", "an email needs a subject")
        return self


def _default_daily() -> dict[ChannelName, int]:
    return {"email": 1, "sms": 1, "push": 2, "onsite": 10}


class ContactPolicy(_M):
    """The store's contact rules; every send is checked against them at send time."""

    max_per_day: dict[ChannelName, int] = Field(default_factory=_default_daily)
    max_per_week: int = Field(5, ge=0)  # across channels, on-site not counted
    quiet_start_hour: int = Field(21, ge=0, le=23)  # local time of the person
    quiet_end_hour: int = Field(8, ge=0, le=23)
    default_timezone: str = "UTC"
    learn_frequency: bool = True
    learn_after: int = Field(4, ge=1)  # deliveries before engagement counts


def campaign_from(data: dict[str, Any] | Campaign) -> Campaign:
    return data if isinstance(data, Campaign) else Campaign.model_validate(data)
