"""The shopper simulator: deterministic, canonical, and its histories reflect the hidden truth."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl
import pytest

from concierge import Concierge
from concierge.clock import to_us
from concierge.demo import load_simulation
from concierge.errors import InputError, NotFoundError
from concierge.ingest.service import event_frames
from concierge.schema.events import ANON_PREFIX, ERASED_PREFIX, EventAdapter
from concierge.sim import response
from concierge.sim.run import Simulation, load_truth, simulate
from concierge.sim.world import (
    BRAND_NAMES,
    CATEGORY_NAMES,
    CHANNELS,
    DEPARTMENTS,
    ZONE_NAMES,
    SimConfig,
)

CFG = SimConfig(seed=7, n_shoppers=300, days=120)
DAY_US = 86_400_000_000


@pytest.fixture(scope="module")
def sim() -> Simulation:
    return simulate(CFG)


def _of_type(sim: Simulation, typ: str) -> pl.DataFrame:
    return sim.events.filter(pl.col("type") == typ)


# -- determinism and the shape of what ingest receives --------------------------------------


def test_same_seed_same_world_other_seed_other_world(sim: Simulation) -> None:
    again = simulate(CFG)
    assert sim.events.equals(again.events) and sim.items.equals(again.items)
    assert [p.model_dump() for p in sim.products] == [p.model_dump() for p in again.products]
    other = simulate(dataclasses.replace(CFG, seed=8))
    assert not sim.events.get_column("payload").equals(other.events.get_column("payload"))
    assert not set(sim.events.get_column("event_id")) & set(other.events.get_column("event_id"))


def test_payloads_are_canonical_and_cover_every_kind(sim: Simulation) -> None:
    kinds = set(sim.events.get_column("type").unique())
    assert kinds >= {
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
        "identify",
        "consent",
        "answer",
    }
    sample = pl.concat([g.head(150) for g in sim.events.partition_by("type", maintain_order=True)])
    models = []
    for eid, cid, aid, ts, payload in sample.select(
        "event_id", "customer_id", "anonymous_id", "ts_us", "payload"
    ).iter_rows():
        event = EventAdapter.validate_json(payload)
        assert event.model_dump_json() == payload  # byte for byte: the canonical form
        assert (event.event_id, event.customer_id, event.anonymous_id) == (eid, cid, aid)
        assert to_us(event.timestamp) == ts
        models.append(event)
    # the ITEMS rows are exactly what ingest makes of the same events
    _, expected = event_frames(models)
    got = sim.items.join(sample.select("event_id"), on="event_id", how="semi")
    assert got.sort("event_id", "line").equals(expected.sort("event_id", "line"))
    assert sim.events.get_column("event_id").is_unique().all()
    assert sim.events.get_column("ts_us").is_sorted()
    start = to_us(CFG.start)
    ts = sim.events.get_column("ts_us").to_numpy()
    assert ts.min() >= start and ts.max() < start + CFG.days * DAY_US
    cids = sim.events.get_column("customer_id").drop_nulls()
    assert not cids.str.starts_with(ANON_PREFIX).any()
    assert not cids.str.starts_with(ERASED_PREFIX).any()


def test_shoppers_act_in_their_local_daytime(sim: Simulation) -> None:
    sessions = sim.events.filter(pl.col("type").is_in(["view", "search", "add_to_cart"]))
    stamps = sessions.get_column("payload").str.json_path_match("$.timestamp")
    local_hours = stamps.str.slice(11, 2).cast(pl.Int32)
    assert ((local_hours >= 7) | (local_hours <= 1)).mean() > 0.97  # type: ignore[operator]
    # the offset written is the zone's offset at that instant (summer and winter time)
    zone_of = dict(zip(sim.shoppers.ids, _zones(sim), strict=True))
    for cid, text in (
        sessions.filter(pl.col("customer_id").is_not_null())
        .select("customer_id", pl.col("payload").str.json_path_match("$.timestamp"))
        .gather_every(97)
        .iter_rows()
    ):
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
        assert at.utcoffset() == at.astimezone(ZoneInfo(zone_of[cid])).utcoffset()


def _zones(sim: Simulation) -> list[str]:
    return [ZONE_NAMES[z] for z in sim.shoppers.zone]


def test_catalog_prices_and_marketplace_listings(sim: Simulation) -> None:
    by_id = {p.product_id: p for p in sim.products}
    assert all(p.currency == "EUR" for p in sim.products)
    regular = [p for p in sim.products if p.seller_id is None]
    listings = [p for p in sim.products if p.seller_id is not None]
    assert all(p.brand and p.category and p.colour and p.variants for p in regular)
    assert any(p.attributes.get("pronation") for p in regular)
    assert listings and all(p.one_of_a_kind and p.condition for p in listings)
    assert all(len(p.variants) == 1 and p.variants[0].stock <= 1 for p in listings)
    # every line is priced as the catalog says, in an existing variant
    lines = sim.items.join(
        sim.events.select("event_id", "type").filter(pl.col("type") == "purchase"), on="event_id"
    )
    for pid, vid, price in lines.select("product_id", "variant_id", "unit_price").iter_rows():
        product = by_id[pid]
        assert price == product.price
        assert vid in {v.variant_id for v in product.variants}
    currencies = sim.events.filter(pl.col("type").is_in(["purchase", "list_item", "sale"]))
    assert (currencies.get_column("payload").str.json_path_match("$.currency") == "EUR").all()


def test_resellers_resell_and_listings_sell_to_someone_else(sim: Simulation) -> None:
    resellers = {c for c, r in zip(sim.shoppers.ids, sim.shoppers.reseller, strict=True) if r}
    listed = _of_type(sim, "list_item")
    assert listed.height and set(listed.get_column("customer_id")) <= resellers
    orders = _of_type(sim, "purchase").select(
        "customer_id",
        "ts_us",
        pl.col("payload").str.json_path_match("$.order_id").alias("order_id"),
    )
    resold = listed.with_columns(
        pl.col("payload").str.json_path_match("$.bought_order_id").alias("order_id")
    ).filter(pl.col("order_id").is_not_null())
    assert resold.height
    joined = resold.join(orders, on="order_id", suffix="_bought")
    assert joined.height == resold.height
    assert (joined["customer_id"] == joined["customer_id_bought"]).all()  # their own order
    assert (joined["ts_us"] > joined["ts_us_bought"]).all()  # after they bought it
    sales = _of_type(sim, "sale").with_columns(
        pl.col("payload").str.json_path_match("$.buyer_id").alias("buyer"),
        pl.col("payload").str.json_path_match("$.product_id").alias("product_id"),
    )
    assert sales.height and (sales["buyer"] != sales["customer_id"]).all()
    bought = sim.items.join(
        _of_type(sim, "purchase").select("event_id", "customer_id"), on="event_id"
    )
    pairs = set(bought.select("customer_id", "product_id").iter_rows())
    assert all((b, p) in pairs for b, p in sales.select("buyer", "product_id").iter_rows())
    sold = {p.product_id for p in sim.products if p.seller_id and p.variants[0].stock == 0}
    assert sold == set(sales.get_column("product_id"))


def test_purchases_follow_each_shoppers_own_cadence() -> None:
    long = simulate(SimConfig(seed=3, n_shoppers=250, days=730, existing_customers=1.0))
    buys = (
        long.items.join(
            long.events.filter(pl.col("type") == "purchase").select(
                "event_id", "customer_id", "ts_us"
            ),
            on="event_id",
        )
        .filter(pl.col("line") == 0)
        .with_columns(
            pl.col("product_id")
            .replace_strict(
                {
                    p: CATEGORY_NAMES[int(k)]
                    for p, k in zip(long.catalog.ids, long.catalog.category, strict=True)
                }
            )
            .alias("category")
        )
    )
    gaps = (
        buys.sort("ts_us")
        .group_by("customer_id", "category")
        .agg((pl.col("ts_us").diff().drop_nulls() / DAY_US).median().alias("gap"), pl.len())
        .filter(pl.col("len") >= 4)
    )
    sh = long.shoppers
    hidden = [
        sh.cadence_days[int(c[1:]) - 1, CATEGORY_NAMES.index(k)]
        for c, k in gaps.select("customer_id", "category").iter_rows()
    ]
    observed = gaps.get_column("gap").to_numpy()
    assert len(observed) > 100
    assert np.isfinite(hidden).mean() > 0.9  # they buy what they are regular buyers of
    ok = np.isfinite(hidden)
    rank = np.corrcoef(
        np.argsort(np.argsort(np.asarray(hidden)[ok])), np.argsort(np.argsort(observed[ok]))
    )
    assert rank[0, 1] > 0.6


# -- through the ordinary ingest path -------------------------------------------------------


def test_ingested_profiles_reflect_hidden_tastes(cg: Concierge, tmp_path: Path) -> None:
    truth_path = tmp_path / "truth.json"
    report = load_simulation(cg, shoppers=300, days=120, seed=7, truth_path=truth_path)
    assert report["accepted"] == report["events"] > 10_000
    truth = load_truth(truth_path)
    sh = truth.shoppers
    known = set(simulate(CFG).events.get_column("customer_id").drop_nulls())
    hits = top3 = baseline = dept_hits = total = 0
    for i, cid in enumerate(sh.ids):
        try:
            c360 = cg.customer(cid, history=0)
        except NotFoundError:  # never logged in (or never came)
            assert cid not in known
            continue
        f = c360["features"]
        assert c360["timezone"] == ZONE_NAMES[int(sh.zone[i])]
        final = {
            ch
            for c, ch in enumerate(CHANNELS)
            if sh.consent[i, c] and not np.isfinite(sh.withdraw_day[i, c])
        }
        assert {ch for ch in CHANNELS if c360["consent"][ch]["granted"]} == final
        if f["orders"] < 3:
            continue
        total += 1
        top = f["affinities"]["brand"][0]["value"]
        favourites = [BRAND_NAMES[j] for j in np.argsort(-sh.brand_w[i])[:3]]
        hits += top == favourites[0]
        top3 += top in favourites
        # the same check against someone else's hidden taste: what chance alone gives
        baseline += top == BRAND_NAMES[int(sh.brand_w[(i + 150) % len(sh)].argmax())]
        dept_hits += f["affinities"]["dept"][0]["value"] in (
            DEPARTMENTS[int(sh.department[i])],
            "unisex",
        )
    assert total > 100
    assert hits / total > 0.35 and top3 / total > 0.65, (hits, top3, total)
    assert hits > 5 * baseline, (hits, baseline)
    assert dept_hits / total > 0.9, (dept_hits, total)


def test_anonymous_visits_join_the_person_who_logs_in(cg: Concierge, tmp_path: Path) -> None:
    load_simulation(cg, shoppers=300, days=120, seed=7, truth_path=tmp_path / "t.json")
    sim = simulate(CFG)
    sh = sim.shoppers
    ev = sim.events
    stitched = anonymous = 0
    for i, (cid, aid) in enumerate(zip(sh.ids, sh.anonymous_ids, strict=True)):
        if aid is None:
            continue
        mine = ev.filter((pl.col("customer_id") == cid) | (pl.col("anonymous_id") == aid))
        if mine.height == 0:
            continue
        logged_in = (mine.get_column("type") == "identify").any()
        if not logged_in:  # never logged in: an anonymous person of their own
            assert (
                sh.never_identify[i] or mine.get_column("customer_id").null_count() == mine.height
            )
            c360 = cg.customer(anonymous_id=aid, history=0)
            assert not c360["known"]
            anonymous += 1
            continue
        c360 = cg.customer(cid, history=0)
        assert c360["anonymous_ids"] == [aid]
        doc = cg.profile_doc(c360["person_id"])
        assert doc is not None and doc["n_events"] == mine.height  # the whole history, once
        stitched += int(mine.get_column("customer_id").null_count() > 0)
    assert stitched > 20 and anonymous > 5


# -- the truth file and the response model ---------------------------------------------------


def test_truth_file_round_trips(sim: Simulation, tmp_path: Path) -> None:
    path = tmp_path / "truth.json"
    sim.write_truth(path)
    back = load_truth(path)
    assert back.config == sim.config
    for part, original in (("shoppers", sim.shoppers), ("catalog", sim.catalog)):
        loaded = getattr(back, part)
        for f in dataclasses.fields(original):
            a, b = getattr(original, f.name), getattr(loaded, f.name)
            if isinstance(a, np.ndarray):
                assert a.dtype == b.dtype and np.array_equal(a, b), (part, f.name)
            else:
                assert a == b, (part, f.name)
    person = back.as_dict()["shoppers"][0]
    assert list(person["brands"].values()) == sorted(person["brands"].values(), reverse=True)
    assert set(person) >= {"sizes", "colours", "price", "cadence_days", "resell", "channels"}


def test_config_refuses_bad_values_naming_the_field() -> None:
    with pytest.raises(InputError) as err:
        SimConfig(seed=1, n_shoppers=0, days=10)
    assert err.value.errors[0].field == "n_shoppers"
    with pytest.raises(InputError):
        SimConfig(seed=1, n_shoppers=10, days=10, start=datetime(2026, 1, 1))


def test_response_model_follows_hidden_taste(sim: Simulation) -> None:
    sh, cat = sim.shoppers, sim.catalog
    who = np.arange(50)
    products = np.arange(len(cat))
    fit = response.log_fit(sh, cat, who[:, None], products[None, :])
    assert fit.shape == (50, len(cat))
    # vectorized over pairs gives the same numbers as over the grid
    pairs = response.log_fit(sh, cat, np.repeat(who, len(cat)), np.tile(products, 50))
    assert np.allclose(pairs.reshape(50, -1), fit)
    best, worst = fit.argmax(axis=1), fit.argmin(axis=1)
    assert (response.p_click(fit[who, best]) > response.p_click(fit[who, worst])).all()
    assert (response.p_purchase(fit[who, best]) > response.p_purchase(fit[who, worst])).all()
    # a product of their favourite brand fits better than the same product of another brand
    fav = sh.brand_w[who].argmax(axis=1)
    is_fav = cat.brand[None, :] == fav[:, None]
    assert fit[is_fav].mean() > fit[~is_fav].mean() + 1.0
    swapped = dataclasses.replace(cat, brand=np.where(cat.brand == 0, 1, 0))
    lover = int(np.nonzero(sh.brand_w.argmax(axis=1) == 0)[0][0])
    assert (
        response.log_fit(sh, cat, lover, products)[cat.brand == 0]
        > response.log_fit(sh, swapped, lover, products)[cat.brand == 0]
    ).all()
    # what they cannot wear fits badly
    can = response.wearable(sh, cat, who[:, None], products[None, :])
    assert fit[can].mean() > fit[~can].mean() + 3.0


def test_message_response_tolerance_consent_and_timing(sim: Simulation) -> None:
    sh = sim.shoppers
    who = np.arange(len(sh))
    calm = response.p_unsubscribe(sh, who, sh.contact_per_week * 0.5)
    flooded = response.p_unsubscribe(sh, who, sh.contact_per_week * 4)
    assert (flooded > calm).all()
    email = np.zeros(len(sh), dtype=np.int64)
    evening = sh.active_hour
    opened = response.p_open(sh, who, email, evening, np.zeros(len(sh)))
    consented = response.has_consent(sh, who, email)
    assert (opened[~consented] == 0).all() and (opened[consented] > 0).all()
    night = response.p_open(sh, who, email, np.full(len(sh), 3.0), np.zeros(len(sh)))
    assert (night[consented] < opened[consented]).all()
    tired = response.p_open(sh, who, email, evening, sh.contact_per_week * 3)
    assert (tired[consented] < opened[consented]).all()
    # the same message opens more often on the channel they prefer
    weights = sh.channel_w.copy()
    weights[:, 0] = weights.max(axis=1) * 2
    fans = dataclasses.replace(sh, channel_w=weights)
    keen = response.p_open(fans, who, email, evening, np.zeros(len(sh)))
    assert (keen[consented] > opened[consented]).all()
    # draws are reproducible with a seeded generator
    kw = {
        "s": who,
        "channel": email,
        "local_hour": evening,
        "sent_last_week": np.zeros(len(sh)),
        "product": np.zeros(len(sh), dtype=np.int64),
    }
    one = response.respond_to_message(sh, sim.catalog, np.random.default_rng(1), **kw)
    two = response.respond_to_message(sh, sim.catalog, np.random.default_rng(1), **kw)
    assert np.array_equal(one.opened, two.opened) and not one.opened[~consented].any()
    assert (one.clicked <= one.opened).all() and (one.purchased <= one.clicked).all()
    # local hours of UTC instants follow the shopper's zone
    at = np.full(len(sh), to_us(datetime.fromisoformat("2026-01-15T12:00:00+00:00")))
    hours = response.local_hours(sh, who, at)
    paris = np.array(_zones(sim)) == "Europe/Paris"
    assert np.allclose(hours[paris], 13.0)
