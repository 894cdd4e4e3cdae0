"""How a simulated shopper responds: the one place their hidden tastes turn into probabilities.

The simulator uses :func:`log_fit` to choose what shoppers view and buy; later steps (campaigns,
recommendation evaluation) use the same functions to make shoppers respond to a recommendation or
a message according to how well it fits them, so offline scores are measured against the same
hidden truth that produced the history. Every function is vectorized over arrays of
(shopper, product) pairs or (shopper, message) rows.
"""

from __future__ import annotations

import numpy as np

from concierge.sim.world import CATEGORIES, DEPARTMENTS, Catalog, F, I, Shoppers

OTHER_DEPARTMENT = -3.0  # log-penalty for the other department (gifts still happen)


def _sigmoid(x: F) -> F:
    out: F = 1.0 / (1.0 + np.exp(-x))
    return out


def log_fit(shoppers: Shoppers, catalog: Catalog, s: I, p: I) -> F:
    """Log of how well product ``p[i]`` fits shopper ``s[i]``'s hidden taste (0 = average)."""
    n_brands, n_colours = shoppers.brand_w.shape[1], shoppers.colour_w.shape[1]
    brand = np.log(shoppers.brand_w[s, catalog.brand[p]] * n_brands + 1e-3)
    colour = 0.7 * np.log(shoppers.colour_w[s, catalog.colour[p]] * n_colours + 1e-2)
    base = np.array([c.base_price for c in CATEGORIES])[catalog.category[p]]
    comfortable = base * shoppers.price_level[s]
    price = -0.5 * (np.log(catalog.price[p] / comfortable) / 0.35) ** 2
    dept_p = catalog.dept_code[p]
    same = (dept_p == DEPARTMENTS.index("unisex")) | (dept_p == shoppers.dept_code[s])
    dept = np.where(same, 0.0, OTHER_DEPARTMENT)
    prod = catalog.attr_codes[p]  # (pairs, attributes)
    pref = shoppers.attr_pref_codes[s]
    attrs = np.where(prod < 0, 0.0, np.where(prod == pref, 0.4, -0.4)).sum(axis=1)
    out: F = brand + colour + price + dept + attrs
    return out


def p_click(log_fit_: F) -> F:
    """Probability of clicking a recommended product or a product block in a message."""
    return _sigmoid(-2.5 + 0.9 * log_fit_)


def p_purchase(log_fit_: F) -> F:
    """Probability of buying a product they were shown (after a click)."""
    return _sigmoid(-3.0 + 1.1 * log_fit_)


def p_open(shoppers: Shoppers, s: I, channel: I, local_hour: F, sent_last_week: F) -> F:
    """Probability of opening a message: consent, channel preference, hour and fatigue.

    ``channel`` indexes ``concierge.sim.world.CHANNELS``; without consent on that channel a
    message is never opened (it must never have been sent).
    """
    consent = shoppers.consent[s, channel]
    preferred = np.where(shoppers.preferred_code[s] == channel, 0.6, 0.0)
    awake = np.where((local_hour >= 8) & (local_hour <= 21), 0.0, -1.5)
    tired = -0.8 * np.maximum(0.0, sent_last_week / shoppers.contact_per_week[s] - 1.0)
    base = np.log(shoppers.responsiveness[s] / (1 - shoppers.responsiveness[s]))
    out: F = np.where(consent, _sigmoid(base + preferred + awake + tired), 0.0)
    return out


def p_unsubscribe(shoppers: Shoppers, s: I, sent_last_week: F) -> F:
    """Probability that one more message makes them unsubscribe: rises past their tolerance."""
    over = np.maximum(0.0, sent_last_week / shoppers.contact_per_week[s] - 1.0)
    out: F = np.clip(0.002 + 0.05 * over**2, 0.0, 0.9)
    return out
