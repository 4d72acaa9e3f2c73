"""EnvService: the environments apps ask for, built in the background, one build per id at a time.

``ensure(request, app)`` answers at once for an environment already on disk (built by this
server or an earlier one: no installer runs); otherwise it starts a build, or joins the one under
way, and waits for it. Builds are bounded by ``build_timeout`` (the installer killed) and are
cancelled by ``stop()``. Status changes and the installer's output go to ``on_event`` for the
live feed. Environments no app uses are pruned after ``keep_days`` without use: by ``prune()``,
which also runs by itself every few hours while the service runs.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..gateway import gateway_enabled
from .builder import INSTALLER_CHOICES, BuildContext, BuildError, Installer, build_env, find_installer, open_log
from .cache import BUILD_LOG, EnvCache, ReadyEnv, env_id, id_material, is_env_id
from .kernelspecs import EnvKernelSpecs, kernel_name
from .request import EnvRequest

log = logging.getLogger(__name__)

EnvStatus = Literal["building", "ready", "failed"]
# last_used is written at most this often per environment (a kernel start is frequent)
TOUCH_INTERVAL = 60.0
# at most this much of a build log per log() call
MAX_LOG_READ = 256 * 1024
# failed builds remembered (their error shown) at most
MAX_FAILED = 200
# prune() also runs by itself: first an hour after start (once the apps have loaded and said
# which environments they use), then every 6 hours
PRUNE_FIRST_DELAY = 3600.0
PRUNE_INTERVAL = 6 * 3600.0


@dataclass
class EnvInfo:
    id: str
    requirements: tuple[str, ...]
    python: str | None
    status: EnvStatus
    error: str | None  # the installer's own message (its last ~40 lines), for a failed build
    size_bytes: int | None
    created: float | None
    last_used: float | None
    apps: list[str] = field(default_factory=list)
    kernel_name: str = ""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["requirements"] = list(self.requirements)
        return data


class EnvBuildFailed(Exception):
    """str(e): the installer's message (what could not be resolved, which conflict), or why not."""


class EnvRefused(EnvBuildFailed):
    """No environment can serve the app here, whatever it asks for: str(e) says why and what to do."""


#: An environment is built on this machine, and a gateway's kernels run on its own machines
#: (a kernel image), which cannot see it: starting the app there would run it without its
#: packages, failing later on an import with a message that does not say why.
GATEWAY_REFUSAL = (
    "packages per app need local kernels, and this server's kernels run on a kernel gateway "
    "(GatewayClient.url), which cannot use an environment built on the server: install the "
    "packages ({requirements}) in the gateway's kernel image or kernel spec, then remove "
    "them from the app's requirements"
)


def _info_of(ready: ReadyEnv) -> EnvInfo:
    return EnvInfo(
        id=ready.id,
        requirements=ready.requirements,
        python=ready.python,
        status="ready",
        error=None,
        size_bytes=ready.size_bytes,
        created=ready.created,
        last_used=ready.last_used,
        kernel_name=kernel_name(ready.id),
    )


