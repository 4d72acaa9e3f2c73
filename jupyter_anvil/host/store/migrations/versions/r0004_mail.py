"""Email (issue 16): every message sent or received.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "anvil_mail",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("app", sa.String(255), nullable=False),
        sa.Column("box", sa.String(8), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
        sa.Column("message_id", sa.Text),
        sa.Column("envelope_from", sa.Text, nullable=False),
        sa.Column("recipients", sa.Text, nullable=False),
        sa.Column("from_header", sa.Text, nullable=False),
        sa.Column("to_header", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("smtp_code", sa.Integer),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("next_attempt", sa.Float),
        sa.Column("deadline", sa.Float),
        sa.Column("owner", sa.String(32)),
        sa.Column("call_id", sa.String(64)),
        sa.Column("raw", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_anvil_mail_app_box", "anvil_mail", ["app", "box", "created"])
    op.create_index("ix_anvil_mail_status", "anvil_mail", ["status"])
    op.create_index("ix_anvil_mail_created", "anvil_mail", ["created"])


def downgrade() -> None:
    op.drop_table("anvil_mail")
