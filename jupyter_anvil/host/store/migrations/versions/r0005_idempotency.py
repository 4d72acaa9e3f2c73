"""Offline clients (issue 18): the outcomes of calls sent with an idempotency key.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "anvil_idempotency",
        sa.Column("app", sa.String(255), primary_key=True),
        sa.Column("session_id", sa.String(32), primary_key=True),
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("owner", sa.String(32), nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("finished", sa.Float),
        sa.Column("reply", sa.LargeBinary),
        sa.Column("size", sa.Integer, nullable=False),
    )
    op.create_index("ix_anvil_idempotency_app_finished", "anvil_idempotency", ["app", "finished"])
    op.create_index("ix_anvil_idempotency_finished", "anvil_idempotency", ["finished"])
    op.create_index("ix_anvil_idempotency_state", "anvil_idempotency", ["state", "owner"])


def downgrade() -> None:
    op.drop_table("anvil_idempotency")
