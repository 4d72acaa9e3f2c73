"""The store: every table, the connection, the repositories and the migrations.

tables.py      every table, as this release uses them
files.py       the database files and folder are the owner's alone
urls.py        the databases it runs on (SQLite, PostgreSQL), URLs shown without passwords
types.py       column types that behave alike on both
engine.py      the engine (SQLite pragmas, PostgreSQL pool) and the thread blocking work runs on
numbering.py   numbers readers tail by (the log) commit in the order they were given
core.py        Store (the connection and the sessions) and SessionRecord
tasks.py       TaskStore, the task records (TaskRecord, TaskSummary)
migrate.py     Alembic at start-up, databases from before Alembic included
migrations/    the revisions
"""

from .core import SessionRecord, Store
from .files import secure_folder, sqlite_path
from .tables import TASK_JSON_COLUMNS, log_records, metadata, servers, sessions, tasks
from .tasks import TaskChanges, TaskRecord, TaskStore, TaskSummary
from .urls import StoreError

__all__ = [
    "TASK_JSON_COLUMNS",
    "SessionRecord",
    "Store",
    "StoreError",
    "TaskChanges",
    "TaskRecord",
    "TaskStore",
    "TaskSummary",
    "log_records",
    "metadata",
    "secure_folder",
    "servers",
    "sessions",
    "sqlite_path",
    "tasks",
]
