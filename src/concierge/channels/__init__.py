"""Delivery adapters: email over SMTP, SMS and push over HTTP providers, on-site messages, ad
audiences. Channels report, they do not raise (:class:`~concierge.channels.base.DeliveryResult`);
they know nothing of models or campaigns."""
