"""Idempotency keys scoped by the session's token (its hash), not its public id.

A session's row, and with it the token -> id mapping, is deleted once the session sits
idle past ``session_idle_minutes``; a queued offline call whose reply was lost may be sent
again later than that, with the token it was first sent with. Scoped by the token's hash,
its stored outcome is still found (and replayed) instead of the call running again in a
new session. The rows of sessions still alive are carried over; the others could never be
replayed anyway (their session is gone) and are dropped.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision: str | None = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DELETE FROM anvil_idempotency WHERE session_id NOT IN (SELECT id FROM anvil_sessions)")
    with op.batch_alter_table("anvil_idempotency") as batch:
        batch.alter_column(
            "session_id", new_column_name="session_token_hash", type_=sa.String(64), existing_nullable=False
        )
    op.execute(
        "UPDATE anvil_idempotency SET session_token_hash = "
        "(SELECT token_hash FROM anvil_sessions WHERE anvil_sessions.id = anvil_idempotency.session_token_hash)"
    )


def downgrade() -> None:
    op.execute(
        "UPDATE anvil_idempotency SET session_token_hash = "
        "(SELECT id FROM anvil_sessions WHERE anvil_sessions.token_hash = anvil_idempotency.session_token_hash)"
    )
    op.execute("DELETE FROM anvil_idempotency WHERE session_token_hash IS NULL")
    with op.batch_alter_table("anvil_idempotency") as batch:
        batch.alter_column(
            "session_token_hash", new_column_name="session_id", type_=sa.String(32), existing_nullable=False
        )