class EnvService:
    def __init__(
        self,
        root: Path,
        *,
        installer: str = "auto",
        installer_args: Sequence[str] = (),
        build_timeout: float = 600.0,
        keep_days: float = 14.0,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        if isinstance(installer_args, str) or not all(isinstance(a, str) for a in installer_args):
            raise TypeError("installer_args must be a list of strings (one argument each)")
        if not build_timeout > 0 or not keep_days >= 0:
            raise ValueError("build_timeout must be above 0 and keep_days at least 0")
        if installer not in INSTALLER_CHOICES:
            raise ValueError(f"env_installer must be one of {', '.join(INSTALLER_CHOICES)}, not {installer!r}")
        self._installer_choice = installer
        self._installer_args = tuple(installer_args)
        self.build_timeout = build_timeout
        self.keep_days = keep_days
        self._on_event = on_event
        self.cache = EnvCache(root)
        self._infos: dict[str, EnvInfo] = {}
        self._pythons: dict[str, Path] = {}  # ready env id -> its python
        self._builds: dict[str, asyncio.Task[EnvInfo]] = {}
        self._building_logs: dict[str, Path] = {}
        self._waiting: dict[str, set[str]] = {}  # env id -> apps awaiting its build
        self._app_env: dict[str, str] = {}  # app -> env id it serves with
        self._touched: dict[str, float] = {}
        self._pruner: asyncio.Task[None] | None = None
        # how many times an installer process was started (the cache's proof: a cached start runs none)
        self.installer_runs = 0
        self.kernel_specs = EnvKernelSpecs(self._python_of, self._kernel_starting)

    # --- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Find the environments already built; remove half-built leftovers of gone processes."""
        removed = await asyncio.to_thread(self.cache.remove_leftovers)
        if removed:
            log.info("removed unfinished environment folders: %s", ", ".join(removed))
        for ready in await asyncio.to_thread(self.cache.ready_envs):
            self._set_ready(ready, announce=False)
        if self._pruner is None:
            self._pruner = asyncio.create_task(self._prune_now_and_then(), name="anvil-env-prune")

    async def _prune_now_and_then(self) -> None:
        delay = PRUNE_FIRST_DELAY
        while True:
            await asyncio.sleep(delay)
            delay = PRUNE_INTERVAL
            try:
                await self.prune()
            except Exception:
                log.exception("pruning the environments failed")

    async def stop(self) -> None:
        """Cancel the builds under way (their installers killed, their folders removed)."""
        if self._pruner is not None:
            self._pruner.cancel()
            self._pruner = None
        builds = list(self._builds.values())
        for task in builds:
            task.cancel()
        for task in builds:
            with contextlib.suppress(BaseException):
                await task

    # --- asking for environments ------------------------------------------------------------

    def env_id(self, request: EnvRequest) -> str:
        return env_id(request, self._installer_args)

    async def ensure(self, request: EnvRequest, app: str) -> EnvInfo:
        """The ready environment for request: at once if built, else after its build.

        Raises EnvBuildFailed with the installer's message (or the timeout) if it cannot be built,
        EnvRefused (nothing built) if kernels run on a gateway.
        """
        if request.empty:
            raise ValueError("an empty request needs no environment: the app runs on the default kernel")
        if gateway_enabled():
            shown = ", ".join(request.requirements) + (f"; Python {request.python}" if request.python else "")
            raise EnvRefused(GATEWAY_REFUSAL.format(requirements=shown))
        eid = self.env_id(request)
        waiting = self._waiting.setdefault(eid, set())
        waiting.add(app)
        try:
            python = self._pythons.get(eid)
            if python is not None and await asyncio.to_thread(python.exists):
                return self._info_with_apps(eid)
            if python is not None:
                # removed under us (by hand, or by another server sharing the folder): built again
                log.warning("environment %s is gone from %s: building it again", eid, self.cache.root)
                self._pythons.pop(eid, None)
                self._infos.pop(eid, None)
            # built meanwhile by another server sharing the folder
            ready = await asyncio.to_thread(self.cache.read, eid)
            if ready is not None:
                self._set_ready(ready, announce=True)
                return self._info_with_apps(eid)
            task = self._builds.get(eid)
            if task is None:
                self._infos[eid] = EnvInfo(
                    id=eid,
                    requirements=request.requirements,
                    python=request.python,
                    status="building",
                    error=None,
                    size_bytes=None,
                    created=None,
                    last_used=None,
                    kernel_name=kernel_name(eid),
                )
                task = asyncio.create_task(self._build(eid, request), name=f"anvil-env-build-{eid}")
                self._builds[eid] = task
                task.add_done_callback(self._build_done)
            self._announce(eid)  # building, with this app among those waiting for it
            await asyncio.shield(task)
            return self._info_with_apps(eid)
        finally:
            waiting.discard(app)
            if not waiting and self._waiting.get(eid) is waiting:
                del self._waiting[eid]

    def use(self, app: str, env_id: str | None) -> None:
        """App now serves with env_id (None: with no environment); its last use is now."""
        previous = self._app_env.pop(app, None)
        if env_id is not None:
            self._app_env[app] = env_id
            self._touch(env_id, force=True)
        for changed in {previous, env_id} - {None}:
            if changed in self._infos:
                self._announce(changed)  # type: ignore[arg-type]

    # --- what is there ----------------------------------------------------------------------

    def list(self) -> list[EnvInfo]:
        return [self._info_with_apps(eid) for eid in sorted(self._infos)]

    def get(self, env_id: str) -> EnvInfo | None:
        return self._info_with_apps(env_id) if env_id in self._infos else None

    def log(self, env_id: str, offset: int = 0) -> tuple[str, int] | None:
        """The build output from byte offset (at most 256 KB of it), and the offset after it."""
        if not is_env_id(env_id):
            return None
        candidates = [self._building_logs.get(env_id), self.cache.folder(env_id) / BUILD_LOG]
        candidates.append(self.cache.failed_log(env_id))
        for path in candidates:
            if path is None:
                continue
            try:
                with path.open("rb") as f:
                    f.seek(max(0, offset))
                    data = f.read(MAX_LOG_READ)
            except OSError:
                continue
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            text = decoder.decode(data, final=False)
            # a character cut at the end is left for the next read
            consumed = len(data) - len(decoder.getstate()[0])
            return text, max(0, offset) + consumed
        return None

    async def prune(self) -> int:
        """Remove ready environments no app uses whose last use is older than keep_days."""
        cutoff = time.time() - self.keep_days * 86400
        used = set(self._app_env.values()) | set(self._waiting) | set(self._builds)
        # this server's use, told on disk first: another server sharing the folder prunes by it
        for eid in set(self._app_env.values()):
            self._touch(eid, force=True)
        await asyncio.to_thread(self.cache.remove_failed_logs, cutoff)
        removed = 0
        for eid, info in list(self._infos.items()):
            if info.status != "ready" or eid in used:
                continue
            last = info.last_used if info.last_used is not None else info.created
            if last is not None and last >= cutoff:
                continue
            self._pythons.pop(eid, None)
            self._infos.pop(eid, None)
            await asyncio.to_thread(self.cache.remove, eid)
            removed += 1
            log.info("removed environment %s (unused since %s)", eid, time.ctime(last) if last else "ever")
        return removed

    # --- inside -----------------------------------------------------------------------------

    def _python_of(self, env_id: str) -> Path | None:
        return self._pythons.get(env_id)

    def _kernel_starting(self, env_id: str) -> None:
        self._touch(env_id)

    def _touch(self, env_id: str, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._touched.get(env_id, 0.0) < TOUCH_INTERVAL:
            return
        self._touched[env_id] = now
        self.cache.touch_last_used(env_id)
        if (info := self._infos.get(env_id)) is not None:
            info.last_used = now

    def _info_with_apps(self, env_id: str) -> EnvInfo:
        info = self._infos[env_id]
        apps = {app for app, eid in self._app_env.items() if eid == env_id} | self._waiting.get(env_id, set())
        info.apps = sorted(apps)
        return EnvInfo(**{**asdict(info), "requirements": info.requirements, "apps": list(info.apps)})

    def _announce(self, env_id: str) -> None:
        if self._on_event is None or env_id not in self._infos:
            return
        try:
            self._on_event({"type": "env", "env": self._info_with_apps(env_id).to_json()})
        except Exception:
            log.exception("the environment event handler failed")

    def _output(self, env_id: str, text: str, offset: int) -> None:
        """A chunk of build output; ``offset`` is build.log's byte offset after it."""
        if self._on_event is None:
            return
        try:
            self._on_event({"type": "env_output", "id": env_id, "text": text, "offset": offset})
        except Exception:
            log.exception("the environment event handler failed")

    def _set_ready(self, ready: ReadyEnv, *, announce: bool) -> None:
        self._pythons[ready.id] = ready.python_path
        self._infos[ready.id] = _info_of(ready)
        if announce:
            self._announce(ready.id)

    def _build_done(self, task: asyncio.Task[EnvInfo]) -> None:
        for eid, running in list(self._builds.items()):
            if running is task:
                del self._builds[eid]
        if not task.cancelled():
            task.exception()  # retrieved: a failure is told through ensure and the env's status

    def _forget_failures(self) -> None:
        failed = [eid for eid, info in self._infos.items() if info.status == "failed"]
        for eid in failed[: max(0, len(failed) - MAX_FAILED)]:
            del self._infos[eid]

    def _installer(self) -> Installer:
        try:
            return find_installer(self._installer_choice)
        except BuildError as e:
            raise EnvBuildFailed(str(e)) from None

    async def _build(self, eid: str, request: EnvRequest) -> EnvInfo:
        folder = await asyncio.to_thread(self.cache.new_building_folder, eid)
        await asyncio.to_thread(self.cache.write_request, folder, id_material(request, self._installer_args))
        self._building_logs[eid] = folder / BUILD_LOG
        build_log = open_log(folder, lambda text, offset: self._output(eid, text, offset))
        try:
            installer = self._installer()

            def counted() -> None:
                self.installer_runs += 1

            ctx = BuildContext(folder, request, installer, self._installer_args, build_log, counted)
            try:
                await asyncio.wait_for(build_env(ctx), self.build_timeout)
            except asyncio.TimeoutError:
                build_log.note(f"[killed: the build took longer than {self.build_timeout:g} s]")
                raise EnvBuildFailed(
                    f"the environment's build took longer than {self.build_timeout:g} s "
                    "(--AnvilApp.env_build_timeout) and was stopped; its output so far:\n" + build_log.tail()
                ) from None
            except BuildError as e:
                raise EnvBuildFailed(str(e)) from None
            build_log.close()
            ready = await asyncio.to_thread(self.cache.publish, folder, eid)
            if ready is None:
                raise EnvBuildFailed("the environment was built but could not be moved into place")
            self._building_logs.pop(eid, None)
            self._set_ready(ready, announce=True)
            return self._infos[eid]
        except EnvBuildFailed as e:
            build_log.close()
            await asyncio.to_thread(self._keep_failed_log, folder, eid)
            self._building_logs.pop(eid, None)
            info = self._infos[eid]
            info.status = "failed"
            info.error = str(e)
            self._forget_failures()
            self._announce(eid)
            raise
        except BaseException:
            # cancelled (the server stopping) or a bug: no half environment left behind
            build_log.close()
            self._building_logs.pop(eid, None)
            await asyncio.shield(asyncio.to_thread(self.cache._remove_folder, folder))
            if self._infos.get(eid) is not None and self._infos[eid].status == "building":
                del self._infos[eid]
            raise

    def _keep_failed_log(self, folder: Path, eid: str) -> None:
        with contextlib.suppress(OSError):
            (folder / BUILD_LOG).replace(self.cache.failed_log(eid))
        self.cache._remove_folder(folder)
