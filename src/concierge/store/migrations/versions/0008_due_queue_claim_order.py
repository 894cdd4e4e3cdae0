"""index the due queue in claim order: (status, due_us, due_id)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 01:40:00
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a claim reads the first due rows in (due_us, due_id) order. With (status, due_us) only,
    # PostgreSQL sorted every pending row of the same due_us (a broadcast queues them all at
    # one instant) to find the first 1,000: each claim cost grew with the queue, a broadcast
    # with its square. With due_id in the index both backends read the rows in order and stop.
    op.create_index("ix_due_queue_claim", "due_queue", ["status", "due_us", "due_id"], unique=False)
    op.drop_index("ix_due_queue_status_due_us", table_name="due_queue")


def downgrade() -> None:
    op.create_index("ix_due_queue_status_due_us", "due_queue", ["status", "due_us"], unique=False)
    op.drop_index("ix_due_queue_claim", table_name="due_queue")
