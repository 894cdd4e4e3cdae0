"""How a simulated shopper responds: the one place hidden tastes turn into probabilities.

The simulator itself chooses what shoppers view and buy with :func:`choice_score` (the taste fit
of :func:`log_fit` plus the crowd's popularity). Later steps - campaigns, recommendation and
send-time evaluation - use the same functions to make shoppers respond to a recommendation or a
message according to how well it fits them, so offline scores are measured against the very
truth that produced the history. Load that truth from the file with
:func:`concierge.sim.truth.load_truth`.

Every function is vectorized: ``s`` (shopper rows) and ``p`` (product rows) are integer arrays
that broadcast against each other, e.g. ``s[:, None]`` with ``p[None, :]`` scores every product
for every shopper.

The taste fit (a log-odds scale, 0 = an average product in a category they like)::

    log_fit = 1.0 * log(brand_w[s, brand] * n_brands)       # their brand weights
            + 0.7 * log(colour_w[s, colour] * n_colours)   # their colour weights
            - 0.5 * (log(price / (level * usual price)) / tolerance) ** 2
            + 0.5 * (attributes matching their preference - attributes that don't)
            + 0.6 * log(interest in the category * n_categories + 0.05)
            - 4.0 if they cannot wear it (other department, or not made in their size)
            - a small penalty for a pre-owned item's condition

Messages: the chance of opening rises with responsiveness, a preferred channel and a send time
near the hour they are usually active; it falls at night and once they get more messages a week
than they tolerate, when the chance of unsubscribing climbs steeply.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from concierge.sim.world import (
    CATEGORIES,
    CHANNELS,
    KIDS,
    UNISEX,
    ZONE_NAMES,
    B,
    Catalog,
    F,
    I,
    Shoppers,
)

BRAND = 1.5
COLOUR = 0.7
ATTRIBUTE = 0.5
INTEREST = 0.6
NOT_WEARABLE = -4.0
POPULARITY = 0.5  # weight of the crowd's appeal in what people actually pick
CONDITION = np.array([0.0, -0.1, -0.3, -0.6])  # new, like_new, good, fair
BASE_PRICE = np.array([c.base_price for c in CATEGORIES])
KIDS_PRICE = 0.6  # kids' items cost this share of the adult price

# per channel: log-odds shift of opening (SMS is read, push is glanced at) and base unsubscribe
OPEN_SHIFT = np.array([0.0, 1.0, -0.5])
UNSUBSCRIBE_BASE = np.array([0.002, 0.006, 0.004])

Arr = npt.ArrayLike  # anything np.asarray takes: arrays, lists, scalars


def _sigmoid(x: F) -> F:
    out: F = 1.0 / (1.0 + np.exp(-x))
    return out


def wearable(shoppers: Shoppers, catalog: Catalog, s: Arr, p: Arr) -> B:
    """Whether shopper ``s`` could wear product ``p``: their department, made in their size."""
    s, p = np.asarray(s), np.asarray(p)
    dept = catalog.department[p]
    ok = (dept == UNISEX) | (dept == shoppers.department[s])
    ok |= (dept == KIDS) & shoppers.has_kids[s]
    system = catalog.system[p]
    mine = shoppers.sizes[s, np.maximum(system, 0)]
    sized = (system < 0) | (
        (mine >= 0) & (mine >= catalog.size_lo[p]) & (mine <= catalog.size_hi[p])
    )
    out: B = ok & sized
    return out


def log_fit(shoppers: Shoppers, catalog: Catalog, s: Arr, p: Arr) -> F:
    """How well product ``p`` fits shopper ``s``'s hidden taste, on a log-odds scale."""
    s, p = np.asarray(s), np.asarray(p)
    n_brands, n_colours = shoppers.brand_w.shape[1], shoppers.colour_w.shape[1]
    # logs of the per-shopper tables first (small), then one gather per term (large)
    rows = np.unique(s)
    brand = np.zeros((len(shoppers), n_brands))
    brand[rows] = BRAND * np.log(shoppers.brand_w[rows] * n_brands)
    colour = np.zeros((len(shoppers), n_colours))
    colour[rows] = COLOUR * np.log(shoppers.colour_w[rows] * n_colours)
    n_cat = shoppers.category_w.shape[1]
    interest = np.zeros((len(shoppers), n_cat))
    interest[rows] = INTEREST * np.log(shoppers.category_w[rows] * n_cat + 0.05)
    out: F = brand[s, catalog.brand[p]] + colour[s, catalog.colour[p]]
    out += interest[s, catalog.category[p]]
    kids = np.where(catalog.department[p] == KIDS, KIDS_PRICE, 1.0)
    log_price = np.log(catalog.price[p] / (BASE_PRICE[catalog.category[p]] * kids))
    ratio = log_price - np.log(shoppers.price_level[s])
    out -= 0.5 * (ratio / shoppers.price_tolerance[s]) ** 2
    for j in range(catalog.attrs.shape[1]):  # a loop over attribute names, not rows
        have = catalog.attrs[p, j]
        if (have < 0).all():
            continue
        want = shoppers.attr_pref[s, j]
        out += ATTRIBUTE * np.where((have < 0) | (want < 0), 0.0, np.where(have == want, 1, -1))
    out += np.where(wearable(shoppers, catalog, s, p), 0.0, NOT_WEARABLE)
    out += CONDITION[np.maximum(catalog.condition[p], 0)]
    return out


