"""What an app declares: its server cells' ``@server.scheduled`` (from the load reply) and its
notebook's ``metadata.jupyter_anvil.scheduled_tasks`` (Anvil's ``anvil.yaml`` list), turned
into the scheduler's ``ScheduleDefinition`` objects (for ``Scheduler.sync_app``) and problems its
author can read.

``definitions_for`` is the one place both are checked: a bad declaration never stops the app or
the other schedules; it becomes a problem that says what is wrong, where (the server cell, or
the metadata entry's index) and how a valid one reads. Specs and zones are checked here by
``parse_spec``; the kernel checked only types (and encoded the arguments).

A definition's ``args`` and ``kwargs`` hold encoded values, one ``{"v": ..., "objects": [...]}``
per argument as ``wire.encode_value`` makes them (so a datetime or a portable class survives);
launcher.py's ``call_arguments`` turns them into a run's call without decoding them. A metadata
schedule has none, as in Anvil.

A declaration whose only fault is its spec or zone is still a definition (``Declared.broken``):
the store keeps it with its problem, so a save that breaks a spec keeps the schedule's history
and paused flag. Anything else wrong leaves the declaration out.

Ids are ``records.definition_id``'s: a hash of the app, the source and the schedule's name (a
server cell's) or job id (a metadata entry's, Anvil's ids made to last), the same at every load,
after restarts and on every server. So two cell schedules of one name, or two entries of one job
id, are one schedule twice (a problem); a cell's name equal to an entry's job id is not.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from ... import wire
from ...protocol import EncodedValue
from .launcher import is_encoded
from .records import DEFAULT_MISFIRE, MISFIRE_POLICIES, MisfirePolicy, ScheduleDefinition, definition_id
from .spec import ScheduleSpecError, parse_spec, shown

#: the longest schedule name (or job id) the store keeps
NAME_LENGTH: Final = 255
#: where metadata schedules are written, for messages
METADATA_KEY: Final = "metadata.jupyter_anvil.scheduled_tasks"
_METADATA_KEYS: Final = ("task_name", "job_id", "time_spec")

_SAME_VERSION = "install the same jupyter-anvil version in the kernel's environment as in the server's"
_NOT_TEXT = (
    "holds a lone surrogate (a \\ud800 escape with no pair), text the store cannot keep: write its names, "
    "spec and arguments in plain Unicode"
)
_DECORATOR_EXAMPLE = '@server.scheduled("every day at 09:00")'
_NAME_EXAMPLE = '@server.scheduled("every day at 09:00", name="morning")'
_ENTRY_EXAMPLE = (
    '{"task_name": "nightly", "job_id": "NIGHTLY1", '
    '"time_spec": {"every": "day", "n": 1, "at": {"hour": 3, "minute": 0}}}'
)


@dataclass
class Declared:
    """What ``definitions_for`` found in an app's declarations.

    ``runnable``: the schedules that can run. ``broken``: whole ones but for a spec or zone
    that does not parse (``Scheduler.sync_app`` stores them with that problem; they never
    fire). ``problems``: everything wrong, each said once, with where. ``where``: each
    definition's id to where it was declared, as problems begin (for what only the store
    can tell about it)."""

    runnable: list[ScheduleDefinition] = field(default_factory=list)
    broken: list[ScheduleDefinition] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    where: dict[str, str] = field(default_factory=dict)


def definitions_for(
    app: str,
    declarations: Iterable[Mapping[str, Any]],
    metadata_entries: object,
    background_tasks: Iterable[str],
) -> Declared:
    """The schedules ``app`` declares and the problems with them.

    ``declarations``: the load reply's ``schedules`` (``ScheduleDeclaration``\\ s, read here
    as untrusted); ``metadata_entries``: ``metadata.jupyter_anvil.scheduled_tasks`` as
    written (None: absent); ``background_tasks``: the app's background task names."""
    checker = _Checker(app, frozenset(background_tasks))
    for index, declaration in enumerate(declarations):
        checker.declaration(index, declaration)
    checker.metadata(metadata_entries)
    return checker.found


def not_a_task(task: object, background_tasks: Iterable[str], metadata: bool = False) -> str:
    """Why ``task`` cannot be scheduled, with the app's background tasks and an example."""
    known = sorted(background_tasks)
    listed = f" (its background tasks: {', '.join(map(repr, known))})" if known else " (it has none)"
    if metadata and known:
        example = f'"task_name": {json.dumps(known[0])}'
    else:
        name = task if isinstance(task, str) and task.isidentifier() else "report"
        example = f"{_DECORATOR_EXAMPLE} above @server.background_task above def {name}(): ..."
    return (
        f"{shown(task)} is not a @server.background_task of this app{listed}, so no schedule can launch it; "
        f"schedule a background task, e.g. {example}"
    )


