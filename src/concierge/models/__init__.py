"""Everything learned: crowd, collaborative, lifetime, churn, segments, anomalies.

Each model follows the estimator shape of :mod:`concierge.models.base` and is kept as a versioned
artifact by :mod:`concierge.models.registry`; :mod:`concierge.models.training` runs them all.
"""
