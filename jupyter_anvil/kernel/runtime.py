"""The in-kernel runtime: the comm endpoint that runs server cells and server calls.

Each request from the host runs on a worker thread, so the kernel's main thread stays
free to receive replies to nested ``server.call``\\ s while calls are running.
"""

from __future__ import annotations

import contextlib
import itertools
import linecache
import sys
import threading
import traceback
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, cast

from .. import errors, protocol, wire
from ..protocol import (
    BACKGROUND_TASK,
    CALL,
    CALLABLE,
    GET_TASK_STATE,
    HELLO,
    KINDS,
    LOAD,
    LOG,
    MAX_CALL_DEPTH,
    REPLY,
    TASK_STATE,
    CallMessage,
    CallReplyMessage,
    Kind,
    LoadError,
    LoadReply,
    LoadRequest,
    LoadSettings,
)
from . import context, registry
from .cookies import CookieJar
from .output import CallOutput
from .session import SessionData
from .tasks import StatePump, TaskState, encode_state

Message = dict[str, Any]


class Runtime:
    """One per kernel: holds the comm to the host and the calls in flight."""

    def __init__(self, app: str) -> None:
        self.app = app
        self.comm: Any = None
        self.cell_labels: dict[str, str] = {}
        self._send_lock = threading.Lock()
        self._pending: dict[str, Future[tuple[Message, list[Any]]]] = {}
        self._ids = itertools.count()
        self._workers = ThreadPoolExecutor(max_workers=64, thread_name_prefix="anvil-call")
        self._frames: dict[str, context.CallFrame] = {}  # calls running now, by call id
        self._pump = StatePump(self._task_states, self._send_state)
        #: what the host tells server code of its configuration (``mail_from_domain``), at load
        self.settings: LoadSettings = {}

    # -- the comm ---------------------------------------------------------------
    def on_open(self, comm: Any, open_msg: Message) -> None:
        self.comm = comm
        comm.on_msg(self.on_message)
        # first thing, before the host sends anything else: the host refuses a kernel that
        # speaks another version (read now, not at import: a test plays another version)
        self.send({"op": HELLO, "protocol": protocol.PROTOCOL_VERSION})

    def on_message(self, msg: Message) -> None:
        data = msg["content"]["data"]
        buffers = list(msg.get("buffers") or [])
        op = data.get("op")
        if op == REPLY:
            future = self._pending.pop(str(data.get("req")), None)
            if future is not None:
                future.set_result((data, buffers))
        elif op == CALL:
            self._workers.submit(self.run_call, cast(CallMessage, data), buffers)
        elif op == LOAD:
            self._workers.submit(self.run_load, cast(LoadRequest, data))
        elif op == GET_TASK_STATE:
            frame = self._frames.get(str(data.get("task_id")))
            state = encode_state(frame.task_state) if frame is not None and frame.task_state is not None else None
            self.send({"op": REPLY, "req": data.get("req"), "state": state})

    def send(self, data: Mapping[str, Any], buffers: list[bytes] | None = None) -> None:
        # comm.send from worker threads: serialise so messages are never interleaved
        with self._send_lock:
            try:
                self.comm.send(data, buffers=buffers)
            except UnicodeEncodeError:  # a lone surrogate server code made: not UTF-8 as is
                self.comm.send(wire.without_surrogates(data), buffers=buffers)

    def log(self, call_id: str, stream: str, text: str) -> None:
        if self.comm is not None:
            self.send({"op": LOG, "call_id": call_id, "stream": stream, "text": text})

    # -- loading the server cells ----------------------------------------------
    def run_load(self, data: LoadRequest) -> None:
        from IPython.core.getipython import get_ipython

        shell: Any = get_ipython()  # type: ignore[no-untyped-call]
        notebook = str(data.get("notebook", "notebook"))
        frame = context.CallFrame(call_id=str(data.get("call_id", "load")), command="(load)")
        previous = context.push(frame)
        reply: LoadReply = {"op": REPLY, "req": data.get("req")}
        settings = data.get("settings")
        self.settings = cast(LoadSettings, dict(settings)) if isinstance(settings, dict) else {}
        try:
            for cell in data.get("cells", []):
                index, source = int(cell["index"]), str(cell["source"])
                filename = wire.cell_file(notebook, index)
                self.cell_labels[filename] = filename
                linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
                registry.loading_cell = index  # what @server.scheduled says its problems come from
                try:
                    code = compile(shell.transform_cell(source), filename, "exec")
                    exec(code, shell.user_ns)  # noqa: S102 - running the author's server cells is the point
                except BaseException as e:  # noqa: BLE001 - any failure is the app's load error
                    trace = self.trace_of(e)
                    error = cast(LoadError, errors.to_wire(e, trace))
                    error["cell"] = index
                    error["first_line"] = next((line for line in source.splitlines() if line.strip()), "")
                    error["line"] = trace[0][1] if trace else None
                    reply["error"] = error
                    reply["traceback"] = author_traceback(e)
                    break
            reply["registrations"] = registry.listing()
            reply["schedules"] = registry.schedule_listing()
        finally:
            registry.loading_cell = None
            self.flush_output(frame)
            context.push(previous)
        self.send(reply)

    # -- serving calls -------------------------------------------------------------
    def run_call(self, data: CallMessage, buffers: list[Any]) -> None:
        command = str(data.get("command"))
        kind = data.get("kind", CALLABLE)
        if kind not in KINDS:
            kind = CALLABLE  # an unknown kind names nothing: looked up as a callable, not found
        frame = self.frame_for(data, command, kind)
        previous = context.push(frame)
        self._frames[frame.call_id] = frame
        reply: CallReplyMessage = {"op": REPLY, "req": data.get("req")}
        out_buffers: list[bytes] = []
        faulty_response = False
        try:
            registration = registry.lookup(kind, command)
            if registration is None:
                raise errors.NoServerFunctionError(f'No server function matching "{command}" has been registered')
            registry.check_caller(registration)  # before anything the caller sent is decoded
            try:
                media = wire.media_from_buffers(data.get("media"), buffers)
                message = wire.decode(
                    {"args": data.get("args") or [], "kwargs": data.get("kwargs") or {}}, data.get("objects"), media
                )
            except errors.SerializationError as e:
                raise errors.SerializationError(f"Cannot serialize arguments to function. {e}") from None
            result = registration.function(*message["args"], **message["kwargs"])
            try:
                encoded = wire.encode({"response": result})
            except errors.SerializationError as e:
                faulty_response = True  # the function's fault, not the caller's
                raise errors.SerializationError(f"Cannot serialize return value from function. {e}") from None
            reply["response"] = encoded.message["response"]
            reply["objects"] = encoded.objects
            reply["media"], out_buffers = wire.media_to_buffers(encoded.media)
            reply.update(self.state_changes(frame))
        except BaseException as e:  # noqa: BLE001 - every failure becomes the caller's error
            reply.pop("response", None)
            reply.pop("objects", None)
            reply.pop("media", None)
            out_buffers = []
            reply["error"] = errors.to_wire(e, self.trace_of(e))
            if faulty_response:  # say where it arose: the host decides the status from that
                reply["error"][errors.STAGE] = errors.RESPONSE_STAGE
            reply["traceback"] = author_traceback(e)
            with contextlib.suppress(errors.SerializationError):
                reply.update(self.state_changes(frame))  # what the call stored before it failed stays stored
        finally:
            self.flush_output(frame)
            self._frames.pop(frame.call_id, None)
            context.push(previous)
        self.send(reply, out_buffers)

    def _task_states(self) -> list[tuple[str, TaskState]]:
        return [(f.call_id, f.task_state) for f in list(self._frames.values()) if f.task_state is not None]

    def _send_state(self, task_id: str, state: Any) -> None:
        self.send({"op": TASK_STATE, "task_id": task_id, "state": state})

    def frame_for(self, data: CallMessage, command: str, kind: Kind = CALLABLE) -> context.CallFrame:
        """The frame of a call: a top-level call brings its session, cookies and context
        from the host; a nested call shares its parent's (it is the same session)."""
        frame = context.CallFrame(call_id=str(data.get("call_id")), command=command, depth=int(data.get("depth", 0)))
        parent = self._frames.get(str(data.get("parent")))
        if parent is not None:
            frame.session, frame.cookies = parent.session, parent.cookies
            frame.info = {
                **parent.info,
                "remote_caller": {"type": "server_module", "is_trusted": True},
                "call_stack": [*parent.info.get("call_stack", []), {"type": "server_module", "is_trusted": True}],
            }
            return frame
        session = data.get("session")
        if isinstance(session, dict):
            frame.session = SessionData(session.get("id"), session.get("data") or {})
            frame.owns_session = True
        cookies = data.get("cookies")
        for jar in ("local", "shared"):
            values = cookies.get(jar, {}) if isinstance(cookies, dict) else None
            frame.cookies[jar] = CookieJar(jar, self.app if jar == "local" else "*", values)
        frame.info = data.get("context") or {}
        if kind == BACKGROUND_TASK:
            frame.task_state = TaskState()
            self._pump.ensure_started()
        return frame

    def state_changes(self, frame: context.CallFrame) -> CallReplyMessage:
        """What the call changed in its session and cookies, for the host to store."""
        out: CallReplyMessage = {}
        if frame.task_state is not None:
            out["task_state"] = encode_state(frame.task_state)  # an illegal final state is dropped, as in Anvil
        if not frame.owns_session:
            return out
        if frame.session is not None:
            changed, deleted = frame.session.changes()
            if changed or deleted or frame.session.persist_requested:
                out["session"] = {"changed": changed, "deleted": deleted, "persist": frame.session.persist_requested}
        jars = {kind: jar.values_for_host() for kind, jar in frame.cookies.items() if jar.changed}
        if jars:
            out["cookies"] = jars
        return out

    def trace_of(self, exc: BaseException) -> list[list[Any]]:
        """File/line pairs of the frames in server cells, innermost first: nothing else
        (no paths of the machine) reaches a caller."""
        frames = traceback.extract_tb(exc.__traceback__)
        if isinstance(exc, SyntaxError) and exc.filename in self.cell_labels:
            return [[exc.filename, exc.lineno]]
        return [[f.filename, f.lineno] for f in reversed(frames) if f.filename in self.cell_labels]

    def flush_output(self, frame: context.CallFrame) -> None:
        for stream in (sys.stdout, sys.stderr):
            if isinstance(stream, CallOutput):
                stream.flush_frame(frame)

    # -- nested calls from server code -----------------------------------------------
    def call(self, command: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        frame = context.current()
        depth = (frame.depth if frame else 0) + 1
        if depth > MAX_CALL_DEPTH:
            raise errors.StackOverflow("Too many nested anvil.server.call()s")
        try:
            encoded = wire.encode({"args": list(args), "kwargs": kwargs})
        except errors.SerializationError as e:
            raise errors.SerializationError(f"Cannot serialize arguments to function. {e}") from None
        req = f"k{next(self._ids)}"
        future: Future[tuple[Message, list[Any]]] = Future()
        self._pending[req] = future
        media_ids, buffers = wire.media_to_buffers(encoded.media)
        message: CallMessage = {
            "op": CALL,
            "req": req,
            "parent": frame.call_id if frame else None,
            "context": frame.info if frame else None,
            "depth": depth,
            "command": command,
            "args": encoded.message["args"],
            "kwargs": encoded.message["kwargs"],
            "objects": encoded.objects,
            "media": media_ids,
        }
        self.send(message, buffers)
        reply, reply_buffers = future.result()
        if "error" in reply:
            raise errors.from_wire(reply["error"])
        media = wire.media_from_buffers(reply.get("media"), reply_buffers)
        return wire.decode({"response": reply.get("response")}, reply.get("objects"), media)["response"]


def author_traceback(exc: BaseException) -> str:
    """The traceback from the author's code down: the runtime's own frame is noise to them."""
    tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
    return "".join(traceback.format_exception(type(exc), exc, tb))


_runtime: Runtime | None = None


def active() -> Runtime | None:
    """The runtime, when this kernel is an app kernel."""
    return _runtime


def install(app: str) -> None:
    """Make this kernel an app kernel: accept the host's comm and capture call output."""
    global _runtime
    if _runtime is not None:
        return
    import comm

    runtime = Runtime(app)
    comm.get_comm_manager().register_target(protocol.COMM_TARGET, runtime.on_open)
    sys.stdout = CallOutput(sys.stdout, "stdout", runtime.log)  # type: ignore[assignment]
    sys.stderr = CallOutput(sys.stderr, "stderr", runtime.log)  # type: ignore[assignment]
    _runtime = runtime
