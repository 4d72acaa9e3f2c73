"""Scheduled tasks (issue 15): the schedules, their runs, and the schedule a task came from.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "anvil_schedules",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("app", sa.String(255), nullable=False),
        sa.Column("task", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("tz", sa.String(64), nullable=False),
        sa.Column("misfire", sa.String(16), nullable=False),
        sa.Column("args", sa.Text, nullable=False),
        sa.Column("kwargs", sa.Text, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("paused", sa.Boolean, nullable=False),
        sa.Column("next_run", sa.Float),
        sa.Column("last_run", sa.Float),
        sa.Column("last_status", sa.String(16)),
        sa.Column("last_task_id", sa.String(32)),
        sa.Column("problem", sa.Text),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_index("ix_anvil_schedules_app", "anvil_schedules", ["app"])
    op.create_table(
        "anvil_schedule_runs",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("schedule_id", sa.String(64), nullable=False),
        sa.Column("app", sa.String(255), nullable=False),
        sa.Column("due", sa.Float, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("task_id", sa.String(32)),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("server", sa.String(32)),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_anvil_schedule_runs_schedule", "anvil_schedule_runs", ["schedule_id", "seq"])
    # NULL on the records already there: no schedule launched them
    op.add_column("anvil_tasks", sa.Column("schedule_id", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("anvil_tasks") as batch:
        batch.drop_column("schedule_id")
    op.drop_table("anvil_schedule_runs")
    op.drop_table("anvil_schedules")
