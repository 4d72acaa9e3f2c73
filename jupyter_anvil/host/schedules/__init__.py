"""Scheduled tasks: background tasks launched on a schedule, in any time zone.

Modules:

* ``spec``: the one entry point for schedule specs: ``parse_spec`` (a phrase, a 5-field cron
  expression or Anvil's ``time_spec`` dict, plus an IANA zone) returns a ``Spec`` whose
  ``next_after(t)`` gives the next fire time and ``describe()`` says it in words;
  ``ScheduleSpecError`` says what is wrong with a spec, with a valid example.
* ``wallclock``: how a wall-clock time in a zone becomes an instant across daylight-saving
  changes (a skipped time fires once, shifted forward; a repeated time fires once, first).
* ``kinds``: the spec kinds (elapsed intervals; every N days, weeks, months at a time).
* ``phrases``: "every day at 09:00", "every 2 weeks on friday at 17:00", ...
* ``cron``: 5-field cron expressions (``croniter`` finds the wall-clock matches).
* ``anvil_spec``: Anvil's ``time_spec`` dict.

Importers use ``jupyter_anvil.host.schedules.spec``; this package exports nothing itself, so
modules added beside these (the scheduler's store and service) stay independent.
"""
