"""The extension's one list of services: started and stopped in order, each stop bounded
and its failure logged, never raised (a stop that raises or hangs would leave the server
up after SIGTERM). The whole server's start and stop run in test_startup.py."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from jupyter_anvil.host.services import Lifecycle, start_services, stop_services

log = logging.getLogger("test_service_lifecycle")


async def test_services_start_and_stop_in_list_order_sync_or_async() -> None:
    seen: list[str] = []

    async def start_async() -> None:
        await asyncio.sleep(0)
        seen.append("start a")

    async def stop_async() -> None:
        await asyncio.sleep(0)
        seen.append("stop a")

    services = [
        Lifecycle("a", start_async, stop_async, 1.0),
        Lifecycle("b", lambda: seen.append("start b"), None, 1.0),
        Lifecycle("c", None, lambda: seen.append("stop c"), 1.0),
    ]
    await start_services(services)
    await stop_services(services, log)
    assert seen == ["start a", "start b", "stop a", "stop c"]


async def test_a_stop_that_hangs_is_left_behind_after_its_bound(caplog: pytest.LogCaptureFixture) -> None:
    stopped: list[str] = []

    async def hang() -> None:
        await asyncio.sleep(60)

    services = [
        Lifecycle("the hanging one", None, hang, 0.2),
        Lifecycle("the next one", None, lambda: stopped.append("next"), 1.0),
    ]
    began = time.monotonic()
    with caplog.at_level(logging.WARNING):
        await stop_services(services, log)
    assert time.monotonic() - began < 5
    assert stopped == ["next"]
    assert "stopping the hanging one took over" in caplog.text


async def test_a_stop_that_raises_is_logged_and_the_rest_still_stop(caplog: pytest.LogCaptureFixture) -> None:
    stopped: list[str] = []

    def fail_at_once() -> None:
        raise RuntimeError("boom at once")

    async def fail_later() -> None:
        raise RuntimeError("boom later")

    services = [
        Lifecycle("first", None, fail_at_once, 1.0),
        Lifecycle("second", None, fail_later, 1.0),
        Lifecycle("third", None, lambda: stopped.append("third"), 1.0),
    ]
    with caplog.at_level(logging.ERROR):
        await stop_services(services, log)  # never raises
    assert stopped == ["third"]
    assert "stopping first failed" in caplog.text
    assert "stopping second failed" in caplog.text


async def test_a_start_that_fails_stops_the_start() -> None:
    """A server whose store or task service cannot start must not come up half-working."""
    started: list[str] = []

    async def fail() -> None:
        raise RuntimeError("no database")

    services = [
        Lifecycle("store", fail, None, 1.0),
        Lifecycle("after", lambda: started.append("after"), None, 1.0),
    ]
    with pytest.raises(RuntimeError, match="no database"):
        await start_services(services)
    assert started == []
