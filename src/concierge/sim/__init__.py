"""A deterministic shopper simulator: a seeded marketplace whose hidden truth is kept apart.

* :mod:`concierge.sim.world` - :class:`~concierge.sim.world.SimConfig`, the store's vocabulary,
  the catalog and the shoppers with their hidden tastes (the model of a shopper is described
  there).
* :mod:`concierge.sim.behaviour` - what they do over the period: visits, views, searches, carts,
  purchases by personal cadence, returns, logins, consents, answers, resale and sales.
* :mod:`concierge.sim.payloads` - the EVENTS/ITEMS frames ingest takes, with canonical payloads.
* :mod:`concierge.sim.response` - how a shopper responds to a product or a message, from the
  hidden truth (the same functions drive the simulation; later steps reuse them).
* :mod:`concierge.sim.truth` - the truth file, and :func:`~concierge.sim.truth.load_truth`.
* :mod:`concierge.sim.run` - :func:`~concierge.sim.run.simulate`, which ties them together.

``concierge simulate`` (and the default demo store) writes a simulation through the ordinary
ingest path; see :func:`concierge.demo.load_simulation`.
"""
