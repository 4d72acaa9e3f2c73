"""Scheduled tasks: background tasks launched at set times, in any time zone.

spec.py      parse a schedule (phrase, cron line, Anvil time_spec), describe it, its next time
records.py   what the scheduler deals in: definitions, records, runs, events, errors
store.py     ScheduleStore: the schedules and their runs in the store, and the firing claims
service.py   Scheduler: keeps each app's schedules, fires them on time, once across servers

Importers name the module they use (``jupyter_anvil.host.schedules.service``): nothing is
exported here, so the modules can land one at a time.
"""
