"""behaviour: segment runs and memberships, audiences with members and changes, questions

Revision ID: 0004
Revises: 0002
Create Date: 2026-12-01 19:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0002"
branch_labels = None
depends_on = None

ID = 140


def _seq() -> sa.Column[int]:
    return sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    )


def upgrade() -> None:
    op.create_table(
        "segment_runs",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("as_of_us", sa.BigInteger(), nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("n_people", sa.Integer(), nullable=False),
        sa.Column("n_segments", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_segment_runs")),
    )
    op.create_table(
        "segment_defs",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("segment_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("figures", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "segment_id", name=op.f("pk_segment_defs")),
    )
    op.create_table(
        "segment_members",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("person_id", sa.String(length=ID), nullable=False),
        sa.Column("segment_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "person_id", name=op.f("pk_segment_members")),
    )
    op.create_index("ix_segment_members_person_id", "segment_members", ["person_id"], unique=False)
    op.create_table(
        "audiences",
        sa.Column("audience_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("rule", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("evaluated_seq", sa.BigInteger(), nullable=True),
        sa.Column("evaluated_epoch", sa.String(length=64), nullable=True),
        sa.Column("evaluated_models", sa.Text(), nullable=True),
        sa.Column("evaluated_us", sa.BigInteger(), nullable=True),
        sa.Column("n_members", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("audience_id", name=op.f("pk_audiences")),
        sa.UniqueConstraint("name", name=op.f("uq_audiences_name")),
    )
    op.create_table(
        "audience_members",
        sa.Column("audience_id", sa.String(length=64), nullable=False),
        sa.Column("person_id", sa.String(length=ID), nullable=False),
        sa.Column("entered_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("audience_id", "person_id", name=op.f("pk_audience_members")),
    )
    op.create_table(
        "audience_changes",
        _seq(),
        sa.Column("audience_id", sa.String(length=64), nullable=False),
        sa.Column("person_id", sa.String(length=ID), nullable=False),
        sa.Column("change", sa.String(length=8), nullable=False),
        sa.Column("at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audience_changes")),
    )
    op.create_index(
        "ix_audience_changes_audience_id", "audience_changes", ["audience_id"], unique=False
    )
    op.create_table(
        "questions",
        sa.Column("person_id", sa.String(length=ID), nullable=False),
        sa.Column("question_id", sa.String(length=128), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("about_product_id", sa.String(length=ID), nullable=True),
        sa.Column("about_event_id", sa.String(length=ID), nullable=True),
        sa.Column("dimension", sa.String(length=32), nullable=False),
        sa.Column("value", sa.String(length=200), nullable=False),
        sa.Column("surprise", sa.Float(), nullable=False),
        sa.Column("seen_us", sa.BigInteger(), nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("person_id", "question_id", name=op.f("pk_questions")),
    )
    op.create_index("ix_questions_key", "questions", ["person_id", "key"], unique=True)


def downgrade() -> None:
    for name in (
        "questions",
        "audience_changes",
        "audience_members",
        "audiences",
        "segment_members",
        "segment_defs",
        "segment_runs",
    ):
        op.drop_table(name)
