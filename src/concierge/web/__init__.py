"""The marketer dashboard: server-rendered pages over the facade, mounted by the API at
``/dashboard``. See :mod:`concierge.web.routes`."""
