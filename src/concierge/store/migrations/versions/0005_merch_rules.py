"""merchandising rules of the recommendations (pin, boost, bury, exclude)

Revision ID: 0005
Revises: 0006
Create Date: 2026-12-01 19:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "merch_rules",
        sa.Column("rule_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("product_id", sa.String(length=140), nullable=True),
        sa.Column("facet", sa.String(length=400), nullable=True),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("slots", sa.String(length=200), nullable=False),
        sa.Column("starts_us", sa.BigInteger(), nullable=True),
        sa.Column("ends_us", sa.BigInteger(), nullable=True),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("rule_id", name=op.f("pk_merch_rules")),
    )


def downgrade() -> None:
    op.drop_table("merch_rules")
