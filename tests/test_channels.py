"""Channels against real servers on loopback: SMTP (aiosmtpd) and an HTTP provider."""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl

from concierge.channels import audiences_export as ads
from concierge.channels.base import Channel, Message, TwoPhaseChannel
from concierge.channels.compliance import unsubscribe_headers
from concierge.channels.http_provider import HttpProviderConfig
from concierge.channels.push_http import PushChannel
from concierge.channels.sms_http import SmsChannel
from concierge.channels.smtp import SmtpChannel, SmtpConfig
from concierge.channels.tracking import Signer, track_html
from delivery_servers import free_port, http_provider, smtp_server


def _mail(i: int = 0, **kw: object) -> Message:
    base: dict[str, object] = {
        "key": f"k{i:04d}",
        "channel": "email",
        "person_id": f"p{i}",
        "campaign_id": "c",
        "to": f"p{i}@example.com",
        "subject": f"Hello {i} · ünïcode",
        "text": f"Plain {i}\n.a line starting with a dot\n",
        "html": f"<p>Rich {i}</p>",
        "headers": unsubscribe_headers(https_url="https://t.example/u/x", mailto="u@t.example"),
    }
    base.update(kw)
    return Message(**base)  # type: ignore[arg-type]


def test_email_has_both_parts_compliance_headers_and_key_as_message_id() -> None:
    with smtp_server() as (box, port):
        ch = SmtpChannel(SmtpConfig(port=port, sender="shop@example.com", sender_name="Shop"))
        assert isinstance(ch, Channel) and isinstance(ch, TwoPhaseChannel)
        result = ch.send(_mail(1))
        ch.close()
    assert result.status == "sent" and "queued" in (result.provider_id or "")
    [msg] = box.messages
    assert msg["Message-ID"] == "<k0001@concierge.local>"
    assert msg["From"] == "Shop <shop@example.com>"
    assert msg["Subject"] == "Hello 1 · ünïcode"
    assert msg["List-Unsubscribe"] == "<https://t.example/u/x>, <mailto:u@t.example>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    plain = msg.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert plain == "Plain 1\n.a line starting with a dot\n"  # dot-stuffing undone
    assert msg.get_body(("html",)).get_content().strip() == "<p>Rich 1</p>"
    assert box.envelopes == [("shop@example.com", ["p1@example.com"])]


def test_connections_are_reused_across_messages() -> None:
    with smtp_server() as (box, port):
        ch = SmtpChannel(SmtpConfig(port=port, connections=4))
        for start in range(0, 40, 4):
            pre = ch.prepare([_mail(i) for i in range(start, start + 4)])
            assert pre == [None] * 4
            assert [r.status for r in ch.finish()] == ["sent"] * 4
        ch.close()
        assert len(box.messages) == 40
        assert box.connections == 4


def test_aborted_prepare_leaves_nothing_at_the_server() -> None:
    with smtp_server() as (box, port):
        ch = SmtpChannel(SmtpConfig(port=port, connections=3))
        assert ch.prepare([_mail(i) for i in range(3)]) == [None] * 3
        ch.abort()
        assert ch.send(_mail(9)).status == "sent"
        ch.close()
    assert box.ids() == ["<k0009@concierge.local>"]


def test_smtp_replies_are_classified() -> None:
    with smtp_server() as (box, port):
        box.refuse["gone@example.com"] = "550 5.1.1 user unknown"
        box.refuse["full@example.com"] = "452 4.2.2 mailbox full"
        box.refuse["bad@example.com"] = "554 5.7.1 policy"
        ch = SmtpChannel(SmtpConfig(port=port, connections=4))
        pre = ch.prepare(
            [
                _mail(0, to="gone@example.com"),
                _mail(1, to="full@example.com"),
                _mail(2, to="bad@example.com"),
                _mail(3),
            ]
        )
        assert [None if r is None else r.status for r in pre] == [
            "suppressed",
            "retryable",
            "failed",
            None,
        ]
        assert [r.status for r in ch.finish()] == ["sent"]
        assert ch.send(_mail(4)).status == "sent"  # the refused connections were reset, usable
        ch.close()
    assert len(box.messages) == 2


def test_server_down_is_retryable_not_raised() -> None:
    ch = SmtpChannel(SmtpConfig(port=free_port(), timeout=2))
    result = ch.send(_mail())
    assert result.status == "retryable" and "connect" in (result.error or "")


