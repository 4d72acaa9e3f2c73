"""Capture of what a call prints, sent to the host's app log instead of the notebook."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any, TextIO

from . import context

FLUSH_AT = 4096


class CallOutput(io.TextIOBase):
    """A stream that routes writes made on a thread running a call to ``sink``.

    Writes from other threads (the kernel's own, or an author's thread outside a call)
    go to the stream it replaced, so interactive use of the kernel is unchanged.
    """

    def __init__(self, original: TextIO, stream_name: str, sink: Callable[[str, str, str], None]) -> None:
        self.original = original
        self.stream_name = stream_name
        self.sink = sink

    def write(self, text: str) -> int:
        frame = context.current()
        if frame is None:
            return self.original.write(text)
        pending = frame.output.setdefault(self.stream_name, [])
        pending.append(text)
        if "\n" in text or sum(map(len, pending)) > FLUSH_AT:
            self.flush_frame(frame)
        return len(text)

    def flush_frame(self, frame: context.CallFrame) -> None:
        pending = frame.output.get(self.stream_name)
        if pending:
            text = "".join(pending)
            pending.clear()
            self.sink(frame.call_id, self.stream_name, text)

    def flush(self) -> None:
        frame = context.current()
        if frame is None:
            self.original.flush()
        else:
            self.flush_frame(frame)

    def writable(self) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.original, name)
