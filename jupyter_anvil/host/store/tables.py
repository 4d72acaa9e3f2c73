"""Every table the store keeps, as this release uses them (the head of the migrations).

The migrations in ``migrations/versions`` build these tables step by step and keep their
own frozen copies of each step's DDL: a change here needs a new revision there.

Text columns are ``String`` and ``Text`` of types.py (the DDL of SQLAlchemy's own), which
write alike on SQLite and PostgreSQL; a new table takes them too.
"""

from __future__ import annotations

import sqlalchemy as sa

from .types import String, Text

metadata = sa.MetaData()

#: a sequence number: 64-bit on PostgreSQL (migration 0006); on SQLite an INTEGER PRIMARY
#: KEY, which is 64 bits there already and the only type its AUTOINCREMENT accepts
SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

sessions = sa.Table(
    "anvil_sessions",
    metadata,
    sa.Column("token_hash", String(64), primary_key=True),
    sa.Column("id", String(32), nullable=False, unique=True),
    sa.Column("app", String(255), nullable=False),
    sa.Column("client_type", String(32), nullable=False),
    sa.Column("data", Text, nullable=False, default="{}"),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("last_used", sa.Float, nullable=False),
)


tasks = sa.Table(
    "anvil_tasks",
    metadata,
    sa.Column("id", String(32), primary_key=True),
    sa.Column("app", String(255), nullable=False, index=True),
    sa.Column("name", String(255), nullable=False),
    sa.Column("status", String(16), nullable=False, index=True),
    sa.Column("launched", sa.Float, nullable=False, index=True),
    sa.Column("started", sa.Float),
    sa.Column("ended", sa.Float),
    sa.Column("state", Text),  # encoded task_state, {"v", "objects"}
    sa.Column("result", Text),  # encoded return value, {"v", "objects", "media"}
    sa.Column("error", Text),  # wire error
    sa.Column("traceback", Text),
    sa.Column("launched_by", Text),  # the launching call's context
    sa.Column("output", Text, nullable=False, default=""),
    sa.Column("output_dropped", sa.Integer, nullable=False, default=0),
    # the server instance that runs it (see instances.py); NULL on records of older releases
    sa.Column("owner", String(32)),
    # the schedule that launched it (schedules/); NULL for a task launched any other way
    sa.Column("schedule_id", String(64)),
    # when another server asked for a kill (the owner polls for it, see tasks.py); NULL: none
    sa.Column("kill_requested", sa.Float),
)

