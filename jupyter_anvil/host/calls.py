"""A call's life, in one place: the caller's session (resumed, created, expired), the
route to a host service or to a kernel of the app (permissions, leasing, timeouts,
errors), and what the call changed in its session, saved before the caller hears back.

Transports (the HTTP and WebSocket handlers) parse, make one call here and encode what
comes back: the reply, and the session token to hand the caller once it is stored.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from .. import errors
from ..protocol import MAX_CALL_DEPTH
from .app_kernel import AppKernel
from .apps import App, AppManager
from .host_services import HostCall, HostServices
from .idempotency import Attempt, Idempotency, Replied, Scope
from .logs import AppLog
from .messages import Caller, CallReply, CallRequest
from .pool import KernelPool
from .sessions import Session, SessionExpired, SessionService, hash_token

log = logging.getLogger(__name__)
_EXPIRED = errors.SessionExpiredError.wire_name


def new_call_id() -> str:
    return secrets.token_hex(6)


@dataclass
class CallOutcome:
    """What a transport sends back: the reply (with the cookies the call changed), and the
    token of the caller's session once it is stored (None: nothing to hand the caller;
    a session is stored only once it holds something)."""

    reply: CallReply
    session_token: str | None
    #: the reply is the stored outcome of an earlier run of the call's idempotency key
    replayed: bool = False
    #: a keyed call that did not run, for a cause that may pass (the app still starting, no
    #: kernel free, its key still running elsewhere): seconds after which to send it again
    #: (HTTP's Retry-After), so an offline queue keeps it instead of failing it for good
    retry_after: float | None = None


#: a replay waits for the first run of its key this much longer than a call may run
REPLAY_GRACE_SECONDS = 10.0
#: the errors of a keyed call refused before it ran that may pass if it is sent again
#: later; "no such function", "permission denied" or a malformed call would fail again
TRANSIENT_REFUSALS = frozenset(
    errors.wire_name_of(cls("")) for cls in (errors.RuntimeUnavailableError, errors.TimeoutError, errors.InternalError)
)
#: the Retry-After a transient refusal of a keyed call carries
RETRY_AFTER_SECONDS = 2.0


def no_such_app(app_name: str) -> errors.NoServerFunctionError:
    return errors.NoServerFunctionError(f'No app named "{app_name}" is served here')


def _session_lost(attempt: Attempt) -> bool:
    """The call was refused because its session expired: no token to hand back."""
    error = attempt.reply.error
    return error is not None and error.get("type") == _EXPIRED and not attempt.reached


class CallService:
    def __init__(
        self,
        apps: AppManager,
        app_log: AppLog,
        sessions: SessionService,
        host_services: HostServices,
        idempotency: Idempotency | None = None,
    ) -> None:
        self.apps = apps
        self.app_log = app_log
        self.sessions = sessions
        self.host_services = host_services
        #: keyed calls run through it (None: keys are not honoured, tests of other parts)
        self.idempotency = idempotency
        self._functions: dict[str, str] = {}  # call id -> function, to tag log lines

    async def open_session(self, app_name: str, token: str | None, client_type: str) -> Session:
        """The caller's session: the live one its token names, or (no token) a fresh one,
        stored once it holds something. SessionExpiredError if the token names no live
        session; InternalError if the store cannot be read. Both transports resolve a
        session here: HTTP for each call, the WebSocket at each HELLO."""
        if not token:
            return self.sessions.new(app_name, client_type)
        try:
            return await self.sessions.resume(token, app_name)
        except SessionExpired:
            raise errors.SessionExpiredError("Session expired") from None
        except Exception:
            log.exception("[jupyter-anvil] could not start a session for app %s", app_name)
            raise errors.InternalError("The server could not start a session") from None

    async def call_with_token(
        self,
        app_name: str,
        request: CallRequest,
        token: str | None,
        client_type: str,
        caller_for: Callable[[Session], Caller],
    ) -> CallOutcome:
        """A call that brings its session's token (or none): the session is resolved,
        the call run and the session saved. ``caller_for`` makes the transport's
        :class:`Caller` (ip, cookies) for the session. Raises only what
        :meth:`open_session` raises: the call never ran, and the transport refuses it
        as it refuses a request it cannot parse."""
        try:
            session = await self.open_session(app_name, token, client_type)
        except errors.SessionExpiredError:
            replayed = await self._replay_in_gone_session(app_name, request, token)
            if replayed is None:
                raise
            return replayed
        request.caller = caller_for(session)
        return await self.call(app_name, request)

    async def _replay_in_gone_session(
        self, app_name: str, request: CallRequest, token: str | None
    ) -> CallOutcome | None:
        """A keyed call sent again after its session expired (a client offline longer than a
        session lives, whose reply was lost): the outcome of its run, found by the token it
        was sent with, so it is not run a second time in a new session. None if the key has
        no run kept (it never ran): the session's expiry stands."""
        if not token or request.idempotency_key is None or self.idempotency is None:
            return None
        scope = Scope(app_name, hash_token(token), request.idempotency_key)
        replied = await self.idempotency.replay(scope, self._replay_wait(app_name))
        if replied is None:
            return None
        return CallOutcome(replied.reply, None, replied.replayed, self._retry_after(replied.reply, None, replied))

    def _replay_wait(self, app_name: str) -> float:
        app = self.apps.apps.get(app_name)
        return ((app.call_timeout if app is not None else None) or self.apps.defaults.call_timeout) + (
            REPLAY_GRACE_SECONDS
        )

    @staticmethod
    def _retry_after(reply: CallReply, reached: bool | None, replied: Replied | None) -> float | None:
        """RETRY_AFTER_SECONDS for a keyed call that did not run (``reached`` False, or no
        run at all: None) for a transient cause; None for any final answer."""
        if reply.error is None or reached or (replied is not None and replied.replayed):
            return None
        return RETRY_AFTER_SECONDS if reply.error.get("type") in TRANSIENT_REFUSALS else None

    async def call(self, app_name: str, request: CallRequest) -> CallOutcome:
        """Run a call from a client (browser, HTTP) whose session is resolved
        (``request.caller``): the session is refused if it sat idle too long, and what
        the call changed in it is stored before the reply is returned. A call with an
        idempotency key runs at most once in its session (see :mod:`.idempotency`).
        Never raises."""
        request.call_id = request.call_id or new_call_id()
        caller = request.caller
        if request.idempotency_key is not None and caller is not None and self.idempotency is not None:
            return await self._call_once(app_name, request, caller)
        attempt = await self._attempt(app_name, request)
        if _session_lost(attempt):
            return CallOutcome(attempt.reply, None)
        return self._outcome(request, attempt.reply, replayed=False)

    async def keep_session_for_key(self, caller: Caller) -> None:
        """Store the session of a keyed call before it runs, so its key has a scope that
        outlives this connection (the caller is handed the token as usual). Raises
        InternalError if the store cannot take it."""
        if caller.session.persisted:
            return
        try:
            await self.sessions.commit(caller.session, {"persist": True})
        except Exception:
            log.exception("[jupyter-anvil] could not store a session for a keyed call")
            raise errors.InternalError("The server could not start a session for this call") from None

    async def _call_once(self, app_name: str, request: CallRequest, caller: Caller) -> CallOutcome:
        assert self.idempotency is not None and request.idempotency_key is not None
        if await self.apps.get(app_name) is None:  # nothing is stored for a name no app has
            return CallOutcome(CallReply.failure(no_such_app(app_name)), None)
        try:
            await self.keep_session_for_key(caller)
        except errors.AnvilError as e:
            reply = CallReply.failure(e)
            return CallOutcome(reply, None, retry_after=self._retry_after(reply, None, None))
        scope = Scope(app_name, caller.session.record.token_hash, request.idempotency_key)

        lost = False
        reached: bool | None = None  # None: it did not run here (replayed, or refused by the key)

        async def run() -> Attempt:
            nonlocal lost, reached
            attempt = await self._attempt(app_name, request)
            lost, reached = _session_lost(attempt), attempt.reached
            return attempt

        replied = await self.idempotency.run_once(scope, run, self._replay_wait(app_name))
        retry_after = self._retry_after(replied.reply, reached, replied)
        if lost:
            return CallOutcome(replied.reply, None, retry_after=retry_after)
        outcome = self._outcome(request, replied.reply, replied.replayed)
        outcome.retry_after = retry_after
        return outcome

    def _outcome(self, request: CallRequest, reply: CallReply, replayed: bool) -> CallOutcome:
        caller = request.caller
        if caller is not None and reply.cookie_changes and caller.cookies is not None:
            caller.cookies.update(reply.cookie_changes)  # the connection's jar, for its next calls
        token = caller.session.token if caller is not None and caller.session.persisted else None
        return CallOutcome(reply, token, replayed)

    async def _attempt(self, app_name: str, request: CallRequest) -> Attempt:
        """Run the call once and store what it changed in its session: the final reply,
        and whether the call reached server code (see ``CallRequest.reached``)."""
        caller = request.caller
        try:
            if caller is not None:
                await self.sessions.use(caller.session)
            reply = await self._call(app_name, request)
        except errors.AnvilError as e:
            return Attempt(CallReply.failure(e), request.reached)  # nothing ran, or it failed: nothing to store
        except SessionExpired:
            return Attempt(CallReply.failure(errors.SessionExpiredError("Session expired")), False)
        if caller is not None:
            # stored before the caller hears back, so nothing acknowledged can be lost
            reply = await self.sessions.keep_state(app_name, request, reply)
        return Attempt(reply, request.reached)

    async def _call(self, app_name: str, request: CallRequest) -> CallReply:
        command = request.command
        if request.from_client and ":" in command:
            raise errors.PermissionDenied(f'Cannot call scoped server function "{command}" from client code')
        app = await self.apps.get(app_name)
        if app is None:
            raise no_such_app(app_name)
        host_service = self.host_services.find(command, request.from_client)
        if host_service is not None:
            context = request.caller.context() if request.caller else {}
            request.reached = True
            return await host_service.handler(HostCall(app_name, request, context))
        timeout = app.call_timeout or self.apps.defaults.call_timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if not app.loaded.is_set():
            try:
                await asyncio.wait_for(app.loaded.wait(), timeout)
            except asyncio.TimeoutError:
                raise errors.RuntimeUnavailableError(f"App '{app_name}' is still starting; try again shortly") from None
        pool, kernel = await self._lease(app, command, deadline)
        self._functions[request.call_id] = command
        try:
            request.reached = True
            reply = await kernel.call(request, deadline - loop.time())
        except asyncio.TimeoutError:
            self.log(app_name, request.call_id, "system", "[SERVER CALL TOOK TOO LONG, WILL BE TERMINATED SHORTLY]")
            pool.retire(kernel)
            raise errors.TimeoutError("Server code took too long") from None
        finally:
            pool.release(kernel)
            self._functions.pop(request.call_id, None)
        return reply

    async def _lease(self, app: App, command: str, deadline: float) -> tuple[KernelPool, AppKernel]:
        """A kernel of the app's current version for ``command``, waiting until ``deadline``.

        A call queued on a version that a reload replaces moves to the new version's
        queue, instead of failing because the old pool stopped under it."""
        loop = asyncio.get_running_loop()
        while True:
            pool = app.pool
            if pool is None:
                raise errors.RuntimeUnavailableError(
                    f"App '{app.name}' is not available ({app.status}); its author can see why in the app log"
                )
            # the version's functions, fixed at its load: not whichever kernel is alive now
            if command not in pool.functions:
                raise errors.NoServerFunctionError(f'No server function matching "{command}" has been registered')
            try:
                kernel = pool.try_lease()
                if kernel is None:
                    kernel = await asyncio.wait_for(pool.lease(), deadline - loop.time())
            except asyncio.TimeoutError:
                if not pool.live_kernels:
                    raise errors.TimeoutError(
                        f"Server code took too long: no kernel of '{app.name}' became ready in time "
                        "(its kernels are being replaced)"
                    ) from None
                raise errors.TimeoutError(
                    f"Server code took too long: no kernel of '{app.name}' was free in time"
                ) from None
            except errors.RuntimeUnavailableError:
                if pool.closed and app.pool is not None and app.pool is not pool:
                    continue  # reloaded while this call waited: the new version serves it
                raise
            return pool, kernel

    async def nested_call(self, kernel: AppKernel, request: CallRequest) -> CallReply:
        """A ``server.call`` from server code: runs on the same kernel (which has a
        thread free for it), so a pool of one kernel cannot deadlock on itself."""
        if request.depth > MAX_CALL_DEPTH:
            return CallReply.failure(errors.StackOverflow("Too many nested anvil.server.call()s"))
        try:
            host_service = self.host_services.find(request.command, request.from_client)
            if host_service is not None:
                return await host_service.handler(HostCall(kernel.app, request, request.context or {}))
        except errors.AnvilError as e:
            return CallReply.failure(e)
        if request.command not in kernel.functions:
            return CallReply.failure(
                errors.NoServerFunctionError(f'No server function matching "{request.command}" has been registered')
            )
        self._functions[request.call_id] = request.command
        try:
            with KernelPool.held_for_nested_call(kernel):
                return await kernel.call(request)
        except errors.AnvilError as e:
            return CallReply.failure(e)
        finally:
            self._functions.pop(request.call_id, None)

    def log(self, app: str, call_id: str, stream: str, text: str) -> None:
        self.app_log.write(app, self._functions.get(call_id, "(kernel)"), call_id, stream, text)
