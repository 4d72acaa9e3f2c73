"""The Jupyter Server extension: configuration and wiring only."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import sys
import uuid
from pathlib import Path
from typing import Any

from jupyter_client.manager import AsyncKernelManager
from jupyter_core.paths import jupyter_data_dir, jupyter_runtime_dir
from jupyter_server.extension.application import ExtensionApp
from jupyter_server.serverapp import ServerApp
from traitlets import Bool, Dict, Float, Int, List, Type, Unicode

from .. import __version__
from ..protocol import BACKGROUND_TASK, LoadSettings, log_name
from . import gateway
from .app_kernel import SECRET_ENV, AppKernel
from .apps import AppDefaults, AppManager, ServedListeners
from .calls import CallService
from .cookies import CookieSealer, CookieTickets
from .envs.service import EnvInfo, EnvService
from .feed import EventFeed
from .handlers import routes, socket_limits
from .handlers.socket_limits import MediaBudget
from .host_services import HostServices
from .idempotency import Idempotency, IdempotencyLimits
from .instances import ServerInstances
from .logs import AppLog
from .mail.dkim_check import DnsFunc, records_resolver
from .mail.handling import MailHandling
from .mail.inbound import MailServer
from .mail.listener import StartOnHandler
from .mail.outbound import MailSender
from .mail.relay import RelayConfig
from .mail.routing import MailRouter
from .mail.send_call import host_services as mail_host_services
from .mail.store import MailEvent, MailStore
from .mail.transport import Outbox, SmtpRelay, Transport
from .notebooks import AppSpec
from .pool import KernelPool, PoolLimits
from .schedules.feed import ScheduleFeed
from .schedules.launcher import TaskLauncher
from .schedules.loads import AppSchedules
from .schedules.service import Scheduler
from .services import Lifecycle, Services, start_services, stop_services
from .session_calls import host_services as session_host_services
from .sessions import SessionService
from .startup_report import PREFIX, print_apps, print_mail, print_schedules
from .store import Store, StoreError, TaskStore, secure_folder
from .task_calls import host_services as task_host_services
from .tasks import TaskLimits, TaskService

COOKIE_KEYS_FILE = "cookie_keys"


def default_mail_domain() -> str:
    """The domain of the default sender when none is configured: this machine's name."""
    return platform.node() or "localhost"


def data_folder() -> Path:
    """Where jupyter-anvil keeps its database and keys."""
    return Path(jupyter_data_dir()) / "jupyter_anvil"


