"""Scheduled tasks: background tasks launched at set times, in any time zone.

spec.py        parse a schedule (phrase, 5-field cron, Anvil time_spec) in an IANA zone:
               ``parse_spec`` returns a ``Spec`` whose ``next_after(t)`` is its next fire
               time and ``describe()`` says it in words; ``ScheduleSpecError`` says what is
               wrong, with a valid example
wallclock.py   a wall-clock time in a zone as an instant across daylight-saving changes
               (a skipped time fires once, shifted forward; a repeated one once, first)
kinds.py       the spec kinds: elapsed intervals; every N days, weeks, months at a time
phrases.py     "every day at 09:00", "every 2 weeks on friday at 17:00", ...
cron.py        5-field cron expressions (``croniter`` finds the wall-clock matches)
anvil_spec.py  Anvil's ``time_spec`` dict
records.py     what the scheduler deals in: definitions, records, runs, events, errors
checks.py      field checks of API-made schedules, with clear messages
store.py       ScheduleStore: schedules and their runs in the store, and the firing claims
firing.py      the clock, the launcher and the loop that fires due schedules once
service.py     Scheduler: keeps each app's schedules, fires them on time, once across servers
declared.py    what an app declares (``@server.scheduled`` in its load reply, its notebook's
               ``scheduled_tasks`` metadata) as definitions with stable ids, and the problems
launcher.py    TaskLauncher: a run launched as a background task naming its schedule; the
               form a schedule's arguments are kept in (encoded values)
loads.py       AppSchedules: what an app's loads (apps.py) do to its schedules
feed.py        ScheduleFeed: the scheduler's events, to the admin API's live feed

Importers name the module they use (``jupyter_anvil.host.schedules.service``): nothing is
exported here.
"""
