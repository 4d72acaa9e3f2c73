"""The baseline: the schema of the release before issue 13 (0e46508): sessions, task records, the app log.

Revision ID: 0001
Revises: none
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "anvil_sessions",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(32), nullable=False, unique=True),
        sa.Column("app", sa.String(255), nullable=False),
        sa.Column("client_type", sa.String(32), nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("last_used", sa.Float, nullable=False),
    )
    op.create_table(
        "anvil_tasks",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("app", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("launched", sa.Float, nullable=False),
        sa.Column("started", sa.Float),
        sa.Column("ended", sa.Float),
        sa.Column("state", sa.Text),
        sa.Column("result", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("traceback", sa.Text),
        sa.Column("launched_by", sa.Text),
        sa.Column("output", sa.Text, nullable=False),
        sa.Column("output_dropped", sa.Integer, nullable=False),
    )
    for column in ("app", "status", "launched"):
        op.create_index(f"ix_anvil_tasks_{column}", "anvil_tasks", [column])
    op.create_table(
        "anvil_log",
        # that release numbered records itself (revision 2 lets the database do it)
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("app", sa.String(255), nullable=False),
        sa.Column("function", sa.String(255), nullable=False),
        sa.Column("call_id", sa.String(64), nullable=False),
        sa.Column("stream", sa.String(16), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
    )
    op.create_index("ix_anvil_log_app", "anvil_log", ["app"])


def downgrade() -> None:
    for table in ("anvil_log", "anvil_tasks", "anvil_sessions"):
        op.drop_table(table)