def choice_score(shoppers: Shoppers, catalog: Catalog, s: Arr, p: Arr) -> F:
    """What shoppers pick by (with Gumbel noise): their taste plus the crowd's appeal."""
    p = np.asarray(p)
    out: F = log_fit(shoppers, catalog, s, p) + POPULARITY * np.log(catalog.popularity[p])
    return out


def p_click(fit: Arr) -> F:
    """Probability of clicking a recommended product (or a product block in a message)."""
    return _sigmoid(-2.5 + 0.9 * np.asarray(fit))


def p_purchase(fit: Arr) -> F:
    """Probability of buying a product after clicking it."""
    return _sigmoid(-2.0 + 1.1 * np.asarray(fit))


def has_consent(shoppers: Shoppers, s: Arr, channel: Arr, day: Arr = np.inf) -> B:
    """Whether shopper ``s`` has consented to ``channel`` (index into CHANNELS) on ``day``.

    ``day`` counts days from the simulation start; the default is the end of the history.
    """
    s, channel = np.asarray(s), np.asarray(channel)
    out: B = shoppers.consent[s, channel] & (shoppers.withdraw_day[s, channel] > day)
    return out


def local_hours(shoppers: Shoppers, s: Arr, at_us: Arr) -> F:
    """The shopper's local hour (0-24, fractional) at UTC instants ``at_us``."""
    from concierge.sim.timing import HOUR_US, OffsetGrid

    s, at = np.asarray(s), np.asarray(at_us, dtype=np.int64)
    grid = OffsetGrid(ZONE_NAMES, int(at.min()), int(at.max()))
    local = at + grid.offset_us(shoppers.zone[s], at)
    out: F = (local % (24 * HOUR_US)) / HOUR_US
    return out