class AnvilApp(ExtensionApp):
    """Serve every notebook with ``server`` cells under the root as an Anvil-style app."""

    name = "jupyter_anvil"
    app_name = "jupyter anvil"
    description = __doc__
    version = __version__
    load_other_extensions = True

    kernel_manager_class = Type(
        default_value=AsyncKernelManager,
        klass=AsyncKernelManager,
        help="Kernel manager class of app kernels (unused when GatewayClient.url is set: the gateway starts them).",
    ).tag(config=True)
    kernel_name = Unicode("python3", help="Kernel spec app kernels run.").tag(config=True)
    kernel_transport = Unicode("ipc", help="ZeroMQ transport to local kernels: 'ipc' (fastest) or 'tcp'.").tag(
        config=True
    )
    kernels_min = Int(1, help="Warm kernels per app (metadata.jupyter_anvil.kernels.min overrides).").tag(config=True)
    kernels_max = Int(4, help="Most kernels per app under load (metadata.jupyter_anvil.kernels.max overrides).").tag(
        config=True
    )
    calls_per_kernel = Int(4, help="Calls one kernel runs at once, each on its own thread.").tag(config=True)
    queue_size = Int(100, help="Calls that may wait for a busy app before more are refused with 503.").tag(config=True)
    idle_seconds = Float(60.0, help="Kernels beyond the minimum are shut down after this long idle.").tag(config=True)
    websocket_media_mib = Int(
        socket_limits.DEFAULT_SERVER_MEDIA_MIB,
        help="MiB of Media arriving over WebSockets the server holds at once; calls past it are refused.",
    ).tag(config=True)
    call_timeout = Float(
        30.0,
        help="Seconds a call may run before its kernel is retired (metadata.jupyter_anvil.call_timeout overrides).",
    ).tag(config=True)
    load_timeout = Float(120.0, help="Seconds a kernel may take to start and run the server cells.").tag(config=True)
    watch_interval = Float(1.0, help="Seconds between checks of the notebooks for saves.").tag(config=True)
    log_records_per_app = Int(5000, help="App log records kept per app.").tag(config=True)
    print_apps = Bool(True, help="Print the URL of every app (and every failure) once loaded.").tag(config=True)
    serve_apps = Bool(
        True,
        help="Serve the notebooks' apps (to callers without a token). False: no app is loaded, no kernel "
        "started, app URLs answer 404; the admin API still answers (and says apps are off).",
    ).tag(config=True)
    database_url = Unicode("", help="SQLAlchemy URL of the store (default: SQLite in the Jupyter data folder).").tag(
        config=True
    )
    session_idle_minutes = Float(30.0, help="Sessions expire after this many idle minutes.").tag(config=True)
    cookie_keys_file = Unicode(
        "",
        help="File of cookie encryption keys, newest first (default: in the Jupyter data folder, made at the "
        "first start). Servers behind one address must share it: point each at one copy of the file (a "
        "shared mount, or the file copied to each machine, owner-only); a cookie sealed by a server with "
        "other keys is taken for absent. Read at start: after `jupyter anvil rotate-cookie-key FILE`, "
        "copy it to each machine and restart every server.",
    ).tag(config=True)
    task_concurrency = Int(4, help="Background tasks one app runs at once; more wait in launch order.").tag(config=True)
    task_spares = Int(1, help="Warm kernels kept ready per app for background tasks.").tag(config=True)
    task_timeout = Float(0.0, help="Seconds a background task may run (0: no limit).").tag(config=True)
    task_output_limit = Int(1_000_000, help="Characters of printed output kept per background task.").tag(config=True)
    task_records_kept = Int(1000, help="Finished background task records kept (newest first).").tag(config=True)
    task_records_days = Float(30.0, help="Finished background task records older than this are dropped.").tag(
        config=True
    )
    schedule_grace_seconds = Float(
        3600.0,
        help="A schedule with misfire 'run_once' runs once at start-up if its latest run missed while no "
        "server ran it is at most this many seconds old (else the missed runs are skipped).",
    ).tag(config=True)
    schedule_history = Int(100, help="Runs kept in each schedule's history (the newest).").tag(config=True)
    # -- several servers over one store ------------------------------------------------------
    server_heartbeat_seconds = Float(
        5.0,
        help="Seconds between this server's heartbeats in the store; at each, it also looks for servers "
        "sharing the store that are gone (and marks their running tasks 'missing').",
    ).tag(config=True)
    server_gone_seconds = Float(
        60.0,
        help="A server on another host whose heartbeat is older than this is taken for gone: within this "
        "plus server_heartbeat_seconds after it died, a live server marks its running tasks 'missing' and "
        "the mail it was handling failed (its schedules never wait: any live server fires them). A server "
        "on this host is known gone at the next heartbeat, by its process. At least twice "
        "server_heartbeat_seconds; the clocks of the servers must agree within it.",
    ).tag(config=True)
    # -- email -------------------------------------------------------------------------------
    smtp_relay_url = Unicode(
        "",
        help="Mail relay that email.send hands messages to: smtp://user@host:587 (STARTTLS when offered), "
        "smtps://user@host:465 (TLS), smtp+plain://host:25 (never encrypted: local test relays only). "
        "Empty (the default): the outbox, where messages are kept and listed (anvil/api/mail), never sent.",
    ).tag(config=True)
    smtp_relay_password = Unicode(
        "", help="Password for the relay's user (default: the environment variable JUPYTER_ANVIL_SMTP_PASSWORD)."
    ).tag(config=True)
    smtp_relay_ca_file = Unicode(
        "", help="PEM file of the certificate authority to trust for the relay's TLS (default: the system's)."
    ).tag(config=True)
    mail_from_domain = Unicode(
        "", help="Domain of the default sender, no-reply@<domain> (default: this machine's name)."
    ).tag(config=True)
    mail_retry_seconds = Float(
        120.0, help="Seconds email.send retries a relay that is down or answers a temporary failure."
    ).tag(config=True)
    smtp_server_ip = Unicode("127.0.0.1", help="Address the inbound SMTP server listens on.").tag(config=True)
    smtp_server_port = Int(
        8025, help="Port of the inbound SMTP server, started once an app has an email handler (0: off)."
    ).tag(config=True)
    mail_domain = Unicode(
        "",
        help="Mail domain of the apps: <anything>@<app>.<mail_domain> reaches the app (as <app>@<any domain> "
        "and <app>+tag@<any domain> always do).",
    ).tag(config=True)
    mail_routes = Dict(
        key_trait=Unicode(),
        value_trait=Unicode(),
        help="Recipients routed to apps, checked first: {'support@example.com': 'helpdesk', "
        "'@example.org': 'catchall'}.",
    ).tag(config=True)
    mail_max_bytes = Int(25 * 1024 * 1024, help="Largest message sent or received, in bytes (larger: 552).").tag(
        config=True
    )
    mail_handler_timeout = Float(
        45.0, help="Seconds an email handler may run before the sender is answered 451 (try later)."
    ).tag(config=True)
    mail_dkim_test_records = Unicode(
        "", help="Tests only: a JSON file {TXT record name: text} answering DKIM key lookups instead of DNS."
    ).tag(config=True)
    mail_kept = Int(1000, help="Messages kept per app in each of outbox, sent and inbox (the newest).").tag(config=True)
    mail_days = Float(30.0, help="Messages older than this many days are dropped.").tag(config=True)
    # -- Python packages per app -------------------------------------------------------------
    env_installer = Unicode(
        "auto",
        help="What installs an app's requirements: 'uv', 'pip', or 'auto' (uv if the machine has it, else pip).",
    ).tag(config=True)
    env_installer_args = List(
        Unicode(),
        help="Options added to every install, e.g. ['--no-index', '--find-links', '/wheels'] or "
        "['--index-url', 'https://pypi.example.com/simple'].",
    ).tag(config=True)
    env_build_timeout = Float(600.0, help="Seconds an environment's build may take before it is stopped.").tag(
        config=True
    )
    env_keep_days = Float(14.0, help="Environments no app has used for this many days are removed.").tag(config=True)
    envs_dir = Unicode("", help="Where apps' environments are built (default: envs in the Jupyter data folder).").tag(
        config=True
    )
    # -- offline clients: calls sent with an idempotency key run once ---------------------------
    idempotency_hours = Float(
        24.0,
        help="Hours the outcome of a call sent with an Idempotency-Key is kept after it finished, so a replay "
        "of the key gets it instead of running the call again (0: not kept after the reply).",
    ).tag(config=True)
    idempotency_max_bytes = Int(
        16 * 1024 * 1024,
        help="Largest outcome kept for a replay, in bytes, Media included; a replay of a larger one gets "
        "an error saying the call ran but its result was too large to keep.",
    ).tag(config=True)
    idempotency_kept = Int(
        100_000, help="Idempotency keys kept per app; past it the oldest finished ones are dropped first."
    ).tag(config=True)
    idempotency_total_bytes = Int(
        1024 * 1024 * 1024,
        help="Bytes of kept outcomes per app, all together; past it the oldest finished ones are dropped first.",
    ).tag(config=True)

    shared_cookie_domain = Unicode(
        "", help="Parent domain of server.cookies.shared (e.g. example.com); default: this host only."
    ).tag(config=True)

    #: the notebook watcher: the extension's own loop, started after every service, cancelled first
    _watcher: asyncio.Future[None] | None = None

    @property
    def server(self) -> ServerApp:
        assert self.serverapp is not None, "the extension is linked to a server before it runs"
        return self.serverapp

    def initialize_settings(self) -> None:
        idempotency_limits = self._idempotency_limits()  # checked before anything is opened
        leaked = gateway.secrets_sent_to_kernels(SECRET_ENV)
        if leaked:
            listed = ", ".join(leaked)
            reason = "the server's credentials never go to kernels (server code could read them there)"
            print(f"{PREFIX} --GatewayClient.allowed_envs lists {listed}: {reason}", file=sys.stderr, flush=True)
            raise SystemExit(2)
        root = Path(self.server.root_dir).resolve()
        pool = PoolLimits(
            min=self.kernels_min,
            max=self.kernels_max,
            calls_per_kernel=self.calls_per_kernel,
            queue_size=self.queue_size,
            idle_seconds=self.idle_seconds,
            task_spares=self.task_spares,
        )
        defaults = AppDefaults(pool, self.call_timeout)
        secure_folder(data_folder())  # the store and the cookie keys: the owner's alone
        self.store = self._open_store()
        self.app_log = AppLog(self.store, self.log_records_per_app)
        #: the environments' events (status changes, build output) for the live feed
        self.env_feed: EventFeed[dict[str, Any]] = EventFeed("environments feed")
        self.envs = self._env_service()
        self.apps = AppManager(root, defaults, self.app_log, self._make_pool, self.envs)
        self.apps.base_url = self.server.base_url  # the live feed lists apps with their pages' URLs
        self.env_feed.subscribe(self.apps.env_event)
        self.sessions = SessionService(self.store, self.session_idle_minutes * 60)
        task_limits = TaskLimits(
            concurrency=self.task_concurrency,
            timeout=self.task_timeout,
            output_limit=self.task_output_limit,
            records_kept=self.task_records_kept,
            records_days=self.task_records_days,
        )
        self.instances = self._instances()
        self.tasks = TaskService(self.apps, TaskStore(self.store), self.sessions, task_limits, self.instances)
        self.schedule_feed = ScheduleFeed()
        self.schedules = Scheduler(
            self.store,
            TaskLauncher(self.tasks, self.app_log),
            grace_seconds=self.schedule_grace_seconds,
            history_limit=max(self.schedule_history, 1),
            on_event=self.schedule_feed.publish,
            server_id=self.instances.id,
        )
        self.mail_feed: EventFeed[MailEvent] = EventFeed("mail feed")
        self.mail = MailStore(self.store, self.mail_feed.publish, kept=self.mail_kept, days=self.mail_days)
        # what server code may know of the configuration (never a secret: kernels run app code)
        self.kernel_settings: LoadSettings = {
            "mail_from_domain": self.mail_from_domain or default_mail_domain(),
            "mail_max_bytes": self.mail_max_bytes,
        }
        self.mail_sender = MailSender(
            self.mail,
            self._mail_transport(),
            retry_seconds=self.mail_retry_seconds,
            max_bytes=self.mail_max_bytes,
            server_id=self.instances.id,
            owner_is_gone=self.instances.is_gone,
        )
        # the reserved functions the host answers itself: a new one is one entry here
        host_services = HostServices(
            [*task_host_services(self.tasks), *mail_host_services(self.mail_sender), *session_host_services()]
        )
        self.idempotency = Idempotency(self.store, self.instances, idempotency_limits)
        self.calls = CallService(self.apps, self.app_log, self.sessions, host_services, self.idempotency)
        self.mail_handling = MailHandling(
            self.apps, self.sessions, self.app_log, self.mail, timeout=self.mail_handler_timeout
        )
        self.mail_server = MailServer(
            self.mail,
            MailRouter(self.mail_domain or None, dict(self.mail_routes), lambda: list(self.apps.apps)),
            self.mail_handling,
            host=self.smtp_server_ip,
            port=self.smtp_server_port,
            max_bytes=self.mail_max_bytes,
            dnsfunc=self._dkim_test_resolver(),
            server_id=self.instances.id,
            owner_is_gone=self.instances.is_gone,
        )
        # what a crashed server sharing the store left, once it is found gone: the inbound mail
        # it was handling is marked failed; the mail it was sending is sent by one live server
        self.instances.on_gone(self.mail_server.sweep)
        self.instances.on_gone(self.mail_sender.resume)
        self.apps.listener = ServedListeners(
            AppSchedules(self.schedules),
            StartOnHandler(self.mail_server, self.app_log, enabled=self.smtp_server_port != 0),
        )
        # Started top to bottom, and stopped top to bottom: tasks before the pools (a pool
        # must still be open while task kernels go, or a replacement it starts then could
        # outlive the server); the app log, then the store, last, so every step before
        # them can still write. A new service is one line here.
        self.lifecycle = [
            # stopped first: no mail is taken in for kernels about to stop. Started (listening)
            # once an app with a handler is served; its start here only marks mail a previous
            # run left unanswered.
            Lifecycle("receiving mail", self.mail_server.sweep, self.mail_server.stop, 2.5),
            # stopped first: no run is launched into a task service that is stopping. Started
            # first too, which costs nothing: it fires only the schedules of apps served here,
            # and apps are loaded by the notebook watcher, started after every service.
            Lifecycle("the scheduler", self.schedules.start, lambda: self.schedules.stop(timeout=2.0), 2.5),
            Lifecycle("background tasks", self.tasks.start, lambda: self.tasks.stop(timeout=4.0), 6.5),
            Lifecycle("the mail records", self.mail.start, None, 0.0),
            # resumes the mail a previous run left waiting for the relay; stops retrying at once
            Lifecycle("sending mail", self.mail_sender.start, lambda: self.mail_sender.stop(timeout=2.0), 2.5),
            # stopped before the kernels: a build under way is killed (its folder removed), and
            # the load that waited for it ends at once
            # (the service prunes unused ones itself, once the apps have loaded and said which they use)
            Lifecycle("environments", self.envs.start, self.envs.stop, 3.0),
            Lifecycle("app kernels", None, self.apps.stop_all, 6.5),  # the notebook watcher starts apps
            Lifecycle("the app log", self.app_log.start, lambda: self.app_log.stop(timeout=2.0), 2.5),
            Lifecycle("sessions", self.sessions.start, self.sessions.stop, 1.0),  # a cancel: at once
            # prunes expired keys and ends the claims of servers that are gone (after background
            # tasks started: this server is registered then); its stop is a cancel
            Lifecycle("idempotency keys", self.idempotency.start, self.idempotency.stop, 1.0),
            # a plain function the loop cannot cut short: the store bounds its own close (last,
            # so blocking the loop here holds up nothing)
            Lifecycle("the store", None, lambda: self.store.close(timeout=2.0), 2.0),
        ]
        cookie_keys = Path(self.cookie_keys_file) if self.cookie_keys_file else data_folder() / COOKIE_KEYS_FILE
        self.settings["jupyter_anvil"] = Services(
            self.apps,
            self.calls,
            self.app_log,
            self.sessions,
            CookieSealer(cookie_keys, self.shared_cookie_domain),
            CookieTickets(),
            self.tasks,
            # one per server: every WebSocket connection's Media counts against it
            MediaBudget(self.websocket_media_mib * socket_limits.MIB),
            self.schedules,
            self.schedule_feed,
            self.mail,
            self.mail_feed,
            self.envs,
            self.env_feed,
        )

    def _idempotency_limits(self) -> IdempotencyLimits:
        """The bounds of kept outcomes; a negative one stops the server, said plainly (a
        traitlets validator would only unlink the extension, leaving a server with no apps)."""
        for name in ("idempotency_hours", "idempotency_max_bytes", "idempotency_kept", "idempotency_total_bytes"):
            value = getattr(self, name)
            if value < 0 or value != value:  # NaN too
                print(f"{PREFIX} --AnvilApp.{name} cannot be negative (got {value})", file=sys.stderr, flush=True)
                raise SystemExit(2)
        return IdempotencyLimits(
            self.idempotency_hours * 3600,
            self.idempotency_max_bytes,
            self.idempotency_kept,
            self.idempotency_total_bytes,
        )

    def _instances(self) -> ServerInstances:
        """This server among those sharing the store; a heartbeat that is no positive number
        of seconds stops the server, said in one line."""
        beat = self.server_heartbeat_seconds
        if not 0 < beat < float("inf"):
            message = f"{PREFIX} --AnvilApp.server_heartbeat_seconds must be above 0 (got {beat})"
            print(message, file=sys.stderr, flush=True)
            raise SystemExit(2)
        gone = self.server_gone_seconds
        if not gone >= 2 * beat:  # NaN too: a bound under two beats takes a server a little late for gone
            gone = 2 * beat
        return ServerInstances(self.store, beat_every=beat, stale_after=gone)

    def _open_store(self) -> Store:
        """The store at this release's schema; a database it cannot use or reach stops the
        server, said in one line (its URL without the password), not a traceback."""
        try:
            store = Store(self.database_url or f"sqlite:///{data_folder() / 'anvil.db'}")
            store.create_schema()
        except StoreError as e:
            print(f"{PREFIX} --AnvilApp.database_url: {e}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        return store

    def _env_service(self) -> EnvService:
        """The environments' service; options it cannot use stop the server, said plainly."""
        try:
            return EnvService(
                Path(self.envs_dir) if self.envs_dir else data_folder() / "envs",
                installer=self.env_installer,
                installer_args=self._installer_args(),
                build_timeout=self.env_build_timeout,
                keep_days=self.env_keep_days,
                on_event=self.env_feed.publish,
            )
        except (TypeError, ValueError) as e:
            print(f"{PREFIX} --AnvilApp.env_*: {e}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None

    def _installer_args(self) -> tuple[str, ...]:
        """``env_installer_args`` as given: the option repeated (one item each), or one JSON
        list (``'--AnvilApp.env_installer_args=["--no-index", "--find-links", "/wheels"]'``,
        which the command line hands over as a single string)."""
        args = list(self.env_installer_args)
        if len(args) == 1 and args[0].lstrip().startswith("["):
            try:
                parsed = json.loads(args[0])
            except ValueError:
                parsed = None
            if not isinstance(parsed, list) or not all(isinstance(a, str) for a in parsed):
                print(f"{PREFIX} --AnvilApp.env_installer_args: not a JSON list of strings", file=sys.stderr)
                raise SystemExit(2)
            args = parsed
        return tuple(args)

    def _dkim_test_resolver(self) -> DnsFunc | None:
        """Tests only: DKIM key lookups answered from a JSON file instead of DNS."""
        if not self.mail_dkim_test_records:
            return None
        return records_resolver(json.loads(Path(self.mail_dkim_test_records).read_text()))

    def _mail_transport(self) -> Transport:
        """The relay named by ``smtp_relay_url``, else the outbox. A URL that cannot be used
        stops the server: mail someone expects to go out must not silently stay here."""
        if not self.smtp_relay_url:
            print(
                f"{PREFIX} mail is kept in the outbox, never sent (anvil/api/mail?box=outbox);"
                " to deliver it, set --AnvilApp.smtp_relay_url",
                file=sys.stderr,
                flush=True,
            )
            return Outbox()
        try:
            config = RelayConfig.from_url(
                self.smtp_relay_url, self.smtp_relay_password or None, ca_file=self.smtp_relay_ca_file or None
            )
        except ValueError as e:
            print(f"{PREFIX} --AnvilApp.smtp_relay_url: {e}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        print(f"{PREFIX} mail is sent through the relay {config.shown}", file=sys.stderr, flush=True)
        return SmtpRelay(config)

    def initialize_handlers(self) -> None:
        self.handlers.extend(routes.anvil_handlers(self.serve_apps))

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:  # type: ignore[override]
        await start_services(self.lifecycle)
        if not self.serve_apps:
            print(f"{PREFIX} apps are off (--AnvilApp.serve_apps=False): no notebook is served", file=sys.stderr)
            return
        self._watcher = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        loads = await self.apps.sync()
        if self.print_apps:
            await asyncio.gather(*loads, return_exceptions=True)
            base = self.server.connection_url.rstrip("/")
            print_apps(self.apps, base)
            await print_schedules(self.schedules, base)
            print_mail(self.apps, self.mail_server, self.smtp_server_ip, self.mail_sender, bool(self.smtp_relay_url))
        await asyncio.sleep(self.watch_interval)
        await self.apps.watch(self.watch_interval)

    async def stop_extension(self) -> None:
        """Every service stopped in the order of ``self.lifecycle``, each bounded and its
        failure logged, never raised (about a second in all when nothing hangs, 16 s at worst)."""
        if self._watcher is not None:
            self._watcher.cancel()
        await stop_services(self.lifecycle, self.log)

    # -- kernels --------------------------------------------------------------------------
    def _make_pool(self, spec: AppSpec, limits: PoolLimits, env: EnvInfo | None) -> KernelPool:
        """The pool of one version of an app; its kernels (call and task kernels alike: the
        pool starts both) run in ``env`` when the app has one."""
        pool: KernelPool

        async def start_kernel() -> AppKernel:
            kernel = AppKernel(
                self._new_kernel_manager(env),
                spec.name,
                on_log=lambda call_id, stream, text: self._on_output(spec.name, call_id, stream, text),
                on_nested_call=self.calls.nested_call,
                on_death=lambda k: pool.kernel_died(k),
                on_task_state=self.tasks.on_state,
            )
            notebook_dir = (self.apps.root / spec.notebook).parent
            await kernel.start(
                spec.notebook, spec.cells, str(notebook_dir), self.load_timeout, settings=self.kernel_settings
            )
            return kernel

        pool = KernelPool(spec.name, limits, start_kernel)
        return pool

    def _on_output(self, app: str, call_id: str, stream: str, text: str) -> None:
        if self.mail_handling.log_output(app, call_id, stream, text):
            return
        task = self.tasks.live.get(call_id)
        if task is None:
            self.calls.log(app, call_id, stream, text)
            return
        self.app_log.write(app, log_name(BACKGROUND_TASK, task.record.name), call_id, stream, text)
        if stream in ("stdout", "stderr"):
            self.tasks.on_output(call_id, text)

    def _new_kernel_manager(self, env: EnvInfo | None = None) -> AsyncKernelManager:
        if gateway.gateway_enabled():
            # every kernel on the gateway, by its kernel spec there (an app's own env is a
            # local folder the gateway cannot see: see the README)
            return gateway.new_manager(self.kernel_name, self)
        runtime_dir = jupyter_runtime_dir()
        os.makedirs(runtime_dir, exist_ok=True)
        kernel_id = f"anvil-{uuid.uuid4().hex[:12]}"
        options: dict[str, Any] = {
            "kernel_name": self.kernel_name,
            "connection_file": os.path.join(runtime_dir, f"kernel-{kernel_id}.json"),
            "parent": self,
        }
        if env is not None:
            # the env's own kernel spec (its python running ipykernel), which only the env
            # service's spec manager knows
            options.update(kernel_name=env.kernel_name, kernel_spec_manager=self.envs.kernel_specs)
        if self.kernel_transport == "ipc":
            options.update(transport="ipc", ip=os.path.join(runtime_dir, kernel_id))
        return self.kernel_manager_class(**options)  # type: ignore[no-any-return]


main = launch_new_instance = AnvilApp.launch_instance
