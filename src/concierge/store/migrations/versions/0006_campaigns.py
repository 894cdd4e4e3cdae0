"""campaigns and channels: definitions, due queue, outbox, suppressions, on-site messages

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-01 19:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "campaign_assets",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("updated_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_campaign_assets")),
    )
    op.create_table(
        "campaign_versions",
        sa.Column("campaign_id", sa.String(length=140), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", "version", name=op.f("pk_campaign_versions")),
    )
    op.create_table(
        "campaigns",
        sa.Column("campaign_id", sa.String(length=140), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("updated_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", name=op.f("pk_campaigns")),
    )
    op.create_table(
        "due_queue",
        sa.Column(
            "due_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("campaign_id", sa.String(length=140), nullable=False),
        sa.Column("step", sa.String(length=64), nullable=False),
        sa.Column("person_id", sa.String(length=140), nullable=False),
        sa.Column("occasion", sa.String(length=200), nullable=False),
        sa.Column("due_us", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until_us", sa.BigInteger(), nullable=True),
        sa.Column("trigger_us", sa.BigInteger(), nullable=False),
        sa.Column("context", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("updated_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("due_id", name=op.f("pk_due_queue")),
        sa.UniqueConstraint(
            "campaign_id", "step", "person_id", "occasion", name="uq_due_queue_key"
        ),
    )
    op.create_index(
        "ix_due_queue_person_id", "due_queue", ["person_id", "campaign_id"], unique=False
    )
    op.create_index("ix_due_queue_status_due_us", "due_queue", ["status", "due_us"], unique=False)
    op.create_table(
        "onsite_messages",
        sa.Column("outbox_key", sa.String(length=64), nullable=False),
        sa.Column("person_id", sa.String(length=140), nullable=False),
        sa.Column("campaign_id", sa.String(length=140), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("expires_us", sa.BigInteger(), nullable=True),
        sa.Column("seen_us", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("outbox_key", name=op.f("pk_onsite_messages")),
    )
    op.create_index("ix_onsite_messages_person_id", "onsite_messages", ["person_id"], unique=False)
    op.create_table(
        "outbox",
        sa.Column("outbox_key", sa.String(length=64), nullable=False),
        sa.Column("campaign_id", sa.String(length=140), nullable=False),
        sa.Column("step", sa.String(length=64), nullable=False),
        sa.Column("person_id", sa.String(length=140), nullable=False),
        sa.Column("occasion", sa.String(length=200), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("address", sa.String(length=400), nullable=True),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.String(length=200), nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("body_text", sa.Text(), nullable=True),
        sa.Column("body_html", sa.Text(), nullable=True),
        sa.Column("provider_id", sa.String(length=200), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("explain", sa.Text(), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until_us", sa.BigInteger(), nullable=True),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("updated_us", sa.BigInteger(), nullable=False),
        sa.Column("sent_us", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("outbox_key", name=op.f("pk_outbox")),
        sa.UniqueConstraint("campaign_id", "step", "person_id", "occasion", name="uq_outbox_key"),
    )
    op.create_index("ix_outbox_person_id", "outbox", ["person_id", "created_us"], unique=False)
    op.create_index("ix_outbox_status", "outbox", ["status"], unique=False)
    op.create_table(
        "suppressions",
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("address", sa.String(length=400), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("channel", "address", name=op.f("pk_suppressions")),
    )
    op.create_table(
        "worker_leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("until_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_worker_leases")),
    )


def downgrade() -> None:
    op.drop_table("worker_leases")
    op.drop_table("suppressions")
    op.drop_index("ix_outbox_status", table_name="outbox")
    op.drop_index("ix_outbox_person_id", table_name="outbox")
    op.drop_table("outbox")
    op.drop_index("ix_onsite_messages_person_id", table_name="onsite_messages")
    op.drop_table("onsite_messages")
    op.drop_index("ix_due_queue_status_due_us", table_name="due_queue")
    op.drop_index("ix_due_queue_person_id", table_name="due_queue")
    op.drop_table("due_queue")
    op.drop_table("campaigns")
    op.drop_table("campaign_versions")
    op.drop_table("campaign_assets")
