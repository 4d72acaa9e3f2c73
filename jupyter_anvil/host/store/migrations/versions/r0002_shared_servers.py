"""What issue 13 added: task owners, the servers sharing the store, log numbers from
the database.

Each step checks first: issue 13's code, before Alembic, already made some of this on
the databases it opened (see migrate.py), and such a database is stamped 0001 when its
log still needs the last step.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jupyter_anvil.host.store.migrate import log_numbered_by_database

revision = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    connection = op.get_bind()
    inspector = sa.inspect(connection)
    if "owner" not in {column["name"] for column in inspector.get_columns("anvil_tasks")}:
        # NULL on the records already there: the release that ran them is gone
        op.add_column("anvil_tasks", sa.Column("owner", sa.String(32)))
    if "anvil_servers" not in inspector.get_table_names():
        op.create_table(
            "anvil_servers",
            sa.Column("id", sa.String(32), primary_key=True),
            sa.Column("host", sa.String(255), nullable=False),
            sa.Column("pid", sa.Integer, nullable=False),
            sa.Column("pid_started", sa.String(32)),
            sa.Column("started", sa.Float, nullable=False),
            sa.Column("beat", sa.Float, nullable=False),
        )
    if not log_numbered_by_database(connection):
        number_log_records_in_database(connection.dialect.name)


def number_log_records_in_database(dialect: str) -> None:
    """Servers sharing a store take the log's numbers from the database, never reused
    (a reader tailing by seq must miss nothing), going on from the highest kept."""
    if dialect == "sqlite":
        # SQLite cannot ALTER a column into AUTOINCREMENT: copy the table (batch mode);
        # sqlite_sequence starts from the highest seq copied
        with op.batch_alter_table("anvil_log", recreate="always", table_kwargs={"sqlite_autoincrement": True}) as batch:
            batch.alter_column("seq", existing_type=sa.Integer, autoincrement=True)
    elif dialect == "postgresql":
        op.execute("CREATE SEQUENCE IF NOT EXISTS anvil_log_seq_seq OWNED BY anvil_log.seq")
        op.execute("SELECT setval('anvil_log_seq_seq', COALESCE((SELECT MAX(seq) FROM anvil_log), 0) + 1, false)")
        op.execute("ALTER TABLE anvil_log ALTER COLUMN seq SET DEFAULT nextval('anvil_log_seq_seq')")


def downgrade() -> None:
    op.drop_table("anvil_servers")
    with op.batch_alter_table("anvil_tasks") as batch:
        batch.drop_column("owner")