def test_sms_retries_transient_failures_with_backoff_and_shows_the_key() -> None:
    waits: list[float] = []
    with http_provider(fail_first=2) as (prov, url):
        ch = SmsChannel(
            HttpProviderConfig(url, token="s3cret", retries=3, backoff_s=0.5), sleep=waits.append
        )
        result = ch.send(
            Message(
                key="key-1",
                channel="sms",
                person_id="p",
                campaign_id="c",
                to="+33612345678",
                text="Your size is back",
            )
        )
        ch.close()
    assert result.status == "sent" and result.provider_id == "msg-1"
    assert waits == [0.5, 1.0]
    assert prov.posts == [{"to": "+33612345678", "text": "Your size is back", "reference": "key-1"}]
    assert prov.keys == ["key-1"]


def test_http_provider_gives_up_as_retryable_and_4xx_as_failed() -> None:
    msg = Message(
        key="k", channel="sms", person_id="p", campaign_id="c", to="+33612345678", text="x"
    )
    with http_provider(fail_first=10) as (_prov, url):
        ch = SmsChannel(HttpProviderConfig(url, retries=1, backoff_s=0), sleep=lambda _s: None)
        assert ch.send(msg).status == "retryable"
    with http_provider(fail_first=10, fail_status=400) as (_prov, url):
        ch = SmsChannel(HttpProviderConfig(url, retries=3, backoff_s=0), sleep=lambda _s: None)
        assert ch.send(msg).status == "failed"
    down = SmsChannel(HttpProviderConfig(f"http://127.0.0.1:{free_port()}/x", retries=0))
    assert down.send(msg).status == "retryable"
    assert (
        down.send(
            Message(key="k", channel="sms", person_id="p", campaign_id="c", to=None, text="x")
        ).status
        == "failed"
    )


def test_push_posts_to_the_user_id_with_data() -> None:
    with http_provider() as (prov, url):
        ch = PushChannel(HttpProviderConfig(url))
        r = ch.send(
            Message(
                key="k2",
                channel="push",
                person_id="ann",
                campaign_id="c",
                to="ann",
                subject="Back in stock",
                text="Your size 42",
                data={"p": "p1"},
            )
        )
        ch.close()
    assert r.status == "sent"
    assert prov.posts[0] == {
        "external_user_id": "ann",
        "title": "Back in stock",
        "body": "Your size 42",
        "data": {"p": "p1"},
        "reference": "k2",
    }


def test_tracking_tokens_are_signed_and_rewrite_links() -> None:
    s = Signer("secret")
    ident = {"k": "key", "p": "ann", "c": "cart", "ch": "email"}
    html, links = track_html(
        '<a href="https://shop.example/p?a=1&amp;b=2">x</a></body>',
        signer=s,
        base_url="https://api.example",
        ident=ident,
    )
    assert links == ["https://shop.example/p?a=1&b=2"]
    token = html.split("/t/c/")[1].split('"')[0]
    assert s.verify("c", token) == {**ident, "u": "https://shop.example/p?a=1&b=2"}
    assert s.verify("o", token) is None  # a click token is no pixel token
    assert Signer("other").verify("c", token) is None
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert s.verify("c", forged) is None
    assert "/t/o/" in html and html.endswith("</body>")


def test_ad_audience_files_are_normalised_hashed_single_column(tmp_path: Path) -> None:
    people = [
        (" Jane.Doe@Gmail.com ", "+33 6 12 34 56 78"),
        ("jane.doe@gmail.com", None),
        ("not-an-email", "0612"),
        (None, "0033612345678"),
        ("Bob@Example.COM", None),
    ]
    g = ads.export(people, tmp_path, name="vip", platform="google")
    assert g.counts == {"emails": 2, "phones": 1} and g.rejected == {"email": 1, "phone": 1}
    emails = pl.read_csv(g.files["emails"])
    assert emails.columns == ["Email"]
    want = sorted(
        hashlib.sha256(e.encode()).hexdigest() for e in ("janedoe@gmail.com", "bob@example.com")
    )
    assert emails.get_column("Email").to_list() == want
    phones = pl.read_csv(g.files["phones"], schema={"Phone": pl.String})
    assert phones.get_column("Phone").to_list() == [hashlib.sha256(b"+33612345678").hexdigest()]
    m = ads.export(people, tmp_path / "meta", name="vip", platform="meta")
    meta_emails = pl.read_csv(m.files["emails"]).get_column("email").to_list()
    assert hashlib.sha256(b"jane.doe@gmail.com").hexdigest() in meta_emails
    meta_phones = pl.read_csv(m.files["phones"], schema={"phone": pl.String})
    assert meta_phones.get_column("phone").to_list() == [hashlib.sha256(b"33612345678").hexdigest()]
    text = Path(g.files["emails"]).read_text()
    assert "@" not in text
