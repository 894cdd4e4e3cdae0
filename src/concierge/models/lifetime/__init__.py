"""Lifetime models: BG/NBD and Pareto/NBD (repeat purchases), Gamma-Gamma (spend), CLV, churn.

``summary`` builds RFM summaries from the log; ``bgnbd``, ``pareto_nbd`` and ``gamma_gamma`` are
the estimators; ``clv`` composes them with :mod:`concierge.models.churn` into the ``lifetime``
model that ``concierge train`` stores; ``evaluate`` is ``concierge evaluate predictions``.
"""