def p_open(
    shoppers: Shoppers,
    s: Arr,
    channel: Arr,
    local_hour: Arr,
    sent_last_week: Arr,
    *,
    day: Arr = np.inf,
) -> F:
    """Probability of opening one more message on ``channel`` sent at ``local_hour``.

    ``sent_last_week`` counts the messages they got in the 7 days before this one. Without
    consent on that channel the probability is 0: such a message must never have been sent.
    """
    s, channel = np.asarray(s), np.asarray(channel)
    hour = np.asarray(local_hour, dtype=np.float64)
    resp = shoppers.responsiveness[s]
    base = np.log(resp / (1.0 - resp)) + OPEN_SHIFT[channel]
    w = shoppers.channel_w[s]
    preference = np.log(shoppers.channel_w[s, channel] / w.max(axis=-1) + 0.05)
    gap = np.abs(hour - shoppers.active_hour[s])
    gap = np.minimum(gap, 24.0 - gap)
    timing = 0.6 * np.exp(-((gap / 2.5) ** 2)) - np.where((hour < 7) | (hour >= 23), 2.0, 0.0)
    tired = -0.8 * _overload(shoppers, s, sent_last_week)
    out: F = np.where(
        has_consent(shoppers, s, channel, day), _sigmoid(base + preference + timing + tired), 0.0
    )
    return out


def p_message_click(fit: Arr) -> F:
    """Probability of clicking through an opened message about a product of this fit."""
    return _sigmoid(-1.5 + 0.9 * np.asarray(fit))


def p_unsubscribe(shoppers: Shoppers, s: Arr, sent_last_week: Arr, channel: Arr | None = None) -> F:
    """Probability that one more message makes them unsubscribe: it climbs past their tolerance."""
    s = np.asarray(s)
    base = UNSUBSCRIBE_BASE[0] if channel is None else UNSUBSCRIBE_BASE[np.asarray(channel)]
    over = _overload(shoppers, s, sent_last_week)
    out: F = np.clip(base + 0.04 * over + 0.03 * over**2, 0.0, 0.9)
    return out


def _overload(shoppers: Shoppers, s: I, sent_last_week: Arr) -> F:
    """How far one more message goes past their weekly tolerance (0 within it)."""
    sent = np.asarray(sent_last_week, dtype=np.float64)
    out: F = np.maximum(0.0, (sent + 1.0) / shoppers.contact_per_week[s] - 1.0)
    return out


@dataclass(frozen=True)
class MessageResponse:
    """Per message: the probabilities of each reaction, and whether it happened (a draw)."""

    p_open: F
    p_click: F
    p_purchase: F
    p_unsubscribe: F
    opened: B
    clicked: B
    purchased: B
    unsubscribed: B


def respond_to_message(
    shoppers: Shoppers,
    catalog: Catalog,
    rng: np.random.Generator,
    *,
    s: Arr,
    channel: Arr,
    local_hour: Arr,
    sent_last_week: Arr,
    product: Arr | None = None,
    day: Arr = np.inf,
) -> MessageResponse:
    """Simulate reactions to messages (``product``: the item featured, if any).

    Channel indices follow :data:`concierge.sim.world.CHANNELS`. Clicks and purchases follow from
    an open; an unsubscribe can follow any delivered message.
    """
    s = np.asarray(s)
    shape = np.broadcast_shapes(s.shape, np.shape(channel), np.shape(local_hour))
    po = np.broadcast_to(p_open(shoppers, s, channel, local_hour, sent_last_week, day=day), shape)
    if product is None:
        fit = np.zeros(shape)
    else:
        fit = np.broadcast_to(log_fit(shoppers, catalog, s, product), shape)
    pc = p_message_click(fit)
    pp = p_purchase(fit)
    pu = np.broadcast_to(p_unsubscribe(shoppers, s, sent_last_week, channel), shape)
    consent = np.broadcast_to(has_consent(shoppers, s, channel, day), shape)
    opened = rng.random(shape) < po
    clicked = opened & (rng.random(shape) < pc)
    purchased = clicked & (rng.random(shape) < pp)
    unsubscribed = consent & (rng.random(shape) < pu)
    return MessageResponse(po, pc, pp, pu, opened, clicked, purchased, unsubscribed)


__all__ = [
    "CHANNELS",
    "MessageResponse",
    "choice_score",
    "has_consent",
    "local_hours",
    "log_fit",
    "p_click",
    "p_message_click",
    "p_open",
    "p_purchase",
    "p_unsubscribe",
    "respond_to_message",
    "wearable",
]
