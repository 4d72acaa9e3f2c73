"""Issue 20: the app log's and the schedule runs' sequence numbers as 64-bit on PostgreSQL.

They were INTEGER (with an INTEGER sequence) there: a busy install would run out past
about 2.1 billion log records. SQLite's INTEGER PRIMARY KEY is 64 bits already, so this
revision changes nothing on SQLite.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels = None
depends_on = None

TABLES = ("anvil_log", "anvil_schedule_runs")


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    for table in TABLES:
        op.alter_column(table, "seq", type_=sa.BigInteger(), existing_type=sa.Integer(), existing_nullable=False)
        # the column's own sequence (SERIAL's) is INTEGER too: it would stop at 2**31 - 1
        sequence = bind.execute(sa.text("SELECT pg_get_serial_sequence(:t, 'seq')"), {"t": table}).scalar()
        if sequence:
            op.execute(sa.text(f"ALTER SEQUENCE {sequence} AS bigint"))


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    for table in TABLES:
        sequence = bind.execute(sa.text("SELECT pg_get_serial_sequence(:t, 'seq')"), {"t": table}).scalar()
        if sequence:
            op.execute(sa.text(f"ALTER SEQUENCE {sequence} AS integer"))
        op.alter_column(table, "seq", type_=sa.Integer(), existing_type=sa.BigInteger(), existing_nullable=False)
