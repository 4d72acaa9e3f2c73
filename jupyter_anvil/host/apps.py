"""The apps under the server root: load them, reload them on save, stop them on delete."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, cast, get_args

from .. import wire
from .app_changes import AppChanges
from .app_kernel import KernelLoadError
from .envs.request import EnvRequest
from .envs.service import EnvBuildFailed, EnvInfo, EnvRefused
from .logs import AppLog
from .notebooks import AppSpec, NotebookProblem, Scanner
from .pool import KernelPool, PoolLimits

if TYPE_CHECKING:
    from .api_types import AppEnv, AppInfo, ErrorLocation, ListedApp, PoolStats

log = logging.getLogger(__name__)
#: seconds calls in flight get to finish when the server stops
STOP_GRACE = 5.0
#: how soon an app whose kernels could not be had (its gateway down) is loaded again, the
#: wait doubling with each failure in a row up to the most: an outage of hours neither floods
#: the app log (two records a try) nor leaves the app unserved long after the gateway is back
RETRY_LOAD_SECONDS = 5.0
RETRY_LOAD_MAX_SECONDS = 60.0

#: where an app is: ``building`` the Python environment its requirements ask for (before
#: its first version loads), ``loading`` its first version, ``ready`` (served), ``error``
#: (not served: its error says why), ``stopped`` (its notebook was removed, or the server
#: stops). A reload that fails (its new environment's build included) leaves a ready app
#: ready, serving its previous version; a ready app whose new environment builds stays
#: ready, its ``env`` saying ``building``. (mypy checks every status assigned or compared
#: against this type: a misspelt one fails the check.)
AppStatus = Literal["building", "loading", "ready", "error", "stopped"]
APP_STATUSES: Final[tuple[AppStatus, ...]] = get_args(AppStatus)
#: the statuses of an app with a version served: ``loading`` too, while a reload asked for
#: through the admin API loads the next one
SERVED: Final[tuple[AppStatus, ...]] = ("ready", "loading")


@dataclass
class AppDefaults:
    """Server-wide defaults, overridden per app by the notebook's metadata."""

    pool: PoolLimits = field(default_factory=PoolLimits)
    call_timeout: float = 30.0


#: a new pool for a version of an app, its kernels started in the environment given (None:
#: the server's default kernel)
PoolFactory = Callable[[AppSpec, PoolLimits, EnvInfo | None], KernelPool]


class AppEnvs(Protocol):
    """What the app manager needs of the environments (host/envs/service.py's EnvService)."""

    def env_id(self, request: EnvRequest) -> str: ...

    async def ensure(self, request: EnvRequest, app: str) -> EnvInfo: ...

    def use(self, app: str, env_id: str | None) -> None: ...

    def get(self, env_id: str) -> EnvInfo | None: ...


class ServedListener(Protocol):
    """Told when a version of an app starts being served, and when none is any more (the
    scheduler's side: schedules/loads.py)."""

    async def served(self, app: str, spec: AppSpec, pool: KernelPool) -> list[str]:
        """The problems with the schedules that version declares (listed with the app); never raises."""
        ...

    def unserved(self, app: str) -> None: ...


class ServedListeners:
    """Several listeners told in turn (the scheduler's, the mail server's); the problems
    each finds are listed together."""

    def __init__(self, *listeners: ServedListener) -> None:
        self.listeners = listeners

    async def served(self, app: str, spec: AppSpec, pool: KernelPool) -> list[str]:
        problems: list[str] = []
        for listener in self.listeners:
            problems += await listener.served(app, spec, pool)
        return problems

    def unserved(self, app: str) -> None:
        for listener in self.listeners:
            listener.unserved(app)


#: what of an App its listing shows: assigning any of them tells ``on_change`` (the live
#: feed's app events), so no change of state can be forgotten at one of its many places
_LISTED: Final = frozenset(
    {"status", "error", "error_at", "spec", "pool", "env_id", "env_building", "env_failed", "notebook_problem",
     "schedule_problems"}
)  # fmt: skip


def load_error_location(notebook: str, detail: dict[str, Any]) -> ErrorLocation | None:
    """Where a load error (the kernel's wire error, app_kernel.KernelLoadError.detail) is:
    the cell that failed, by its index among all the notebook's cells (the kernel runs
    each server cell as the file ``wire.cell_file(notebook, index)``), and the line in that cell
    of the innermost frame there (the error may be raised deeper, in a function another
    cell defined)."""
    cell = detail.get("cell")
    if not isinstance(cell, int) or isinstance(cell, bool) or cell < 0:
        return None
    label = wire.cell_file(notebook, cell)
    trace = detail.get("trace")
    frames = [f for f in trace if isinstance(f, list) and len(f) == 2] if isinstance(trace, list) else []
    line = next((f[1] for f in frames if f[0] == label and isinstance(f[1], int)), None)  # innermost first
    return {"notebook": notebook, "cell": cell, "line": line}


