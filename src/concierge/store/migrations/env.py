"""Alembic environment: runs on the engine handed over in ``config.attributes``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from concierge.store.engine import normalise_url
from concierge.store.tables import metadata

config = context.config
engine = config.attributes.get("engine")
if engine is None:  # the alembic command line, for writing new migrations
    engine = create_engine(normalise_url(config.get_main_option("sqlalchemy.url") or ""))

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
