"""Issue 20: a kill asked of a task through a server that does not run it.

The server asked writes ``kill_requested``; the task's owner polls for it with its
output writes and kills the task itself.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("anvil_tasks", sa.Column("kill_requested", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("anvil_tasks") as batch:
        batch.drop_column("kill_requested")