class App:
    """One app: its current spec, the pool serving it, and its state."""

    def __init__(self, name: str, envs: AppEnvs | None = None, on_change: Callable[[], None] | None = None) -> None:
        #: told whenever what the app's listing shows changes (set first: every assignment tells it)
        self.on_change: Callable[[], None] = on_change or (lambda: None)
        self.name = name
        self.envs = envs
        #: the environment the version served runs in (None: the server's default kernel)
        self.env_id: str | None = None
        #: the request of an environment being built for a newer version, while it builds
        self.env_building: EnvRequest | None = None
        #: the environment whose build failed last (its log says why), until one is built
        self.env_failed: str | None = None
        self.spec: AppSpec | None = None
        self.pool: KernelPool | None = None
        self.status: AppStatus = "loading"
        self.error: str | None = None
        #: where ``error`` is in the notebook (the failing cell), when it is in one
        self.error_at: ErrorLocation | None = None
        self.loaded = asyncio.Event()
        self.loading_fingerprint: str | None = None
        #: what is wrong with the notebook now, while its last good version serves on
        self.notebook_problem: str | None = None
        #: what is wrong with the schedules the version served declares (as its load found
        #: them: the others run); ``anvil/api/apps`` lists them beside ``error``
        self.schedule_problems: list[str] = []
        #: held while a loaded version is switched in: two loads never switch at once
        self.switching = asyncio.Lock()

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name in _LISTED:
            self.on_change()

    @property
    def call_timeout(self) -> float | None:
        return self.spec.call_timeout if self.spec else None

    def listed(self, base_url: str) -> ListedApp:
        """The app as ``GET anvil/api/apps`` and the live feed show it."""
        return {
            **self.to_json(f"{base_url}anvil/apps/{self.name}/"),
            "schedule_problems": self.schedule_problems if self.pool is not None else [],
        }

    def to_json(self, url: str = "") -> AppInfo:
        """The app as ``GET anvil/api/apps`` shows it; ``url`` its page's."""
        return {
            "name": self.name,
            "notebook": self.spec.notebook if self.spec else None,
            "status": self.status,
            "error": self.describe_error(),
            "error_location": self.error_location(),
            "functions": sorted(self.pool.functions) if self.pool else [],  # what callers may call
            "background_tasks": sorted(self.pool.background_tasks) if self.pool else [],
            "pool": cast("PoolStats", self.pool.stats()) if self.pool else None,
            "call_timeout": self.spec.call_timeout if self.spec else None,
            "url": url,
            "env": self.env_json(),
            "requirements": list(self.spec.requirements) if self.spec else [],
            "requirements_source": self.spec.requirements_source if self.spec else None,
            "requirements_note": self.spec.requirements_note if self.spec else None,
        }

    def env_json(self) -> AppEnv | None:
        """The environment being built for the app (while one is), else the one it serves
        with, else the one whose failed build keeps it from being served."""
        if self.envs is None:
            return None
        if self.env_building is not None:
            return {"id": self.envs.env_id(self.env_building), "status": "building"}
        if self.env_id is not None:
            serving = self.envs.get(self.env_id)
            return {"id": self.env_id, "status": serving.status if serving is not None else "ready"}
        if self.env_failed is not None and self.pool is None:  # not served for want of it
            return {"id": self.env_failed, "status": "failed"}
        return None

    def error_location(self) -> ErrorLocation | None:
        """Where the error :meth:`describe_error` leads with is, if it is in the notebook."""
        if self.error:
            return self.error_at
        notebook = self.spec.notebook if self.spec else None
        if self.notebook_problem and notebook:
            return {"notebook": notebook, "cell": None, "line": None}
        if self.pool is not None and self.pool.problem and self.pool.problem_detail and notebook:
            return load_error_location(notebook, self.pool.problem_detail)
        return None

    def describe_error(self) -> str | None:
        """Everything wrong with the app now, or None: its load, its notebook, its kernels."""
        problems = [self.error] if self.error else []
        if self.notebook_problem:
            served = "the previous version is still served" if self.pool else "the app is not served"
            problems.append(f"{self.notebook_problem}; {served}")
        if self.pool is not None and self.pool.problem:
            problems.append(self.pool.problem)
        return "; ".join(problems) or None


