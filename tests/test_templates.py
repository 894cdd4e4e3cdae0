"""Templates: strict variables, product blocks in stock, brand assets, preview and preflight,
and injection attempts in templates and in profile data."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campaign_data import cart_campaign, customer, iso, store_with_catalog
from concierge import Concierge
from concierge.campaigns.definitions import TemplateSpec
from concierge.campaigns.templates import Held, Item, PersonContext, Rendered, Renderer
from concierge.clock import FrozenClock
from concierge.errors import InputError


class Fixed:
    """A product source with a fixed answer (a source is an input of the renderer)."""

    def __init__(self, items: list[Item]) -> None:
        self.items = items

    def candidates(self, person: PersonContext, k: int) -> tuple[list[Item], str]:
        return self.items[:k], "fixed"


def _person(**traits: Any) -> PersonContext:
    return PersonContext(person_id="ann", traits=traits, features={}, doc={"recent_views": []})


def _spec(**kw: Any) -> TemplateSpec:
    base: dict[str, Any] = {
        "subject": "Hi {{ name }}",
        "text": "Hi {{ name }}",
        "html": "<p>Hi {{ name }}</p>",
        "variables": {"name": {"source": "traits.first_name"}},
    }
    base.update(kw)
    return TemplateSpec.model_validate(base)


def test_variable_without_value_or_fallback_is_held_back() -> None:
    r = Renderer()
    held = r.render(_spec(), _person())
    assert isinstance(held, Held)
    assert held.reasons == ["variable name: no value for traits.first_name and no fallback"]
    with_fallback = _spec(variables={"name": {"source": "traits.first_name", "fallback": "you"}})
    ok = r.render(with_fallback, _person())
    assert isinstance(ok, Rendered) and ok.subject == "Hi you"
    assert r.render(with_fallback, _person(first_name="Ann")).subject == "Hi Ann"  # type: ignore[union-attr]


def test_undeclared_names_and_syntax_errors_are_refused_at_creation(cg: Concierge) -> None:
    bad = cart_campaign()
    bad["template"] = {**bad["template"], "html": "<p>{{ last_name }} {% if %}</p>"}
    with pytest.raises(InputError) as err:
        cg.save_campaign(bad)
    assert err.value.errors[0].field == "template.html"
    bad["template"]["html"] = "<p>{{ last_name }}</p>"
    with pytest.raises(InputError) as err:
        cg.save_campaign(bad)
    assert err.value.errors[0].field == "template.html"
    assert "last_name" in err.value.errors[0].reason
    assert cg.campaigns() == []


def test_empty_or_short_product_block_is_held_back() -> None:
    item = Item(product_id="p1", title="Shoe", price=10.0, url="https://s/p1")
    spec = _spec(
        variables={},
        subject="x",
        text="{% for i in recs %}{{ i.title }}{% endfor %}",
        html=None,
        blocks={"recs": {"source": "popular", "k": 3, "min_items": 2}},
    )
    held = Renderer(sources={"popular": Fixed([item])}).render(spec, _person())
    assert isinstance(held, Held) and held.reasons[0].startswith("block recs: 1 item(s)")
    out_of_stock = Renderer(
        sources={"popular": Fixed([item, item])}, available=lambda items: [False] * len(items)
    )
    assert isinstance(out_of_stock.render(spec, _person()), Held)
    fine = Renderer(sources={"popular": Fixed([item, item])})
    assert fine.render(spec, _person()).text == "ShoeShoe"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "attack",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ name.__class__ }}",
        "{{ brand.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{{ lipsum.__globals__['os'].system('id') }}",
        "{% set x = brand.update({'name': 'pwned'}) %}{{ brand.name }}",
        "{{ name.format.__self__ }}",
    ],
)
def test_sandbox_escapes_in_templates_are_held_never_executed(attack: str) -> None:
    spec = TemplateSpec.model_validate(
        {
            "subject": "s",
            "text": attack,
            "variables": {"name": {"source": "traits.first_name", "fallback": "x"}},
        }
    )
    out = Renderer(brand={"name": "Shop"}).render(spec, _person(first_name="Ann"))
    assert isinstance(out, Held)
    assert "sandbox" in out.reasons[0] or "undefined" in out.reasons[0]


def test_profile_data_is_data_escaped_in_html_never_evaluated() -> None:
    evil = "{{ 7*7 }}{% raw %}<script>alert(1)</script>{{ ''.__class__ }}"
    out = Renderer().render(_spec(), _person(first_name=evil))
    assert isinstance(out, Rendered)
    assert "49" not in out.text and out.text == "Hi " + evil
    assert "<script>" not in (out.html or "")
    assert "&lt;script&gt;" in (out.html or "")
    assert "{{ 7*7 }}" in (out.html or "")


def test_subject_cannot_inject_headers() -> None:
    out = Renderer().render(_spec(), _person(first_name="Ann\r\nBcc: x@evil.example"))
    assert isinstance(out, Rendered) and "\n" not in out.subject and "\r" not in out.subject


def test_brand_layout_and_snippets(cg: Concierge, clock: FrozenClock) -> None:
    cg.set_asset(
        "snippet:footer",
        '<footer>{{ brand.name }} · <a href="{{ unsubscribe_url }}">unsubscribe</a></footer>',
    )
    cg.set_asset(
        "layout:base",
        "<html><body><header>{{ brand.name }}</header>"
        "{% block content %}{% endblock %}{% include 'snippet:footer' %}</body></html>",
    )
    cg.set_brand(name="Runners' Corner")
    with pytest.raises(InputError):
        cg.set_asset("layout:broken", "<p>no content block</p>")
    store_with_catalog(cg)
    cg.ingest(customer("ann", clock))
    body = cart_campaign()
    body["template"]["layout"] = "base"
    body["template"]["html"] = "<p>Hi {{ first_name }}</p>"
    cg.save_campaign(body)
    out = cg.preview("cart", "ann", trigger={"product_ids": ["p1"], "why": "you carted it"})
    assert out["held"] is False
    assert out["html"].startswith("<html><body><header>Runners&#39; Corner</header><p>Hi Ann</p>")
    assert "<footer>Runners&#39; Corner" in out["html"]
    assert out["reasons"] == {"items": "you carted it"}
    assert out["blocks"]["items"][0]["product_id"] == "p1"
    assert out["policy"]["decision"] == "send"


def test_preview_of_last_viewed_skips_out_of_stock(cg: Concierge, clock: FrozenClock) -> None:
    store_with_catalog(cg)
    cg.ingest(
        customer("ann", clock)
        + [
            {"type": "view", "customer_id": "ann", "product_id": p, "timestamp": iso(clock, m)}
            for m, p in enumerate(["p1", "p3", "p2"])
        ]
    )
    body = cart_campaign()
    body["template"]["blocks"] = {"items": {"source": "last_viewed", "k": 3}}
    out = cg.preview(body, "ann")
    assert [i["product_id"] for i in out["blocks"]["items"]] == ["p2", "p1"]  # p3 has no stock
    assert "viewed" in out["reasons"]["items"]


def test_preflight_counts_who_would_be_held_and_why(cg: Concierge, clock: FrozenClock) -> None:
    store_with_catalog(cg)
    for i in range(6):
        cg.ingest(
            customer(
                f"c{i}",
                clock,
                first_name=None if i % 3 == 0 else "N",
                consent=("email",) if i != 5 else (),
            )
        )
    cg.save_campaign(
        {
            "campaign_id": "news",
            "kind": "broadcast",
            "channel": "email",
            "status": "live",
            "audience": {"all": [{"field": "features.orders", "op": "==", "value": 0}]},
            "template": {
                "subject": "Hi {{ name }}",
                "text": "Hi {{ name }}",
                "variables": {"name": {"source": "traits.first_name"}},
            },
        }
    )
    out = cg.preflight("news")
    assert out["audience"] == 6
    assert out["suppressed_by_rule"] == {"consent": 1}
    assert out["held"] == 2 and out["held_by_reason"] == {"variable name": 2}
    assert out["would_send"] == 3


def test_recommender_source_is_the_recommender(cg: Concierge, clock: FrozenClock) -> None:
    """The recommender-backed block is filled by ``Concierge.recommend(slot="email")`` (the
    decide part), trained on the log, with its reasons; out-of-stock items never appear."""
    store_with_catalog(cg)
    cg.ingest(customer("ann", clock) + customer("bob", clock))
    cg.ingest(
        [
            {
                "type": "view",
                "customer_id": "bob",
                "product_id": p,
                "timestamp": iso(clock, -10 + i),
            }
            for i, p in enumerate(["p4", "p4", "p4", "p2", "p3", "p3", "p3", "p3"])
        ]
    )
    body = cart_campaign()
    body["template"]["blocks"] = {"items": {"source": "recommended", "k": 2}}
    untrained = cg.preview(body, "ann")
    assert "fallback" in untrained["reasons"]["items"]  # says the recommender fell back
    cg.train(only=["crowd", "collaborative", "ranker"])
    recs = cg.recommend("ann", slot="email", k=2)
    assert recs.items, recs.as_dict()
    out = cg.preview(body, "ann")
    shown = [i["product_id"] for i in out["blocks"]["items"]]
    assert "p3" not in shown  # the most viewed, but out of stock
    assert shown == [r.product_id for r in recs.items if r.product_id != "p3"][: len(shown)]
    first = recs.items[0]
    assert out["blocks"]["items"][0]["reason"] == "; ".join(x.text for x in first.reasons)


_TEXT = st.text(alphabet=st.sampled_from(list("ab <>&\"'{}#%\n")), max_size=12)
_VALUE = st.one_of(
    st.none(),
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.sampled_from(["<script>alert(1)</script>", "{{ 7*7 }}", "{% raw %}", "A & B", "é"]),
    st.text(max_size=8),
    st.lists(st.text(max_size=3), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=300)
@given(
    texts=st.lists(_TEXT, min_size=1, max_size=5),
    names=st.lists(st.sampled_from(["name", "city", "brand", "missing"]), max_size=4),
    values=st.fixed_dictionaries({"name": _VALUE, "city": _VALUE}),
    html=st.booleans(),
)
def test_plain_templates_render_exactly_as_jinja(
    texts: list[str], names: list[str], values: dict[str, Any], html: bool
) -> None:
    """Text-and-variables templates skip Jinja's render call (``_Plain``): for any text (with
    comments, raw blocks and a trailing newline) and any values, the output, the escaping and
    an undefined name's error are exactly Jinja's."""
    from jinja2 import TemplateSyntaxError, UndefinedError

    from concierge.campaigns.templates import _Plain

    source = texts[0] + "".join(
        f"{{{{ {n} }}}}{t}" for n, t in zip(names, [*texts[1:], *[""] * len(names)], strict=False)
    )
    source += "{# a comment #}{% raw %}{{ raw }}{% endraw %}\n"
    r = Renderer()
    env = r.html_env if html else r.text_env
    try:
        jinja = env.from_string(source)
    except TemplateSyntaxError:
        return  # refused at creation (validate_campaign), never rendered
    plain = _Plain.of(env, source, jinja)
    assert plain is not None
    ctx = {**values, "brand": {"name": "<b>Shop</b>"}}
    try:
        expected = jinja.render(ctx)
    except UndefinedError as exc:
        with pytest.raises(UndefinedError, match=exc.message or ""):
            plain.render(ctx)
        return
    assert plain.render(ctx) == expected
    assert r._template(source, html=html).render(ctx) == expected


def test_templates_with_logic_or_filters_stay_with_jinja() -> None:
    from concierge.campaigns.templates import _Plain

    r = Renderer()
    for source in (
        "{{ name | upper }}",
        "{% if name %}x{% endif %}",
        "{{ name.__class__ }}",
        "{{ 7*7 }}",
        "{{ brand.name }}",
        '{% extends "layout:x" %}',
    ):
        assert _Plain.of(r.html_env, source, None) is None, source
    assert _Plain.of(r.html_env, "Hi {{ name }}!", None) is not None