#: the server instances sharing this store, with their heartbeats (see instances.py)
servers = sa.Table(
    "anvil_servers",
    metadata,
    sa.Column("id", String(32), primary_key=True),
    sa.Column("host", String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("pid_started", String(32)),  # the process's start time, as /proc says it
    sa.Column("started", sa.Float, nullable=False),
    sa.Column("beat", sa.Float, nullable=False),
)

#: what apps printed and what the server said about them (see logs.py)
log_records = sa.Table(
    "anvil_log",
    metadata,
    # the database numbers records, whichever server writes them
    sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
    sa.Column("time", sa.Float, nullable=False),
    sa.Column("app", String(255), nullable=False, index=True),
    sa.Column("function", String(255), nullable=False),
    sa.Column("call_id", String(64), nullable=False),
    sa.Column("stream", String(16), nullable=False),  # stdout, stderr, traceback, or system
    sa.Column("text", Text, nullable=False),
    sqlite_autoincrement=True,  # never reuse a number, so a reader tailing by seq misses nothing
)

#: scheduled tasks: what each app declared (or the API made), and when each fires next
#: (see schedules/). ``spec``, ``args`` and ``kwargs`` are JSON text; ``version`` goes up
#: by one at every change, so a server sees what another one changed and a write made
#: from a stale read fails instead of undoing it.
schedules = sa.Table(
    "anvil_schedules",
    metadata,
    sa.Column("id", String(64), primary_key=True),
    sa.Column("app", String(255), nullable=False, index=True),
    sa.Column("task", String(255), nullable=False),
    sa.Column("name", String(255), nullable=False),
    sa.Column("spec", Text, nullable=False),  # as written: a phrase, a cron line or a time_spec dict
    sa.Column("tz", String(64), nullable=False),
    sa.Column("misfire", String(16), nullable=False),
    sa.Column("args", Text, nullable=False),
    sa.Column("kwargs", Text, nullable=False),
    sa.Column("source", String(16), nullable=False),  # notebook, metadata or api
    sa.Column("paused", sa.Boolean, nullable=False, default=False),
    sa.Column("next_run", sa.Float),  # NULL: paused, or a problem stops it
    sa.Column("last_run", sa.Float),
    sa.Column("last_status", String(16)),
    sa.Column("last_task_id", String(32)),
    sa.Column("problem", Text),  # why it cannot run; NULL if it can
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("updated", sa.Float, nullable=False),
    sa.Column("version", sa.Integer, nullable=False, default=1),
)

#: what each schedule did at each of its times: launched a task, skipped (and why) or failed
schedule_runs = sa.Table(
    "anvil_schedule_runs",
    metadata,
    sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
    sa.Column("schedule_id", String(64), nullable=False),
    sa.Column("app", String(255), nullable=False),
    sa.Column("due", sa.Float, nullable=False),  # the time it was due
    sa.Column("at", sa.Float, nullable=False),  # the time the scheduler acted
    sa.Column("task_id", String(32)),
    sa.Column("outcome", String(16), nullable=False),  # launched, skipped or failed
    sa.Column("reason", Text, nullable=False, default=""),
    sa.Column("server", String(32)),  # the server instance that fired it, if it said
    sa.Index("ix_anvil_schedule_runs_schedule", "schedule_id", "seq"),
    sqlite_autoincrement=True,  # never reuse a number: pages by seq stay stable
)

#: every message sent or received, with where it is and how it got there (host/mail/records.py)
mail = sa.Table(
    "anvil_mail",
    metadata,
    sa.Column("id", String(32), primary_key=True),
    sa.Column("app", String(255), nullable=False),
    sa.Column("box", String(8), nullable=False),  # outbox, sent or inbox
    sa.Column("status", String(16), nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("updated", sa.Float, nullable=False),
    sa.Column("message_id", Text),
    sa.Column("envelope_from", Text, nullable=False),
    sa.Column("recipients", Text, nullable=False),  # JSON list
    sa.Column("from_header", Text, nullable=False),
    sa.Column("to_header", Text, nullable=False),
    sa.Column("subject", Text, nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("smtp_code", sa.Integer),
    sa.Column("outcome", Text, nullable=False, default=""),
    sa.Column("next_attempt", sa.Float),
    sa.Column("deadline", sa.Float),
    sa.Column("owner", String(32)),
    sa.Column("call_id", String(64)),
    sa.Column("raw", sa.LargeBinary, nullable=False),
    sa.Index("ix_anvil_mail_app_box", "app", "box", "created"),
    sa.Index("ix_anvil_mail_status", "status"),
    sa.Index("ix_anvil_mail_created", "created"),
)

#: the outcomes of calls sent with an idempotency key (see host/idempotency/): one row per
#: (app, session id, key), claimed ``running`` by one server (``owner``) with a conditional
#: insert, then ``done`` with the encoded reply the caller got (host/idempotency/store.py)
idempotency = sa.Table(
    "anvil_idempotency",
    metadata,
    sa.Column("app", String(255), primary_key=True),
    # the session by its token's hash: the token outlives the session in a client's queue
    sa.Column("session_token_hash", String(64), primary_key=True),
    sa.Column("key", String(128), primary_key=True),
    sa.Column("state", String(8), nullable=False),  # running or done
    sa.Column("owner", String(32), nullable=False),  # the server instance that ran it
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("finished", sa.Float),  # NULL while running
    sa.Column("reply", sa.LargeBinary),  # the encoded outcome; NULL while running
    sa.Column("size", sa.Integer, nullable=False, default=0),
    sa.Index("ix_anvil_idempotency_app_finished", "app", "finished"),
    sa.Index("ix_anvil_idempotency_finished", "finished"),
    sa.Index("ix_anvil_idempotency_state", "state", "owner"),
)

#: columns kept as JSON text
TASK_JSON_COLUMNS = ("state", "result", "error", "launched_by")