class _Checker:
    def __init__(self, app: str, background_tasks: frozenset[str]) -> None:
        self.app = app
        self.tasks = background_tasks
        self.found = Declared()
        self.problems = self.found.problems
        # the keys of definition_id, per source: a repeat would be one schedule twice
        self._names: dict[str, str] = {}  # a server cell's schedule name -> which one, where
        self._job_ids: dict[str, str] = {}  # a metadata job id -> where

    # -- server cells --------------------------------------------------------------------
    def declaration(self, index: int, declaration: object) -> None:
        if not isinstance(declaration, Mapping):
            self.problems.append(
                f"schedule {index} of the load reply is {shown(declaration)}, not a declaration: {_SAME_VERSION}"
            )
            return
        cell = declaration.get("cell")
        if isinstance(cell, bool) or not isinstance(cell, int):
            cell = None
        where = f"server cell {wire.cell_number(cell)}" if cell is not None else "a server cell"
        if _not_text(declaration):
            self.problems.append(f"{where}: a schedule {_NOT_TEXT}")
            return
        problem = declaration.get("problem")
        task = declaration.get("task")
        if problem is not None:
            name = declaration.get("name")
            if isinstance(task, str) and isinstance(name, str):
                where = f"{where}: the schedule {name!r} of task {task!r}"
            self.problems.append(f"{where}: {problem if isinstance(problem, str) else shown(problem)}")
            return
        if not isinstance(task, str) or task not in self.tasks:
            self.problems.append(f"{where}: {not_a_task(task, self.tasks)}")
            return
        name = declaration.get("name")
        if name is None:
            name = task
        if not isinstance(name, str) or not name.strip() or len(name) > NAME_LENGTH:
            self.problems.append(
                f"{where}: the schedule of task {task!r} has the name {shown(name)}: a name is a str of 1 to "
                f"{NAME_LENGTH} characters, "
                f"e.g. {_NAME_EXAMPLE}"
            )
            return
        what = f"{where}: the schedule {name!r} of task {task!r}"
        if name in self._names:  # one id (the name is the key): one would replace the other
            self.problems.append(
                f"{what} has the name of {self._names[name]}: each schedule of an app has its own name, whatever "
                f"its task, e.g. {_NAME_EXAMPLE}"
            )
            return
        self._names[name] = f"the schedule of task {task!r} in {where}"
        fields = self._fields(what, declaration)
        if fields is None:
            return
        spec, tz, misfire, args, kwargs = fields
        schedule = ScheduleDefinition(
            id=definition_id(self.app, "notebook", name), app=self.app, task=task, name=name, spec=spec, tz=tz,
            misfire=misfire, args=list(args), kwargs=dict(kwargs), source="notebook",
        )  # fmt: skip
        self._add(schedule, what)

    def _fields(
        self, what: str, declaration: Mapping[str, Any]
    ) -> tuple[str | dict[str, Any], str, MisfirePolicy, list[EncodedValue], dict[str, EncodedValue]] | None:
        """The declaration's values as the kernel should have sent them, or None (a problem
        said why): the kernel checked them, but a kernel is only as trustworthy as its code."""
        spec = declaration.get("spec")
        if not isinstance(spec, (str, dict)):
            self.problems.append(
                f"{what}: a schedule is a str or an Anvil time_spec dict, not {shown(spec)}, e.g. {_DECORATOR_EXAMPLE}"
            )
            return None
        tz = declaration.get("tz", "UTC")
        if not isinstance(tz, str):
            self.problems.append(f'{what}: tz is a zone name, not {shown(tz)}: e.g. tz="Europe/Paris"')
            return None
        misfire = declaration.get("misfire", DEFAULT_MISFIRE)
        if misfire not in MISFIRE_POLICIES:
            self.problems.append(f'{what}: misfire is "skip" or "run_once", not {shown(misfire)}: e.g. misfire="skip"')
            return None
        args, kwargs = declaration.get("args", []), declaration.get("kwargs", {})
        if not isinstance(args, list) or not all(is_encoded(a) for a in args):
            self.problems.append(f"{what}: its args are not encoded values ({shown(args)}): {_SAME_VERSION}")
            return None
        if not isinstance(kwargs, dict) or not all(isinstance(k, str) and is_encoded(v) for k, v in kwargs.items()):
            self.problems.append(f"{what}: its kwargs are not encoded values ({shown(kwargs)}): {_SAME_VERSION}")
            return None
        return spec, tz, misfire, args, kwargs

    # -- metadata ------------------------------------------------------------------------
    def metadata(self, entries: object) -> None:
        if entries is None:
            return
        if not isinstance(entries, Sequence) or isinstance(entries, str):
            self.problems.append(
                f"{METADATA_KEY} is a list of {{task_name, job_id, time_spec}} entries as in Anvil's anvil.yaml, "
                f"not {shown(entries)}: e.g. [{_ENTRY_EXAMPLE}]"
            )
            return
        for index, entry in enumerate(entries):
            self.metadata_entry(index, entry)

    def metadata_entry(self, index: int, entry: object) -> None:
        where = f"{METADATA_KEY}[{index}]"
        if not isinstance(entry, Mapping):
            self.problems.append(
                f"{where} is an object with task_name, job_id and time_spec, not {shown(entry)}: e.g. {_ENTRY_EXAMPLE}"
            )
            return
        if _not_text(entry):
            self.problems.append(f"{where} {_NOT_TEXT}")
            return
        job_id = entry.get("job_id")
        if not isinstance(job_id, str) or not job_id.strip() or len(job_id) > NAME_LENGTH:
            missing = "has no job_id" if job_id is None else f"has the job_id {shown(job_id)}"
            self.problems.append(
                f"{where} {missing}: a job_id is a str of 1 to {NAME_LENGTH} characters naming the schedule for "
                f'good (its runs are kept under it), e.g. "job_id": "NIGHTLY1" in {_ENTRY_EXAMPLE}'
            )
            return
        where = f"{where} (job_id {job_id!r})"
        if job_id in self._job_ids:
            self.problems.append(
                f"{where} has the same job_id as {self._job_ids[job_id]}: give each entry its own "
                f'job_id, e.g. "job_id": "NIGHTLY2"'
            )
            return
        self._job_ids[job_id] = f"{METADATA_KEY}[{index}]"
        unknown = [key for key in entry if key not in _METADATA_KEYS]
        if unknown:  # said, and the entry still runs: only these keys mean anything here
            self.problems.append(
                f"{where}: {', '.join(shown(k) for k in unknown)} ignored: an entry has task_name, job_id and "
                f"time_spec, and runs in UTC as in Anvil (for a time zone or arguments, write "
                f'@server.scheduled("every day at 09:00", tz="Europe/Paris") in a server cell)'
            )
        task = entry.get("task_name")
        if task is None:
            self.problems.append(
                f'{where} has no task_name: name a background task, e.g. "task_name": "nightly" in {_ENTRY_EXAMPLE}'
            )
            return
        if not isinstance(task, str) or task not in self.tasks:
            self.problems.append(f"{where}: task_name {not_a_task(task, self.tasks, metadata=True)}")
            return
        if "time_spec" not in entry:
            self.problems.append(f"{where} has no time_spec: e.g. {_ENTRY_EXAMPLE}")
            return
        spec = wire.copy_json(entry["time_spec"])  # plain dicts, not nbformat's
        if not isinstance(spec, (str, dict)):
            self.problems.append(
                f"{where}: time_spec is an Anvil time_spec object, not {shown(spec)}: e.g. {_ENTRY_EXAMPLE}"
            )
            return
        what = f"{where}, task {task!r}"
        # Anvil's: in UTC, with no arguments; the server's default misfire (a run missed
        # while it was down runs once, where Anvil drops it)
        schedule = ScheduleDefinition(
            id=definition_id(self.app, "metadata", job_id), app=self.app, task=task, name=job_id, spec=spec, tz="UTC",
            misfire=DEFAULT_MISFIRE, args=[], kwargs={}, source="metadata",
        )  # fmt: skip
        self._add(schedule, what)

    # -- both ----------------------------------------------------------------------------
    def _add(self, schedule: ScheduleDefinition, what: str) -> None:
        """Add ``schedule``, to the broken ones if its spec or zone does not parse (``what``
        begins that problem). Its id is its own: the names and job ids were told apart."""
        self.found.where[schedule.id] = what
        try:
            parse_spec(schedule.spec, schedule.tz, seed=schedule.id)
        except ScheduleSpecError as e:
            self.problems.append(f"{what}: {e}")
            self.found.broken.append(schedule)
            return
        self.found.runnable.append(schedule)


def _not_text(value: object) -> bool:
    """Whether ``value`` holds a str the store cannot write (a lone surrogate, which JSON's
    ``"\\ud800"`` decodes to): stored with the schedule, it would fail the whole app's sync."""
    try:
        json.dumps(value, ensure_ascii=False, default=repr).encode()
    except UnicodeEncodeError:
        return True
    except (TypeError, ValueError):  # not JSON: the checks of its fields say what is wrong
        return False
    return False
