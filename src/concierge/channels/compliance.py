"""Compliance headers and links, built in one place for every email.

* ``List-Unsubscribe`` with an HTTPS one-click link and a ``mailto:`` fallback, and
  ``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (RFC 8058: the mailbox provider POSTs
  that body to the HTTPS link; the link must unsubscribe on POST without further interaction).
* ``Message-ID`` derived from the outbox key, so the idempotency key of a send is visible to
  the provider and to the recipient's mail system.
"""

from __future__ import annotations


def message_id(key: str, domain: str) -> str:
    return f"<{key}@{domain}>"


def unsubscribe_headers(*, https_url: str, mailto: str | None) -> dict[str, str]:
    """The RFC 2369 / RFC 8058 pair. ``https_url`` must accept a POST of
    ``List-Unsubscribe=One-Click`` and unsubscribe at once."""
    if not https_url.startswith(("https://", "http://")):
        raise ValueError("the one-click unsubscribe link must be an http(s) URL")
    links = [f"<{https_url}>"]
    if mailto:
        links.append(f"<mailto:{mailto}>")
    return {
        "List-Unsubscribe": ", ".join(links),
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
