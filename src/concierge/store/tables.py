"""The tables. SQLAlchemy Core; the same schema on SQLite and PostgreSQL.

Times are integer microseconds since the Unix epoch (UTC): exact, sortable, and read by Polars
without conversion. JSON documents are stored as text written by orjson, so both backends hold
byte-identical values.

The event log (``events`` and its ``event_items`` projection) is append-only. Identities, profiles
and everything else marked *derived* can be rebuilt from it (``concierge rebuild``). The one
sanctioned rewrite of the log is erasure for a privacy request (``erasures`` records it).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ID = 140  # 128 for client ids plus room for the "anon:" / "erased:" prefixes

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# -- the log -------------------------------------------------------------------------------

events = Table(
    "events",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("event_id", String(ID), nullable=False, unique=True),
    Column("type", String(24), nullable=False),
    Column("customer_id", String(ID)),
    Column("anonymous_id", String(ID)),
    Column("ts_us", BigInteger, nullable=False),
    Column("received_us", BigInteger, nullable=False),
    Column("payload", Text, nullable=False),  # the whole event as accepted, JSON
)
Index("ix_events_customer_id", events.c.customer_id)
Index("ix_events_anonymous_id", events.c.anonymous_id)
Index("ix_events_ts_us", events.c.ts_us)

event_items = Table(
    "event_items",
    metadata,
    Column("event_id", String(ID), primary_key=True),
    Column("line", Integer, primary_key=True),
    Column("product_id", String(ID), nullable=False),
    Column("variant_id", String(ID)),
    Column("quantity", Integer, nullable=False),
    Column("unit_price", Float),
    # the product's facets when the event arrived ("brand=X|cat=Y|size=42|..."), so that
    # affinities rebuilt later equal the ones kept live even after the catalog changes
    Column("facets", Text, nullable=False, default=""),
)
# No index on product_id: it would double the cost of a bulk import (measured: 2.2 s instead of
# 1.1 s for the 541,909 lines of Online Retail), and models read the table whole.

# -- derived: identity graph and profiles ---------------------------------------------------

identities = Table(
    "identities",
    metadata,
    Column("alias", String(ID + 2), primary_key=True),  # "c:<customer_id>" or "a:<anonymous_id>"
    Column("person_id", String(ID), nullable=False),
    Column("linked_us", BigInteger, nullable=False),
)
Index("ix_identities_person_id", identities.c.person_id)

profiles = Table(
    "profiles",
    metadata,
    Column("person_id", String(ID), primary_key=True),
    Column("known", Boolean, nullable=False),  # has a customer id (not only anonymous)
    Column("doc", Text, nullable=False),  # the aggregate document, see concierge.profiles.doc
    # typed copies of a few figures, for audiences and listings
    Column("n_orders", Integer, nullable=False),
    Column("revenue", Float, nullable=False),
    Column("first_seen_us", BigInteger, nullable=False),
    Column("last_seen_us", BigInteger, nullable=False),
    Column("last_order_us", BigInteger),
    Column("updated_us", BigInteger, nullable=False),
)
Index("ix_profiles_last_seen_us", profiles.c.last_seen_us)

erasures = Table(
    "erasures",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("pseudonym", String(ID), nullable=False),
    Column("erased_us", BigInteger, nullable=False),
    Column("n_events", Integer, nullable=False),
)

# -- catalog -------------------------------------------------------------------------------

products = Table(
    "products",
    metadata,
    Column("product_id", String(ID), primary_key=True),
    Column("title", Text, nullable=False),
    Column("brand", String(200)),
    Column("category", Text),  # path joined with " > "
    Column("department", String(200)),
    Column("colour", String(200)),
    Column("price", Float, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("active", Boolean, nullable=False),
    Column("seller_id", String(ID)),
    Column("one_of_a_kind", Boolean, nullable=False),
    Column("facets", Text, nullable=False),
    Column("doc", Text, nullable=False),  # the whole Product, JSON
    Column("updated_us", BigInteger, nullable=False),
)
Index("ix_products_brand", products.c.brand)
Index("ix_products_seller_id", products.c.seller_id)
Index("ix_products_updated_us", products.c.updated_us)

variants = Table(
    "variants",
    metadata,
    Column("product_id", String(ID), primary_key=True),
    Column("variant_id", String(ID), primary_key=True),
    Column("size", String(200)),
    Column("stock", Integer, nullable=False),
    Column("price", Float),
)

catalog_events = Table(
    "catalog_events",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("type", String(24), nullable=False),
    Column("product_id", String(ID), nullable=False),
    Column("variant_id", String(ID)),
    Column("old_value", Float),
    Column("new_value", Float),
    Column("ts_us", BigInteger, nullable=False),
)
Index("ix_catalog_events_product_id", catalog_events.c.product_id)

# -- access --------------------------------------------------------------------------------

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("role", String(16), nullable=False),  # ingest | read | admin
    Column("secret_sha256", String(64), nullable=False, unique=True),
    Column("created_us", BigInteger, nullable=False),
    Column("revoked_us", BigInteger),
)

# -- models (derived) ----------------------------------------------------------------------

model_artifacts = Table(
    "model_artifacts",
    metadata,
    Column("name", String(64), primary_key=True),  # e.g. "collaborative", "lifetime"
    Column("version", Integer, primary_key=True),  # 1, 2, … per name
    Column("created_us", BigInteger, nullable=False),
    Column("as_of_us", BigInteger, nullable=False),  # the data it saw ended here
    Column("log_seq", BigInteger, nullable=False),  # the last event of the log it saw
    Column("config_digest", String(64), nullable=False),  # SHA-256 of the canonical config
    Column("config", Text, nullable=False),  # JSON
    Column("metrics", Text, nullable=False),  # JSON
    Column("meta", Text, nullable=False),  # JSON: anything small the model keeps beside arrays
    Column("payload", LargeBinary, nullable=False),  # an .npz (allow_pickle=False) of arrays
    Column("payload_bytes", BigInteger, nullable=False),
)

# -- behaviour (cadence, segments, audiences, questions) -------------------------------------

# one row per segmentation run (= version of the ``segments`` artifact); derived
segment_runs = Table(
    "segment_runs",
    metadata,
    Column("run_id", Integer, primary_key=True),  # the ``segments`` artifact version
    Column("as_of_us", BigInteger, nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("n_people", Integer, nullable=False),
    Column("n_segments", Integer, nullable=False),
)

segment_defs = Table(
    "segment_defs",
    metadata,
    Column("run_id", Integer, primary_key=True),
    Column("segment_id", Integer, primary_key=True),  # stable across runs (matched centroids)
    Column("label", Text, nullable=False),  # the persona
    Column("size", Integer, nullable=False),
    Column("figures", Text, nullable=False),  # JSON: key figures and distinguishing features
)

segment_members = Table(
    "segment_members",
    metadata,
    Column("run_id", Integer, primary_key=True),
    Column("person_id", String(ID), primary_key=True),
    Column("segment_id", Integer, nullable=False),
)
Index("ix_segment_members_person_id", segment_members.c.person_id)

audiences = Table(
    "audiences",
    metadata,
    Column("audience_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("rule", Text, nullable=False),
    Column("description", Text),
    Column("created_us", BigInteger, nullable=False),
    # where the last evaluation stood: the applied log position, the profiles epoch, the
    # per-person model versions (JSON) and the as-of; a change of any tells what to re-evaluate
    Column("evaluated_seq", BigInteger),
    Column("evaluated_epoch", String(64)),
    Column("evaluated_models", Text),
    Column("evaluated_us", BigInteger),
    Column("n_members", Integer, nullable=False),
)

audience_members = Table(
    "audience_members",
    metadata,
    Column("audience_id", String(64), primary_key=True),
    Column("person_id", String(ID), primary_key=True),
    Column("entered_us", BigInteger, nullable=False),
)

audience_changes = Table(
    "audience_changes",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("audience_id", String(64), nullable=False),
    Column("person_id", String(ID), nullable=False),
    Column("change", String(8), nullable=False),  # entered | left
    Column("at_us", BigInteger, nullable=False),
)
Index("ix_audience_changes_audience_id", audience_changes.c.audience_id)

# clarifying questions raised by out-of-pattern behaviour; answered by ``answer`` events
questions = Table(
    "questions",
    metadata,
    Column("person_id", String(ID), primary_key=True),
    Column("question_id", String(128), primary_key=True),  # what the answer event names
    Column("key", String(200), nullable=False),  # what it is about; never asked twice
    Column("kind", String(32), nullable=False),  # gift | someone_else
    Column("text", Text, nullable=False),
    Column("about_product_id", String(ID)),
    Column("about_event_id", String(ID)),
    Column("dimension", String(32), nullable=False),  # dept | size | price | cat
    Column("value", String(200), nullable=False),
    Column("surprise", Float, nullable=False),
    Column("seen_us", BigInteger, nullable=False),  # when the unusual behaviour happened
    Column("created_us", BigInteger, nullable=False),
)
Index("ix_questions_key", questions.c.person_id, questions.c.key, unique=True)
# -- campaigns -----------------------------------------------------------------------------
# Campaign definitions (versioned), the due queue that drives waits and retries, the outbox
# that records every send once (keyed by campaign, step, person and occasion), address
# suppressions, on-site messages waiting to be pulled, and the worker lease of SQLite.

campaigns = Table(
    "campaigns",
    metadata,
    Column("campaign_id", String(ID), primary_key=True),
    Column("version", Integer, nullable=False),  # the live version (campaign_versions)
    Column("kind", String(16), nullable=False),  # triggered | lifecycle | broadcast
    Column("status", String(16), nullable=False),  # draft | live | paused
    Column("priority", Integer, nullable=False),
    Column("definition", Text, nullable=False),  # JSON of concierge.campaigns.definitions
    Column("created_us", BigInteger, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
)

campaign_versions = Table(
    "campaign_versions",
    metadata,
    Column("campaign_id", String(ID), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("definition", Text, nullable=False),
    Column("created_us", BigInteger, nullable=False),
)

campaign_assets = Table(
    "campaign_assets",
    metadata,
    Column("name", String(200), primary_key=True),  # "layout:base", "snippet:footer"
    Column("body", Text, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
)

due_queue = Table(
    "due_queue",
    metadata,
    Column(
        "due_id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("campaign_id", String(ID), nullable=False),
    Column("step", String(64), nullable=False),
    Column("person_id", String(ID), nullable=False),
    Column("occasion", String(200), nullable=False),
    Column("due_us", BigInteger, nullable=False),
    Column("status", String(12), nullable=False),  # pending | claimed | done
    Column("attempts", Integer, nullable=False),
    Column("lease_owner", String(64)),
    Column("lease_until_us", BigInteger),
    Column("trigger_us", BigInteger, nullable=False),  # when the occasion arose
    Column("context", Text, nullable=False),  # JSON: trigger event, items, audience rule
    Column("outcome", String(32)),  # sent | suppressed | held | exited | failed | …
    Column("created_us", BigInteger, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
    UniqueConstraint("campaign_id", "step", "person_id", "occasion", name="uq_due_queue_key"),
)
# claim order (migration 0008): the first due rows are read in order, never sorted
Index("ix_due_queue_claim", due_queue.c.status, due_queue.c.due_us, due_queue.c.due_id)
Index("ix_due_queue_person_id", due_queue.c.person_id, due_queue.c.campaign_id)

outbox = Table(
    "outbox",
    metadata,
    Column("outbox_key", String(64), primary_key=True),  # sha256 of the four parts below
    Column("campaign_id", String(ID), nullable=False),
    Column("step", String(64), nullable=False),
    Column("person_id", String(ID), nullable=False),
    Column("occasion", String(200), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("address", String(400)),
    # sending (reserved, not yet complete at the provider) | committed (SMTP: marked before the
    # final dot) | sent | retry | failed | suppressed | held
    Column("status", String(12), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("message_id", String(200)),
    Column("subject", Text),
    Column("body_text", Text),
    Column("body_html", Text),
    Column("provider_id", String(200)),
    Column("error", Text),
    Column("explain", Text, nullable=False),  # JSON: why sent / suppressed / held
    Column("lease_owner", String(64)),
    Column("lease_until_us", BigInteger),
    Column("created_us", BigInteger, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
    Column("sent_us", BigInteger),
    UniqueConstraint("campaign_id", "step", "person_id", "occasion", name="uq_outbox_key"),
)
Index("ix_outbox_person_id", outbox.c.person_id, outbox.c.created_us)
Index("ix_outbox_status", outbox.c.status)

suppressions = Table(
    "suppressions",
    metadata,
    Column("channel", String(16), primary_key=True),
    Column("address", String(400), primary_key=True),  # normalised address or "person:<id>"
    Column("reason", String(32), nullable=False),  # bounce | complaint | unsubscribe | …
    Column("source", Text),
    Column("created_us", BigInteger, nullable=False),
)

onsite_messages = Table(
    "onsite_messages",
    metadata,
    Column("outbox_key", String(64), primary_key=True),
    Column("person_id", String(ID), nullable=False),
    Column("campaign_id", String(ID), nullable=False),
    Column("content", Text, nullable=False),  # JSON: title, body, items, links
    Column("created_us", BigInteger, nullable=False),
    Column("expires_us", BigInteger),
    Column("seen_us", BigInteger),
)
Index("ix_onsite_messages_person_id", onsite_messages.c.person_id)

worker_leases = Table(
    "worker_leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("owner", String(64), nullable=False),
    Column("until_us", BigInteger, nullable=False),
)
# -- recommendations --------------------------------------------------------------------------

merch_rules = Table(
    "merch_rules",
    metadata,
    Column("rule_id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("action", String(16), nullable=False),  # pin | boost | bury | exclude
    Column("product_id", String(ID)),  # the item a rule is about, or
    Column("facet", String(400)),  # every item with this facet ("brand=X", "attr:k=v", "cat=…")
    Column("weight", Float, nullable=False),  # boost/bury strength; pin: the position (1-based)
    Column("slots", String(200), nullable=False),  # comma-separated slots, "" for all
    Column("starts_us", BigInteger),  # the time window (either end open when null)
    Column("ends_us", BigInteger),
    Column("created_us", BigInteger, nullable=False),
)
