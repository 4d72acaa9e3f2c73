"""What a server says once its apps are loaded, however it was started (`jupyter anvil`,
`jupyter lab`, ...): which notebooks it serves to callers without a token, its schedules,
and where mail goes. Whoever starts a server must know what it exposes."""

from __future__ import annotations

import logging
import sys

from .apps import AppManager
from .mail.handling import has_email_handler
from .mail.inbound import MailServer
from .mail.outbound import MailSender
from .schedules.service import Scheduler

PREFIX = "[jupyter-anvil]"
#: an app without a page is printed with its functions' names, this many at most
MAX_FUNCTIONS_SHOWN = 8

log = logging.getLogger(__name__)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def print_apps(apps: AppManager, base: str) -> None:
    """One line per app: its page, or the URL its functions answer at, or why it failed."""
    lines = []
    for name, app in sorted(apps.apps.items()):
        if app.status != "ready":
            lines.append(f"    {name}: FAILED: {app.error}")
        elif app.spec is not None and app.spec.static_dir.is_dir():
            lines.append(f"    {name}: {base}/anvil/apps/{name}/")
        else:  # no page to show: the URL its functions answer at
            names = app.to_json()["functions"]
            shown = ", ".join(names[:MAX_FUNCTIONS_SHOWN]) + (", ..." if len(names) > MAX_FUNCTIONS_SHOWN else "")
            lines.append(f"    {name}: {base}/anvil/apps/{name}/_/call/<function> (no page; functions: {shown})")
    for problem in apps.problems:
        if problem.name is None:
            lines.append(f"    {problem.notebook}: FAILED: {problem.message}")
    if not lines:
        lines.append(f"    (none: no notebook under {apps.root} has a cell tagged 'server')")
    header = (
        f"{PREFIX} apps (server cells of the notebooks under {apps.root}), served to any caller "
        "without a token; turn them off with --AnvilApp.serve_apps=False:"
    )
    say(header + "\n" + "\n".join(lines))


async def print_schedules(schedules: Scheduler, base: str) -> None:
    """How many schedules the store holds, and how many of them this server fires."""
    try:
        records = await schedules.list()
    except Exception:
        log.exception("%s could not read the schedules", PREFIX)
        return
    here = sum(1 for r in records if r.app_loaded and r.next_run is not None)
    paused = sum(1 for r in records if r.paused)
    broken = sum(1 for r in records if r.problem is not None)
    apps = len({r.app for r in records})
    counts = (
        f"{len(records)} (of {apps} app{'' if apps == 1 else 's'}): {here} to run here, {paused} paused,"
        f" {broken} with a problem"
        if records
        else "none"
    )
    say(f"{PREFIX} schedules: {counts} (listed at {base}/anvil/api/schedules)")


def print_mail(apps: AppManager, server: MailServer, server_ip: str, sender: MailSender, relay: bool) -> None:
    """Where mail goes out and comes in: nobody should think mail went out that did not."""
    handlers = sorted(name for name, app in apps.apps.items() if has_email_handler(app.pool))
    if not handlers:
        inbound = "no app has an email handler"
    elif server.running:
        inbound = f"received on {server_ip}:{server.port} (SMTP) for {', '.join(handlers)}"
    else:
        inbound = f"NOT received ({', '.join(handlers)} have handlers; see above)"
    outbound = f"sent through the relay {sender.transport.shown}" if relay else "kept in the outbox (never sent)"
    say(f"{PREFIX} mail: {outbound}; {inbound}")
