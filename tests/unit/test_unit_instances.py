"""ServerInstances: what runs once a server sharing the store is found gone."""

from __future__ import annotations

import time

from jupyter_anvil.host.instances import ServerInstances
from jupyter_anvil.host.store import Store, servers


async def test_on_gone_runs_once_after_a_sweep_that_found_a_server_gone(store: Store) -> None:
    me, other, gone = (ServerInstances(store, stale_after=60) for _ in range(3))
    for server in (me, other, gone):
        await server.register()
    calls: list[str] = []

    async def failing() -> None:
        calls.append("failing")
        raise RuntimeError("a callback that fails")

    async def take_over() -> None:
        calls.append("take_over")

    me.on_gone(failing)
    me.on_gone(take_over)
    await me.is_gone(other.id)  # a sweep that finds nobody gone
    await me.after_sweep()
    assert calls == []

    def stale() -> None:
        with store.engine.begin() as db:
            db.execute(servers.update().where(servers.c.id == gone.id).values(beat=time.time() - 120))

    assert me.others == 2  # what the live feed asks before it polls for other servers' tasks
    await store.run(stale)
    assert await me.is_gone(gone.id)
    assert me.others == 1
    await me.after_sweep()
    assert calls == ["failing", "take_over"]  # one that fails does not stop the others
    await me.after_sweep()  # nothing new found gone: nothing runs again
    assert calls == ["failing", "take_over"]
