"""Task and app statuses are defined once (protocol.py, host/apps.py): the tuples, the
helpers and the Literal types agree."""

from __future__ import annotations

from typing import get_args

from jupyter_anvil import protocol
from jupyter_anvil.host import apps


def test_task_statuses_split_into_unfinished_and_finished() -> None:
    assert protocol.TASK_STATUSES == ("queued", "running", "completed", "failed", "killed", "missing")
    assert set(protocol.UNFINISHED_TASK_STATUSES) | set(protocol.FINISHED_TASK_STATUSES) == set(protocol.TASK_STATUSES)
    assert not set(protocol.UNFINISHED_TASK_STATUSES) & set(protocol.FINISHED_TASK_STATUSES)
    assert [protocol.is_finished(s) for s in protocol.TASK_STATUSES] == [False, False, True, True, True, True]
    assert not protocol.is_finished("done") and not protocol.is_finished(None)


def test_app_statuses() -> None:
    assert apps.APP_STATUSES == get_args(apps.AppStatus) == ("loading", "ready", "error", "stopped")
    assert apps.App("x").status == apps.LOADING