class AppManager:
    """Keeps the served apps in step with the notebooks under ``root``."""

    def __init__(
        self,
        root: Path,
        defaults: AppDefaults,
        app_log: AppLog,
        make_pool: PoolFactory,
        envs: AppEnvs | None = None,
    ) -> None:
        self.root = root
        #: builds the environments apps with requirements run in (None: no such support)
        self.envs = envs
        self.defaults = defaults
        self.app_log = app_log
        self.make_pool = make_pool
        self.apps: dict[str, App] = {}
        self.problems: list[NotebookProblem] = []
        self.scanned = asyncio.Event()
        self._scanner = Scanner(root)
        self._loads: set[asyncio.Task[None]] = set()
        #: the first loads in a row of each app that failed for want of kernels (a gateway down)
        self._failed_loads: dict[str, int] = {}
        self._stopping = False
        #: told of each version served and of apps no longer served (set by the extension)
        self.listener: ServedListener | None = None
        #: the Jupyter server's base URL: apps' pages are under it (set by the extension)
        self.base_url = "/"
        #: each app's listing as it changes, and apps removed, for the live feed
        self.changes = AppChanges(self._listing)
        #: one scan at a time: the watcher's and a reload's
        self._syncing = asyncio.Lock()

    def _listing(self, name: str) -> ListedApp | None:
        app = self.apps.get(name)
        return app.listed(self.base_url) if app is not None else None

    def _app(self, name: str) -> App:
        """The app of that name, made (and said on the live feed) if it is new."""
        app = self.apps.get(name)
        if app is None:
            app = self.apps[name] = App(name, self.envs, lambda: self.changes.changed(name))
            self.changes.changed(name)
        return app

    def env_event(self, event: dict[str, Any]) -> None:
        """The environment service's event: when an environment's status changed, the apps
        serving with it show it (the live feed's app events)."""
        if event.get("type") != "env":
            return
        env = event.get("env")
        env_id = env.get("id") if isinstance(env, dict) else getattr(env, "id", None)
        for name, app in self.apps.items():
            if env_id is not None and app.env_id == env_id:
                self.changes.changed(name)

    async def get(self, name: str) -> App | None:
        await self.scanned.wait()
        return self.apps.get(name)

    def limits_for(self, spec: AppSpec) -> PoolLimits:
        """The server's pool limits with the notebook's ``kernels`` over them."""
        pool = self.defaults.pool
        kmin = spec.kernels_min if spec.kernels_min is not None else pool.min
        kmax = spec.kernels_max if spec.kernels_max is not None else max(pool.max, kmin)
        return replace(pool, min=kmin, max=max(kmax, 1))

    # -- following the notebooks ------------------------------------------------------
    async def sync(self) -> list[asyncio.Task[None]]:
        """Scan once and start whatever loads, reloads and stops that calls for."""
        async with self._syncing:
            specs, problems = await asyncio.get_running_loop().run_in_executor(None, self._scanner.scan)
            return self._follow(specs, problems)

    def _follow(self, specs: dict[str, AppSpec], problems: list[NotebookProblem]) -> list[asyncio.Task[None]]:
        self.problems = problems
        started: list[asyncio.Task[None]] = []
        blocked = {p.name for p in problems if p.name}
        for name, app in list(self.apps.items()):
            if name not in specs and name not in blocked:
                del self.apps[name]
                self.changes.removed(name)
                started.append(self._spawn(self._stop(app, "its notebook was removed")))
        # a notebook that is unreadable for now (or has bad metadata) serves its last good
        # version on, with the problem reported under the app's name
        stale = {p.name: p for p in problems if p.previous is not None and p.name in specs}
        for problem in problems:
            if problem.name is None or problem.name in stale:
                continue
            app = self._app(problem.name)
            message = f"{problem.notebook}: {problem.message}"
            app.notebook_problem = None  # the problem now stops the app: said in its error
            if app.status != "error" or app.error != message:
                self._fail(app, message, {"notebook": problem.notebook, "cell": None, "line": None})
                if app.pool is not None:
                    pool, app.pool = app.pool, None
                    self._unserved(app.name)
                    self._env_unserved(app)
                    started.append(self._spawn(pool.drain(self.defaults.call_timeout)))
                app.loading_fingerprint = None
        for name, spec in specs.items():
            app = self._app(name)
            self._note_notebook_problem(app, stale.get(name))
            fingerprint = spec.fingerprint
            if fingerprint != app.loading_fingerprint:
                app.loading_fingerprint = fingerprint
                started.append(self._spawn(self._load(app, spec)))
        self.scanned.set()
        return started

    def _note_notebook_problem(self, app: App, problem: NotebookProblem | None) -> None:
        message = f"{problem.notebook}: {problem.message}" if problem is not None else None
        if message == app.notebook_problem:
            return
        if message is not None:
            self.app_log.write(app.name, "(load)", "-", "system", f"{message}; still serving the version read before")
        elif app.notebook_problem is not None:
            self.app_log.write(app.name, "(load)", "-", "system", "the notebook is readable and valid again")
        app.notebook_problem = message

    async def watch(self, interval: float) -> None:
        while not self._stopping:
            try:
                await self.sync()
            except Exception:
                log.exception("[jupyter-anvil] scanning %s failed", self.root)
            await asyncio.sleep(interval)

    def _spawn(self, work: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._loads.add(task)
        task.add_done_callback(self._loads.discard)
        return task

    # -- loading -----------------------------------------------------------------------------
    async def _load(self, app: App, spec: AppSpec) -> None:
        """Warm a new pool with ``spec``; switch to it only if it loads."""
        fingerprint = spec.fingerprint
        first = app.pool is None
        env = await self._build_env(app, spec, fingerprint, first)
        if env is False:
            return
        if self._overtaken(app, fingerprint):
            return  # a newer save came while the environment built: that load goes on
        self.app_log.write(app.name, "(load)", "-", "system", f"loading {spec.notebook}")
        if app.status == "building":
            app.status = "loading"
        pool = self.make_pool(spec, self.limits_for(spec), env)
        pool.on_problem = lambda stream, text: self.app_log.write(app.name, "(load)", "-", stream, text)
        pool.on_change = lambda: self.changes.changed(app.name)  # its kernels busy, idle, started...
        try:
            await pool.start()
        except KernelLoadError as e:
            if e.traceback:
                self.app_log.write(app.name, "(load)", "-", "traceback", e.traceback)
            self._load_failed(app, spec, str(e), first, load_error_location(spec.notebook, e.detail))
            if e.retry and first:  # a kernel gateway that is down: loaded again once it may be back
                tries = self._failed_loads[app.name] = self._failed_loads.get(app.name, 0) + 1
                self._spawn(
                    self._reload_later(app.name, min(RETRY_LOAD_SECONDS * 2 ** (tries - 1), RETRY_LOAD_MAX_SECONDS))
                )
            return
        except Exception as e:
            log.exception("[jupyter-anvil] app %s failed to start", app.name)
            self._load_failed(app, spec, f"{type(e).__name__}: {e}", first)
            return
        async with app.switching:
            if self._overtaken(app, fingerprint):
                await pool.drain(0)  # a newer save (or a stop) overtook this load
                return
            problems = await self._served(app.name, spec, pool)
            if self._overtaken(app, fingerprint):  # while its schedules were synced
                await pool.drain(0)
                if app.pool is not None and app.spec is not None and app.status in SERVED and not self._gone(app):
                    # the version served goes on: its schedules again (a newer load syncs its own)
                    app.schedule_problems = await self._served(app.name, app.spec, app.pool)
                else:  # the sync must not leave an app that is not served firing
                    self._unserved(app.name)
                return
            old, app.pool, app.spec = app.pool, pool, spec
            self._failed_loads.pop(app.name, None)
            app.status, app.error, app.error_at, app.schedule_problems = "ready", None, None, problems
            app.env_id = env.id if env is not None else None
            self._use_env(app.name, app.env_id)
            app.loaded.set()
        self.app_log.write(app.name, "(load)", "-", "system", f"serving {spec.notebook}: {sorted(pool.functions)}")
        for problem in problems:
            self.app_log.write(app.name, "(load)", "-", "system", f"schedules: {problem}")
        if old is not None:
            await old.drain(self.defaults.call_timeout)

    async def _build_env(
        self, app: App, spec: AppSpec, fingerprint: str, first: bool
    ) -> EnvInfo | Literal[False] | None:
        """The environment ``spec``'s requirements ask for, built (or found built); None
        when it asks for none; False when it cannot be had (said on the app)."""
        request = spec.env_request
        if request.empty:
            return None
        if self.envs is None:
            self._load_failed(app, spec, "this server has no support for per-app Python packages", first)
            return False
        if first:
            app.status, app.error, app.error_at = "building", None, None
        app.env_building = request
        shown = ", ".join(request.requirements) + (f" on Python {request.python}" if request.python else "")
        self.app_log.write(app.name, "(load)", "-", "system", f"environment for {spec.notebook}: {shown}")
        try:
            env = await self.envs.ensure(request, app.name)
        except Exception as e:
            if isinstance(e, EnvRefused):  # nothing was built: no environment, no log to point at
                if not self._overtaken(app, fingerprint):
                    self._load_failed(app, spec, str(e), first)
                return False
            if isinstance(e, EnvBuildFailed):
                message = str(e)  # the installer's own
            else:
                log.exception("[jupyter-anvil] app %s: building its environment failed", app.name)
                message = f"{type(e).__name__}: {e}"
            if not self._overtaken(app, fingerprint):
                app.env_failed = self.envs.env_id(request)  # its log tells the whole story
                self._load_failed(app, spec, f"building its Python environment failed: {message}", first)
            return False
        finally:
            if app.env_building is request:
                app.env_building = None
        app.env_failed = None
        self.app_log.write(app.name, "(load)", "-", "system", f"environment {env.id} ready")
        return env

    def _env_unserved(self, app: App) -> None:
        """``app`` serves with no environment now (unless another app of its name does)."""
        app.env_id = None
        if self.apps.get(app.name) in (None, app):
            self._use_env(app.name, None)

    def _use_env(self, name: str, env_id: str | None) -> None:
        if self.envs is None:
            return
        try:
            self.envs.use(name, env_id)
        except Exception:  # bookkeeping of last use: never a reason to fail a load
            log.exception("[jupyter-anvil] app %s: recording its environment's use failed", name)

    def _overtaken(self, app: App, fingerprint: str) -> bool:
        """A newer save, a stop or the notebook's removal came while ``app`` loaded ``fingerprint``."""
        return app.loading_fingerprint != fingerprint or self._gone(app)

    def _gone(self, app: App) -> bool:
        """The server stops, or ``app`` is no longer the app of its name (its notebook was removed)."""
        return self._stopping or self.apps.get(app.name) is not app

    async def _served(self, name: str, spec: AppSpec, pool: KernelPool) -> list[str]:
        if self.listener is None:
            return []
        try:
            return await self.listener.served(name, spec, pool)
        except Exception as e:  # the listener says its own problems; this is a bug of its
            log.exception("[jupyter-anvil] app %s: its served listener failed", name)
            return [f"{type(e).__name__}: {e}"]

    def _unserved(self, name: str) -> None:
        if self.listener is not None:
            try:
                self.listener.unserved(name)
            except Exception:
                log.exception("[jupyter-anvil] app %s: its unserved listener failed", name)

    def _load_failed(
        self, app: App, spec: AppSpec, message: str, first: bool, where: ErrorLocation | None = None
    ) -> None:
        self.app_log.write(app.name, "(load)", "-", "system", f"failed to load {spec.notebook}: {message}")
        if first:
            app.spec = spec
            self._fail(app, message, where)
        else:
            # the previous version keeps serving; the failure is reported beside it
            app.error_at = where
            app.error = f"reload failed, still serving the previous version: {message}"
            if app.status == "loading":  # a reload asked for: the version served goes on
                app.status = "ready"

    def _fail(self, app: App, message: str, where: ErrorLocation | None = None) -> None:
        app.status, app.error, app.error_at = "error", message, where
        app.loaded.set()

    async def _reload_later(self, name: str, delay: float) -> None:
        await asyncio.sleep(delay)
        app = self.apps.get(name)
        if app is not None and app.status == "error" and app.pool is None:
            await self.reload(name)

    async def reload(self, name: str) -> App | None:
        """Read ``name``'s notebook again and load it again, as a save does (None: no such
        app). Its status is ``loading`` until the new version serves (the version served
        until then goes on serving) or fails."""
        app = await self.get(name)
        if app is None:
            return None
        if app.spec is not None:
            self._scanner.forget(self.root / app.spec.notebook)
        if app.status not in ("loading", "building") or app.loading_fingerprint is None:
            # a load already under way is not doubled (reloads asked in a row start one):
            # the notebook is read again all the same, and a change in it loads as a save does
            app.loading_fingerprint = None  # the same cells load again
            app.status, app.error, app.error_at = "loading", None, None
        await self.sync()
        return app

    async def _stop(self, app: App, reason: str, grace: float | None = None) -> None:
        app.status, app.error, app.error_at = "stopped", reason, None
        app.loaded.set()
        self._unserved(app.name)
        self._env_unserved(app)
        self.app_log.write(app.name, "(load)", "-", "system", f"stopped: {reason}")
        pool, app.pool = app.pool, None
        if pool is not None:
            await pool.drain(self.defaults.call_timeout if grace is None else grace)

    async def stop_all(self) -> None:
        self._stopping = True
        for task in list(self._loads):
            task.cancel()
        await asyncio.gather(
            *(self._stop(app, "the server is stopping", grace=STOP_GRACE) for app in self.apps.values()),
            return_exceptions=True,
        )
