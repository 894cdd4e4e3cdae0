"""``concierge worker``: claims due sends, applies the contact policy, renders, delivers, once.

One tick:

1. apply every acknowledged event (so a consent withdrawn or an unsubscribe acknowledged before
   this tick counts — even one second earlier — and triggers fire);
2. on SQLite take the single-writer lease (one worker at a time); on PostgreSQL claim with
   ``FOR UPDATE SKIP LOCKED`` (any number of workers);
3. turn new catalog events into back-in-stock / price-drop occasions;
4. claim due rows; order them by priority and expected value (arbitration: the first to pass
   the policy wins a capped slot, the others are recorded *suppressed* with the cap and the
   winners named);
5. per chunk, in one transaction (per-person advisory locks on PostgreSQL): check exit
   conditions, the policy at send time, render (held back when it cannot be filled), and
   *reserve* the outbox row (``sending``) with its final content;
6. deliver (SMTP in two phases, see :mod:`concierge.channels.smtp`), then record each result;
   transient failures go back to the due queue with exponential backoff, the same key and the
   same content;
7. report ``delivered`` events through ingest (event id derived from the outbox key, so never
   twice).

A row claimed by a worker that died is claimed again when its lease runs out; its outbox row
tells what happened: ``sending`` (not complete at the provider: resent, same key),
``committed`` (SMTP: counted as sent, never resent), anything final (nothing to do). Consent and
suppression are checked again before any resend. Every wait is an injected clock reading.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, bindparam, func, or_, select, update

from concierge.campaigns import due_queue, service, triggers
from concierge.campaigns.definitions import Campaign, ContactPolicy, JourneyStep
from concierge.campaigns.due_queue import Due
from concierge.campaigns.policy import Sent, address_of, check, consented
from concierge.campaigns.templates import Held
from concierge.channels import outbox
from concierge.channels.base import Channel, DeliveryResult, Message, TwoPhaseChannel
from concierge.channels.compliance import unsubscribe_headers
from concierge.channels.tracking import Signer, track_html
from concierge.clock import from_us
from concierge.errors import NotFoundError
from concierge.profiles.doc import DAY_US
from concierge.store import tables as t
from concierge.store.engine import among

if TYPE_CHECKING:
    from concierge.facade import Concierge

log = logging.getLogger(__name__)
SECOND_US = 1_000_000


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass
class WorkerConfig:
    owner: str = field(default_factory=_owner)
    claim: int = 200  # due rows per tick (their work must fit in the lease)
    chunk: int = 100  # messages decided per transaction (SMTP sends them 'connections' at a time)
    # broadcast and lifecycle sends, decided in larger transactions: a chunk's fixed cost
    # (its queries for recent sends, suppressions and existing outbox rows, and the commit) is
    # about 17 ms on SQLite, so 100 a chunk took 2.0 s per 5,000 people and 500 a chunk 1.1 s
    # (measured, bench_campaigns store); triggered sends keep small chunks so a transaction
    # holding SQLite's writer lock stays short while events arrive
    bulk_chunk: int = 500
    lease_s: float = 120.0  # a claimed row returns to the queue after this
    max_attempts: int = 5
    backoff_s: float = 60.0  # first retry after this; doubles per attempt
    lease_name: str = "worker"
    # bring the profiles up to the log before each tick; off for the worker inside the API
    # process, whose group committer already does (two appliers in one process only raced for
    # the writers' lock and threw each other's rounds away: measured in bench_http_ingest)
    apply_pending: bool = True


@dataclass
class TickReport:
    claimed: int = 0
    sent: int = 0
    suppressed: int = 0
    held: int = 0
    exited: int = 0
    deferred: int = 0
    retried: int = 0
    failed: int = 0
    resent: int = 0  # reserved by a worker that died before the provider completed them
    reconciled: int = 0  # committed by a worker that died after: counted as sent
    lease: bool = True
    claim_s: float = 0.0  # the lease, catalog occasions and claiming due rows
    claim_cpu_s: float = 0.0
    decide_s: float = 0.0  # policy, rendering and outbox writes
    decide_cpu_s: float = 0.0  # the CPU time of this thread in them (load does not inflate it)
    deliver_s: float = 0.0  # the channels, and recording their results

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for k in ("claim_s", "claim_cpu_s", "decide_s", "decide_cpu_s", "deliver_s"):
            out[k] = round(getattr(self, k), 4)
        return out

    def add(self, other: TickReport) -> None:
        for k, v in asdict(other).items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                setattr(self, k, getattr(self, k) + v)


@dataclass
class _Batch:
    """What one chunk transaction writes at its end: outbox rows and due-row outcomes."""

    records: list[dict[str, Any]] = field(default_factory=list)
    finishes: dict[str, list[int]] = field(default_factory=dict)
    enqueue: list[dict[str, Any]] = field(default_factory=list)  # next journey steps

    def finish(self, due_id: int, outcome: str) -> None:
        self.finishes.setdefault(outcome, []).append(due_id)

    def flush(self, conn: Connection, store: Any, now_us: int) -> None:
        outbox.record_many(conn, self.records)
        for outcome, ids in self.finishes.items():
            due_queue.finish(conn, ids, outcome, now_us=now_us)
        due_queue.enqueue(conn, store, self.enqueue, now_us=now_us)


@dataclass
class _Send:
    due: Due
    message: Message
    resend: bool
    then: dict[str, Any] | None = None  # the next journey step's due row, queued after


class Worker:
    """Delivers due sends of one store through the given channels (by channel name)."""

    def __init__(
        self,
        concierge: Concierge,
        channels: Mapping[str, Channel],
        *,
        config: WorkerConfig | None = None,
        engine: service.Engine | None = None,
    ) -> None:
        self.cg = concierge
        self.store = concierge.store
        self.channels = dict(channels)
        self.config = config or WorkerConfig()
        self.engine = engine or concierge.campaign_engine()
        self._campaigns: dict[tuple[str, int], Campaign] = {}
        self._delivered: list[dict[str, Any]] = []
        self._memo = _Memo()

    def now_us(self) -> int:
        return self.cg._now_us()

    # -- the loop ----------------------------------------------------------------------------

    def run(
        self,
        *,
        stop: threading.Event | None = None,
        idle_s: float = 1.0,
        max_ticks: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> TickReport:
        total = TickReport()
        n = 0
        while not (stop is not None and stop.is_set()):
            report = self.tick()
            total.add(report)
            n += 1
            if max_ticks is not None and n >= max_ticks:
                break
            if report.claimed == 0:
                sleep(idle_s)
        return total

    def drain(self, *, max_ticks: int = 1_000) -> TickReport:
        """Tick until nothing is due now (tests, the demo, ``concierge worker --once``)."""
        total = TickReport()
        for _ in range(max_ticks):
            report = self.tick()
            total.add(report)
            if report.claimed == 0 or not report.lease:
                break
        return total

    def close(self) -> None:
        for ch in self.channels.values():
            ch.close()
        with self.store.write() as conn:
            due_queue.release_lease(conn, name=self.config.lease_name, owner=self.config.owner)

    def tick(self) -> TickReport:
        report = TickReport()
        if self.config.apply_pending:
            self.cg.apply_pending()
        now = self.now_us()
        cfg = self.config
        started, started_cpu = time.perf_counter(), time.thread_time()
        with self.store.write() as conn:
            if self.store.backend == "sqlite" and not due_queue.hold_lease(
                conn,
                self.store,
                name=cfg.lease_name,
                owner=cfg.owner,
                now_us=now,
                ttl_us=int(cfg.lease_s * SECOND_US),
            ):
                report.lease = False
                return report
            live = [c for c, _v in service.live(conn, "triggered")]
            triggers.catalog_occasions(conn, self.store, live, now_us=now)
            claimed = due_queue.claim(
                conn,
                self.store,
                owner=cfg.owner,
                now_us=now,
                limit=cfg.claim,
                lease_us=int(cfg.lease_s * SECOND_US),
            )
            policy = service.policy(conn, self.store)
            signer = service.signer(conn, self.store)
        report.claim_s += time.perf_counter() - started
        report.claim_cpu_s += time.thread_time() - started_cpu
        report.claimed = len(claimed)
        if not claimed:
            return report
        with self.store.read() as conn:
            camps = {cid: self._campaign(conn, cid) for cid in {d.campaign_id for d in claimed}}

        # arbitration order: priority, then expected value, then the oldest due
        def rank(d: Due) -> tuple[int, float, int, int]:
            camp = camps[d.campaign_id]
            if camp is None:
                return (0, 0.0, d.due_us, d.due_id)
            return (-camp[0].priority, -camp[0].expected_value, d.due_us, d.due_id)

        claimed.sort(key=rank)
        chunk: list[Due] = []
        chunk_channel: tuple[str, bool] | None = None
        winners: dict[str, list[str]] = {}  # person -> campaigns sent this tick
        for d in claimed:
            camp = camps[d.campaign_id]
            bulk = camp is not None and camp[0].kind != "triggered"
            ch = (camp[0].channel if camp else "none", bulk)
            limit = self._chunk_size(*ch)
            if chunk and (ch != chunk_channel or len(chunk) >= limit):
                self._process(chunk, camps, policy, signer, winners, report)
                chunk = []
            chunk.append(d)
            chunk_channel = ch
        if chunk:
            self._process(chunk, camps, policy, signer, winners, report)
        self._report_deliveries()
        return report

    def _chunk_size(self, channel: str, bulk: bool) -> int:
        del channel
        return self.config.bulk_chunk if bulk else self.config.chunk

    def _campaign(self, conn: Connection, campaign_id: str) -> tuple[Campaign, int, str] | None:
        row = conn.execute(
            select(t.campaigns.c.version, t.campaigns.c.status).where(
                t.campaigns.c.campaign_id == campaign_id
            )
        ).first()
        if row is None:
            return None
        version, status = int(row[0]), str(row[1])
        camp = self._campaigns.get((campaign_id, version))
        if camp is None:
            camp, _ = service.get(conn, campaign_id, version)
            self._campaigns[(campaign_id, version)] = camp
        return camp, version, status

    def _pinned(
        self, conn: Connection, camp: tuple[Campaign, int, str] | None, d: Due
    ) -> tuple[Campaign, int, str] | None:
        """A journey as the person entered it: the version their due row names
        (``journey_version`` in its context, set on entry), with the campaign's *current*
        status (pausing a campaign stops everyone in it, whatever their version). A row
        without one (queued before versions were pinned) follows the current version and
        pins it from there on."""
        if camp is None or camp[0].journey is None:
            return camp
        version = d.context.get("journey_version")
        if not isinstance(version, int) or version == camp[1]:
            return camp
        old = self._campaigns.get((d.campaign_id, version))
        if old is None:
            try:
                old, _ = service.get(conn, d.campaign_id, version)
            except NotFoundError:
                return camp
            self._campaigns[(d.campaign_id, version)] = old
        if old.journey is None:  # that version had no journey: the current one decides
            return camp
        return old, version, camp[2]

    # -- one chunk ---------------------------------------------------------------------------

    def _process(
        self,
        chunk: Sequence[Due],
        camps: Mapping[str, tuple[Campaign, int, str] | None],
        policy: ContactPolicy,
        signer: Signer,
        winners: dict[str, list[str]],
        report: TickReport,
    ) -> None:
        now = self.now_us()
        sends: list[_Send] = []
        started, started_cpu = time.perf_counter(), time.thread_time()
        with self.store.write() as conn:
            persons = sorted({d.person_id for d in chunk})
            if self.store.backend == "postgresql":
                # one statement, taking the locks in the sorted order of the array (a function
                # scan yields its rows in order): no deadlock between workers, and one round
                # trip a chunk instead of one a person
                conn.exec_driver_sql(
                    "SELECT count(pg_advisory_xact_lock(hashtext(p))) "
                    "FROM unnest(CAST(%(ps)s AS text[])) AS u(p)",
                    {"ps": persons},
                )
            docs = self.engine.docs(conn, persons)
            recent = self._recent(conn, persons, now)
            pinned = [self._pinned(conn, camps.get(d.campaign_id), d) for d in chunk]
            keys = [
                outbox.outbox_key(d.campaign_id, _step_id(camp, d), d.person_id, d.occasion)
                for d, camp in zip(chunk, pinned, strict=True)
            ]
            existing = outbox.get_many(conn, keys)
            suppressed = self._suppressions(conn, chunk, camps, docs)
            batch = _Batch()
            for d, key, camp in zip(chunk, keys, pinned, strict=True):
                send = self._decide(
                    conn,
                    d,
                    key,
                    camp,
                    docs,
                    existing.get(key),
                    suppressed,
                    recent,
                    winners,
                    policy,
                    signer,
                    batch,
                    now,
                    report,
                )
                if send is not None:
                    sends.append(send)
            batch.flush(conn, self.store, now)
        decided = time.perf_counter()
        report.decide_s += decided - started
        report.decide_cpu_s += time.thread_time() - started_cpu
        if not sends:
            return
        by_channel: dict[str, list[_Send]] = {}
        for snd in sends:
            by_channel.setdefault(snd.message.channel, []).append(snd)
        done: list[_Send] = []
        results: list[DeliveryResult] = []
        for channel_name, group in by_channel.items():
            channel = self.channels.get(channel_name)
            done += group
            if channel is None:
                results += [
                    DeliveryResult("retryable", error=f"no {channel_name} channel configured")
                ] * len(group)
            elif isinstance(channel, TwoPhaseChannel):
                size = max(1, int(getattr(channel, "batch_size", 1)))
                for i in range(0, len(group), size):
                    results += self._two_phase(channel, group[i : i + size])
            else:
                results += [channel.send(snd.message) for snd in group]
        self._record(done, results, report)
        report.deliver_s += time.perf_counter() - decided

    def _two_phase(self, channel: TwoPhaseChannel, sends: list[_Send]) -> list[DeliveryResult]:
        pre = channel.prepare([s.message for s in sends])
        ready = [s.message.key for s, r in zip(sends, pre, strict=True) if r is None]
        try:
            if ready:
                with self.store.write() as conn:
                    outbox.mark_many(conn, ready, "committed", now_us=self.now_us())
        except Exception:
            channel.abort()  # nothing marked: the server discards the prepared messages
            raise
        done = iter(channel.finish() if ready else [])
        return [r if r is not None else next(done) for r in pre]

    def _suppressions(
        self,
        conn: Connection,
        chunk: Sequence[Due],
        camps: Mapping[str, tuple[Campaign, int, str] | None],
        docs: Mapping[str, dict[str, Any]],
    ) -> dict[tuple[str, str], str]:
        """(channel, address or person:<id>) -> reason, for the people of the chunk."""
        wanted: set[tuple[str, str]] = set()
        for d in chunk:
            camp = camps.get(d.campaign_id)
            if camp is None:
                continue
            ch = camp[0].channel
            wanted.add((ch, f"person:{d.person_id}"))
            doc = docs.get(d.person_id)
            if doc is not None:
                addr = address_of(ch, doc, d.person_id)
                if addr:
                    wanted.add((ch, addr))
        s = t.suppressions
        out: dict[tuple[str, str], str] = {}
        addresses = sorted({a for _c, a in wanted})
        channels = sorted({c for c, _a in wanted})
        for clause in among(conn, s.c.address, addresses):
            # the channel too, so that the look-up uses the (channel, address) key
            for ch, addr, reason in conn.execute(
                select(s.c.channel, s.c.address, s.c.reason).where(
                    s.c.channel.in_(channels), clause
                )
            ):
                if (ch, addr) in wanted:
                    out[(ch, addr)] = str(reason)
        return out

    def _recent(self, conn: Connection, persons: list[str], now: int) -> dict[str, list[Sent]]:
        o = t.outbox
        out: dict[str, list[Sent]] = {p: [] for p in persons}
        since = now - 31 * DAY_US
        counted = frozenset(outbox.COUNTED)
        for clause in among(conn, o.c.person_id, persons):
            # the status is filtered here, not in SQL: with it in the WHERE clause SQLite's
            # planner chose the status index and read every sent row of the outbox for each
            # chunk (0.5 s a chunk at 200,000 rows: a broadcast's time grew with its square)
            for pid, created, ch, cid, status in conn.execute(
                select(
                    o.c.person_id, o.c.created_us, o.c.channel, o.c.campaign_id, o.c.status
                ).where(clause, o.c.created_us > since)
            ):
                if status in counted:
                    out[pid].append(Sent(int(created), ch, cid))
        return out

    def _suppressed(
        self, conn: Connection, channel: str, person_id: str, address: str | None
    ) -> str | None:
        s = t.suppressions
        keys = [f"person:{person_id}"] + ([address] if address else [])
        row = conn.execute(
            select(s.c.reason).where(s.c.channel == channel, s.c.address.in_(keys)).limit(1)
        ).first()
        return None if row is None else str(row[0])

    def _decide(
        self,
        conn: Connection,
        d: Due,
        key: str,
        camp: tuple[Campaign, int, str] | None,
        docs: Mapping[str, dict[str, Any]],
        existing: dict[str, Any] | None,
        suppressed: Mapping[tuple[str, str], str],
        recent: dict[str, list[Sent]],
        winners: dict[str, list[str]],
        policy: ContactPolicy,
        signer: Signer,
        batch: _Batch,
        now: int,
        report: TickReport,
    ) -> _Send | None:
        if camp is None:
            batch.finish(d.due_id, "campaign_deleted")
            report.exited += 1
            return None
        campaign, version, status = camp
        doc = docs.get(d.person_id)
        then: dict[str, Any] | None = None
        step_id = d.step
        if campaign.journey is not None:
            step = campaign.journey.step(d.step)
            if step is None or status != "live":
                batch.finish(
                    d.due_id, "journey_step_gone" if step is None else f"campaign_{status}"
                )
                report.exited += 1
                return None
            goal = self._exited(conn, d.person_id, campaign.journey.goal, d.trigger_us)
            if goal is not None:
                batch.finish(d.due_id, f"goal:{goal}")
                report.exited += 1
                return None
            if step.type != "send":
                self._journey_step(conn, d, campaign, version, step, doc, batch, now)
                return None
            step_id = step.id
            then = self._next_row(
                d, campaign, step.next, now, step_id, {"journey_version": version}
            )
            campaign = campaign.at_step(step)
        if existing is not None:
            return self._resume(conn, d, campaign, existing, doc, now, report, then, batch)
        if status != "live":
            batch.finish(d.due_id, f"campaign_{status}")
            report.exited += 1
            return None
        if doc is None:
            batch.finish(d.due_id, "no_profile")
            report.exited += 1
            return None
        if campaign.trigger is not None:
            exited = self._exited(conn, d.person_id, campaign.trigger.exits(), d.trigger_us)
            if exited is not None:
                batch.finish(d.due_id, f"exit:{exited}")
                report.exited += 1
                return None
        ch = campaign.channel
        address = address_of(ch, doc, d.person_id)
        decision = check(
            policy,
            campaign,
            person_id=d.person_id,
            doc=doc,
            address=address,
            suppressed=suppressed.get((ch, f"person:{d.person_id}"))
            or (suppressed.get((ch, address)) if address else None),
            recent=recent.get(d.person_id, []),
            now_us=now,
        )
        explain: dict[str, Any] = {
            "campaign": {
                "id": campaign.campaign_id,
                "version": version,
                "kind": campaign.kind,
                "priority": campaign.priority,
                "expected_value": campaign.expected_value,
            },
            "why": _why(campaign, d, self._memo),
            "policy": decision.as_dict(),
            "decided_at": self._memo.iso(now),
        }
        base: dict[str, Any] = {
            "key": key,
            "campaign_id": d.campaign_id,
            "step": step_id,
            "person_id": d.person_id,
            "occasion": d.occasion,
            "channel": ch,
            "now_us": now,
            "address": address,
        }
        if decision.verdict == "defer":
            due_queue.reschedule(
                conn,
                d.due_id,
                at_us=int(decision.at_us or now),
                now_us=now,
                attempt=False,
                outcome="deferred:" + decision.rule,
            )
            report.deferred += 1
            return None
        if decision.verdict == "suppress":
            if decision.rule.startswith("cap") and winners.get(d.person_id):
                explain["arbitration"] = {
                    "lost_to": winners[d.person_id],
                    "reason": "a campaign of higher priority or expected value took the slot",
                }
            batch.records.append({**base, "status": "suppressed", "explain": explain})
            batch.finish(d.due_id, "suppressed:" + decision.rule)
            if then is not None:
                batch.enqueue.append(then)
            report.suppressed += 1
            return None
        person = self.engine.person(d.person_id, doc, d.context)
        ident = {"k": key, "p": d.person_id, "c": d.campaign_id, "ch": ch}
        api = str(self.engine.brand.get("api_url", "")).rstrip("/")
        links = {
            "unsubscribe_url": f"{api}/t/u/{signer.sign('u', ident)}",
            "preferences_url": f"{api}/t/p/{signer.sign('p', ident)}",
        }
        rendered = self.engine.render(campaign, person, links=links)
        if isinstance(rendered, Held):
            explain["held"] = rendered.reasons
            batch.records.append({**base, "status": "held", "explain": explain})
            batch.finish(d.due_id, "held")
            if then is not None:
                batch.enqueue.append(then)
            report.held += 1
            return None
        explain["items"] = {
            name: [{"product_id": i.product_id, "reason": i.reason} for i in items]
            for name, items in rendered.blocks.items()
        }
        explain["blocks"] = rendered.reasons
        html, headers = rendered.html, {}
        if ch == "email":
            if html is not None:
                html, _links = track_html(html, signer=signer, base_url=api, ident=ident)
            headers = unsubscribe_headers(
                https_url=links["unsubscribe_url"],
                mailto=self.engine.brand.get("unsubscribe_mailto"),
            )
        batch.records.append(
            {
                **base,
                "status": "sending",
                "explain": explain,
                "subject": rendered.subject,
                "text": rendered.text,
                "html": html,
                "lease_owner": self.config.owner,
                "lease_until_us": now + int(self.config.lease_s * SECOND_US),
            }
        )
        recent.setdefault(d.person_id, []).append(Sent(now, ch, d.campaign_id))
        winners.setdefault(d.person_id, []).append(d.campaign_id)
        message = Message(
            key=key,
            channel=ch,
            person_id=d.person_id,
            campaign_id=d.campaign_id,
            to=address,
            subject=rendered.subject,
            text=rendered.text,
            html=html,
            headers=headers,
            data={"items": explain["items"]},
        )
        return _Send(d, message, resend=False, then=then)

    def _resume(
        self,
        conn: Connection,
        d: Due,
        campaign: Campaign,
        row: dict[str, Any],
        doc: dict[str, Any] | None,
        now: int,
        report: TickReport,
        then: dict[str, Any] | None,
        batch: _Batch,
    ) -> _Send | None:
        """The outbox already has this key: a retry, or the work of a worker that died."""
        status = row["status"]
        if status in outbox.FINAL or status == "committed":
            if then is not None:  # a journey goes on (queued once: the row is unique)
                batch.enqueue.append(then)
        if status in outbox.FINAL:
            due_queue.finish(conn, [d.due_id], status, now_us=now)
            return None
        if status == "committed":
            outbox.mark(
                conn,
                row["outbox_key"],
                "sent",
                now_us=now,
                error="committed before a crash; counted as sent",
            )
            due_queue.finish(conn, [d.due_id], "sent", now_us=now)
            report.reconciled += 1
            return None
        ch = row["channel"]
        lease_until = row["lease_until_us"] or 0
        if status == "sending" and row["lease_owner"] != self.config.owner and lease_until >= now:
            # another live worker has it in flight: look again when its lease is over
            due_queue.reschedule(
                conn,
                d.due_id,
                at_us=lease_until + 1,
                now_us=now,
                attempt=False,
                outcome="in_flight_elsewhere",
            )
            report.deferred += 1
            return None
        # sending or retry: resend the same content, if consent still allows
        if (
            doc is None
            or not consented(doc, ch)
            or self._suppressed(conn, ch, d.person_id, row["address"])
        ):
            outbox.mark(
                conn,
                row["outbox_key"],
                "suppressed",
                now_us=now,
                error="consent withdrawn or address suppressed before the resend",
            )
            due_queue.finish(conn, [d.due_id], "suppressed:consent", now_us=now)
            report.suppressed += 1
            if then is not None:
                batch.enqueue.append(then)
            return None
        conn.execute(
            update(t.outbox)
            .where(t.outbox.c.outbox_key == row["outbox_key"])
            .values(
                status="sending",
                attempts=t.outbox.c.attempts + 1,
                lease_owner=self.config.owner,
                lease_until_us=now + int(self.config.lease_s * SECOND_US),
                updated_us=now,
            )
        )
        headers: dict[str, str] = {}
        if ch == "email":
            api = str(self.engine.brand.get("api_url", "")).rstrip("/")
            signer = service.signer(conn, self.store)
            ident = {"k": row["outbox_key"], "p": d.person_id, "c": d.campaign_id, "ch": ch}
            headers = unsubscribe_headers(
                https_url=f"{api}/t/u/{signer.sign('u', ident)}",
                mailto=self.engine.brand.get("unsubscribe_mailto"),
            )
        if status == "sending":
            report.resent += 1
        message = Message(
            key=row["outbox_key"],
            channel=ch,
            person_id=d.person_id,
            campaign_id=d.campaign_id,
            to=row["address"],
            subject=row["subject"] or "",
            text=row["body_text"] or "",
            html=row["body_html"],
            headers=headers,
        )
        return _Send(d, message, resend=True, then=then)

    def _next_row(
        self,
        d: Due,
        campaign: Campaign,
        next_id: str | None,
        at_us: int,
        step_id: str,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        if next_id is None:
            return None
        ctx = {**d.context, "path": [*d.context.get("path", []), step_id], **(extra or {})}
        return {
            "campaign_id": campaign.campaign_id,
            "step": next_id,
            "person_id": d.person_id,
            "occasion": d.occasion,
            "due_us": at_us,
            "trigger_us": d.trigger_us,
            "context": ctx,
        }

    def _journey_step(
        self,
        conn: Connection,
        d: Due,
        campaign: Campaign,
        version: int,
        step: JourneyStep,
        doc: dict[str, Any] | None,
        batch: _Batch,
        now: int,
    ) -> None:
        """A wait, branch, split or exit: move the person's position (a new due row, which
        keeps the journey version the person entered with)."""
        nxt: str | None = None
        at, extra = now, {}
        if step.type == "wait":
            nxt, at = step.next, now + int((step.minutes or 0) * 60 * SECOND_US)
        elif step.type == "split":
            bucket = int(
                hashlib.sha256(
                    f"{campaign.campaign_id}:{step.id}:{d.person_id}".encode()
                ).hexdigest()[:8],
                16,
            )
            arm = "then" if bucket % 100 < (step.percent or 0) else "otherwise"
            nxt = step.then if arm == "then" else step.otherwise
            extra = {"split": {**d.context.get("split", {}), step.id: arm}}
        elif step.type == "branch":
            held = self._check(conn, d, campaign, step, doc)
            nxt = step.then if held else step.otherwise
            extra = {"branch": {**d.context.get("branch", {}), step.id: held}}
        row = self._next_row(d, campaign, nxt, at, step.id, {**extra, "journey_version": version})
        if row is not None:
            batch.enqueue.append(row)
        batch.finish(d.due_id, f"journey:{step.type}")

    def _check(
        self,
        conn: Connection,
        d: Due,
        campaign: Campaign,
        step: JourneyStep,
        doc: dict[str, Any] | None,
    ) -> bool:
        if step.check in ("opened", "clicked"):
            key = outbox.outbox_key(
                campaign.campaign_id, str(step.of_step), d.person_id, d.occasion
            )
            e = t.events.c.event_id
            cond = e == f"open:{key}" if step.check == "opened" else e.like(f"click:{key}:%")
            return conn.execute(select(t.events.c.seq).where(cond).limit(1)).first() is not None
        if step.check == "bought":
            return self._exited(conn, d.person_id, ["purchase"], d.trigger_us) is not None
        if step.condition is None or doc is None:
            return False
        from concierge.campaigns import audiences

        c = step.condition
        if c.field.startswith("predictions."):
            value = self.engine.predictions.of(d.person_id).get(c.field.split(".", 1)[1])
        else:
            value = audiences._doc_value(
                c.field,
                doc,
                self.now_us(),
                self.engine.half_life_days,
                self.engine.session_gap_minutes,
            )
        return audiences._py(c, value)

    def _exited(
        self, conn: Connection, person_id: str, types: list[str], since_us: int
    ) -> str | None:
        if not types:
            return None
        aliases = (
            conn.execute(select(t.identities.c.alias).where(t.identities.c.person_id == person_id))
            .scalars()
            .all()
        )
        cids = {a[2:] for a in aliases if a.startswith("c:")}
        aids = {a[2:] for a in aliases if a.startswith("a:")}
        if person_id.startswith("anon:"):
            aids.add(person_id[5:])
        else:
            cids.add(person_id)
        e = t.events
        row = conn.execute(
            select(e.c.type)
            .where(
                e.c.ts_us > since_us,
                e.c.type.in_(types),
                or_(
                    e.c.customer_id.in_(sorted(cids)),
                    and_(e.c.customer_id.is_(None), e.c.anonymous_id.in_(sorted(aids))),
                ),
            )
            .limit(1)
        ).first()
        return None if row is None else str(row[0])

    # -- results -----------------------------------------------------------------------------

    def _record(
        self, sends: list[_Send], results: list[DeliveryResult], report: TickReport
    ) -> None:
        now = self.now_us()
        cfg = self.config
        marks: list[dict[str, Any]] = []
        finishes: dict[str, list[int]] = {}
        retries: list[tuple[int, int]] = []
        bounced: list[tuple[str, str, str | None]] = []
        following: list[dict[str, Any]] = []
        for s, r in zip(sends, results, strict=True):
            key, d = s.message.key, s.due
            status: str = r.status
            outcome: str = r.status
            if r.status == "sent":
                report.sent += 1
                self._delivered.append(_delivered_event(s.message, now))
            elif r.status == "suppressed":
                outcome = "suppressed:bounce"
                if s.message.to:
                    bounced.append((s.message.channel, s.message.to, r.error))
                report.suppressed += 1
            elif r.status == "failed" or d.attempts + 1 >= cfg.max_attempts:
                status = outcome = "failed"
                report.failed += 1
            else:
                status = "retry"
                retries.append((d.due_id, now + int(cfg.backoff_s * 2**d.attempts * SECOND_US)))
                report.retried += 1
            marks.append(
                {
                    "k": key,
                    "s": status,
                    "p": r.provider_id,
                    "e": r.error,
                    "t": now if status == "sent" else None,
                }
            )
            if status != "retry":
                finishes.setdefault(outcome, []).append(d.due_id)
                if s.then is not None:
                    following.append(s.then)
        o = t.outbox
        with self.store.write() as conn:
            conn.execute(
                update(o)
                .where(o.c.outbox_key == bindparam("k"))
                .values(
                    status=bindparam("s"),
                    provider_id=bindparam("p"),
                    error=bindparam("e"),
                    sent_us=func.coalesce(bindparam("t"), o.c.sent_us),
                    updated_us=now,
                ),
                marks,
            )
            for outcome, ids in finishes.items():
                due_queue.finish(conn, ids, outcome, now_us=now)
            for due_id, at in retries:
                due_queue.reschedule(
                    conn, due_id, at_us=at, now_us=now, attempt=True, outcome="retry"
                )
            due_queue.enqueue(conn, self.store, following, now_us=now)
            for channel, address, error in bounced:
                suppress(
                    conn, self.store, channel, address, reason="bounce", source=error, now_us=now
                )

    def _report_deliveries(self) -> None:
        """``delivered`` events through ingest, once per tick (ids derived from the keys)."""
        events, self._delivered = self._delivered, []
        for i in range(0, len(events), 5_000):
            self.cg.ingest(events[i : i + 5_000])


def _step_id(camp: tuple[Campaign, int, str] | None, d: Due) -> str:
    """The step a due row stands for (a journey's entry row "main" is its first step)."""
    if camp is not None and camp[0].journey is not None and d.step == "main":
        return camp[0].journey.steps[0].id
    return d.step


class _Memo:
    """What explanations repeat for every person of a broadcast, computed once: the audience
    rule of a campaign and the ISO text of an instant."""

    def __init__(self) -> None:
        self._rules: dict[int, tuple[Campaign, list[dict[str, Any]]]] = {}
        self._iso: dict[int, str] = {}

    def rule(self, campaign: Campaign) -> list[dict[str, Any]]:
        got = self._rules.get(id(campaign))
        if got is None or got[0] is not campaign:  # the campaign is kept: its id is not reused
            if len(self._rules) > 1_000:
                self._rules.clear()
            rule = [c.model_dump() for c in campaign.audience.all] if campaign.audience else []
            got = self._rules[id(campaign)] = (campaign, rule)
        return got[1]

    def iso(self, us: int) -> str:
        text = self._iso.get(us)
        if text is None:
            if len(self._iso) > 10_000:
                self._iso.clear()
            text = self._iso[us] = from_us(us).isoformat()
        return text


def _why(campaign: Campaign, d: Due, memo: _Memo) -> dict[str, Any]:
    out: dict[str, Any] = {"occasion": d.occasion, "at": memo.iso(d.trigger_us)}
    if campaign.journey is not None:
        out["journey"] = {
            k: d.context[k] for k in ("path", "split", "branch") if k in d.context
        } | {"step": d.step}
    if campaign.trigger is not None:
        out["trigger"] = campaign.trigger.on
        out["delay_minutes"] = campaign.trigger.delay_minutes
        for k in ("event_id", "event_type", "product_ids", "query", "why"):
            if k in d.context:
                out[k] = d.context[k]
    if campaign.audience is not None:
        out["audience"] = memo.rule(campaign)
    for k in ("entered", "stored_audience", "segment_id"):
        if k in d.context:
            out[k] = d.context[k]
    for kind in ("replenish", "resale"):  # what is due (a category, an item) and why
        if kind in d.context:
            for k in (kind, "product_ids", "why"):
                out[k] = d.context.get(k)
    return out


def _delivered_event(m: Message, now_us: int) -> dict[str, Any]:
    who = (
        {"anonymous_id": m.person_id[5:]}
        if m.person_id.startswith("anon:")
        else {"customer_id": m.person_id}
    )
    return {
        "type": "delivered",
        "event_id": f"delivered:{m.key}",
        "channel": m.channel,
        "message_id": m.key,
        "campaign_id": m.campaign_id,
        "timestamp": from_us(now_us).isoformat(),
        **who,
    }


def suppress(
    conn: Connection,
    store: Any,
    channel: str,
    address: str,
    *,
    reason: str,
    source: str | None,
    now_us: int,
) -> None:
    stmt = store.insert(t.suppressions).values(
        channel=channel, address=address, reason=reason, source=source, created_us=now_us
    )
    conn.execute(stmt.on_conflict_do_nothing(index_elements=["channel", "address"]))
