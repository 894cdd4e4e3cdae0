"""index products.updated_us (the catalog version the request path checks)

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-01 23:20:00
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # max(updated_us) is part of the catalog version that recommendations check every second;
    # without the index it scans the products table (measured: 19 ms on 100,000 products)
    op.create_index("ix_products_updated_us", "products", ["updated_us"])


def downgrade() -> None:
    op.drop_index("ix_products_updated_us", table_name="products")
