"""Which notebooks are apps, their names, load failures, reload on save, stop on delete."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from conftest import AnvilServer
from notebook_files import write_notebook


def wait_for(predicate: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_app_names_come_from_paths_or_metadata(anvil_server: AnvilServer) -> None:
    apps = anvil_server.apps()
    assert apps["shop.orders"]["notebook"] == "shop/orders.ipynb"
    assert apps["custom-name"]["notebook"] == "renamed_nb.ipynb"
    assert "renamed_nb" not in apps
    assert anvil_server.call("custom-name", "who") == "named by metadata"


def test_a_failing_server_cell_puts_the_app_in_error(anvil_server: AnvilServer) -> None:
    broken = anvil_server.apps()["broken"]
    assert broken["status"] == "error"
    assert broken["error"] == "Server cell 2 (`# the second cell`) raised ZeroDivisionError: division by zero (line 3)"
    response = anvil_server.post("broken", "fine")
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["type"] == "anvil.server.RuntimeUnavailableError"
    assert "ZeroDivisionError" not in error["message"]  # the author's details stay in the admin API and log
    records = anvil_server.admin("anvil/api/logs", app="broken")["records"]
    assert any(r["stream"] == "traceback" and "ZeroDivisionError" in r["text"] for r in records)


def test_two_notebooks_claiming_one_name_are_both_refused(anvil_server: AnvilServer) -> None:
    app = anvil_server.apps()["dupname"]
    assert app["status"] == "error"
    assert "dup_a.ipynb" in app["error"] and "sub/dup_b.ipynb" in app["error"]
    assert anvil_server.post("dupname", "anything").status_code == 503


def test_broken_notebooks_and_metadata_are_reported(anvil_server: AnvilServer) -> None:
    listing = anvil_server.admin("anvil/api/apps")
    problems = {p["notebook"]: p["error"] for p in listing["problems"]}
    assert problems["not_json.ipynb"].startswith("cannot read the notebook")
    assert "kernels.min (3) is greater than kernels.max (1)" in problems["bad_meta.ipynb"]
    assert anvil_server.apps()["bad_meta"]["status"] == "error"


def test_the_cli_prints_every_app_and_every_failure(anvil_server: AnvilServer) -> None:
    log = anvil_server.log_path.read_text()
    assert f"core: http://127.0.0.1:{anvil_server.port}/anvil/apps/core/" in log
    assert "broken: FAILED: Server cell 2" in log
    assert "not_json.ipynb: FAILED: cannot read the notebook" in log


def version_app(version: int, extra: str = "") -> list[str]:
    return [
        "from jupyter_anvil import server\nimport os, time\n\n"
        f"@server.callable\ndef version():\n    return {version}\n\n"
        "@server.callable\ndef slow_version(s):\n    time.sleep(s)\n"
        f"    return {version}\n" + extra
    ]


def test_saving_reloads_without_a_restart_and_a_bad_save_keeps_the_old_code(anvil_server: AnvilServer) -> None:
    path = anvil_server.root / "reloading.ipynb"
    write_notebook(path, version_app(1))
    wait_for(lambda: anvil_server.apps().get("reloading", {}).get("status") == "ready", what="first load")
    assert anvil_server.call("reloading", "version") == 1

    # a call in flight during the switch finishes on the old kernels
    import threading

    in_flight: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: in_flight.update(r=anvil_server.post("reloading", "slow_version", {"args": [2]}))
    )
    thread.start()
    time.sleep(0.3)
    write_notebook(path, version_app(2))
    wait_for(lambda: anvil_server.call("reloading", "version") == 2, what="the new version")
    thread.join(30)
    assert in_flight["r"].status_code == 200 and in_flight["r"].json()["response"] == 1

    write_notebook(path, version_app(3, "raise RuntimeError('bad save')\n"))
    wait_for(lambda: "reload failed" in (anvil_server.apps()["reloading"]["error"] or ""), what="the failed reload")
    app = anvil_server.apps()["reloading"]
    assert app["status"] == "ready" and "bad save" in app["error"]
    assert anvil_server.call("reloading", "version") == 2

    path.unlink()
    wait_for(lambda: "reloading" not in anvil_server.apps(), what="the app to stop")
    assert anvil_server.post("reloading", "version").status_code == 404


def test_saving_outputs_or_untagged_cells_does_not_restart_kernels(anvil_server: AnvilServer) -> None:
    path = anvil_server.root / "steady.ipynb"
    write_notebook(
        path, ["from jupyter_anvil import server\nimport os\n@server.callable\ndef pid():\n    return os.getpid()\n"]
    )
    wait_for(lambda: anvil_server.apps().get("steady", {}).get("status") == "ready", what="load")
    before = anvil_server.call("steady", "pid")
    write_notebook(
        path,
        ["from jupyter_anvil import server\nimport os\n@server.callable\ndef pid():\n    return os.getpid()\n"],
        untagged_cells=["print('an exploratory cell')"],
    )
    time.sleep(1.5)  # several watch intervals
    assert anvil_server.call("steady", "pid") == before
    path.unlink()


PID = "\n@server.callable\ndef pid():\n    return os.getpid()\n"


def test_a_notebook_caught_half_written_keeps_serving_its_last_good_version(anvil_server: AnvilServer) -> None:
    """An editor that writes in place leaves a truncated (invalid JSON) or empty notebook
    for a moment: the app serves on, reports the problem under its name, and follows the
    notebook again once it can be read. Only deleting the notebook stops it."""
    path = anvil_server.root / "halfwritten.ipynb"
    write_notebook(path, version_app(1, PID))
    wait_for(lambda: anvil_server.apps().get("halfwritten", {}).get("status") == "ready", what="first load")
    pid = anvil_server.call("halfwritten", "pid")
    good = path.read_text()

    for broken in (good[: len(good) // 2], ""):
        path.write_text(broken)
        app = wait_for(
            lambda: (a := anvil_server.apps()["halfwritten"])["error"] and "cannot read" in a["error"] and a,
            what="the problem to be reported",
        )
        assert app["status"] == "ready" and app["functions"] == ["pid", "slow_version", "version"], app
        assert app["error"].startswith("halfwritten.ipynb: cannot read the notebook"), app["error"]
        assert app["error"].endswith("the previous version is still served"), app["error"]
        problems = anvil_server.admin("anvil/api/apps")["problems"]
        assert any(p["notebook"] == "halfwritten.ipynb" and p["app"] == "halfwritten" for p in problems), problems
        # many calls over several scans (every 0.3 s), all served by the kernels loaded before
        started = time.monotonic()
        while time.monotonic() - started < 2:
            response = anvil_server.post("halfwritten", "version")
            assert response.status_code == 200 and response.json()["response"] == 1, response.text
        assert "halfwritten" in anvil_server.apps()

        path.write_text(good)  # the save completes: the same version, nothing restarts
        wait_for(lambda: anvil_server.apps()["halfwritten"]["error"] is None, what="the problem to clear")
        assert anvil_server.call("halfwritten", "pid") == pid

    records = anvil_server.admin("anvil/api/logs", app="halfwritten")["records"]
    assert any("cannot read the notebook" in r["text"] and "still serving" in r["text"] for r in records)
    assert any("readable and valid again" in r["text"] for r in records)

    path.write_text("")
    wait_for(lambda: anvil_server.apps()["halfwritten"]["error"], what="the problem to be reported")
    write_notebook(path, version_app(2, PID))  # a new version after the unreadable moment is loaded
    wait_for(lambda: anvil_server.call("halfwritten", "version") == 2, what="the new version")
    assert anvil_server.apps()["halfwritten"]["error"] is None

    # bad metadata on a save is reported the same way, the version before serving on
    write_notebook(path, version_app(3, PID), {"kernels": {"min": 3, "max": 1}})
    wait_for(lambda: "kernels.min (3)" in (anvil_server.apps()["halfwritten"]["error"] or ""), what="the problem")
    assert anvil_server.apps()["halfwritten"]["status"] == "ready"
    assert anvil_server.call("halfwritten", "version") == 2

    path.unlink()
    wait_for(lambda: "halfwritten" not in anvil_server.apps(), what="the app to stop")
    assert anvil_server.post("halfwritten", "version").status_code == 404


def test_a_call_queued_when_a_save_replaces_the_version_is_served_by_the_new_one(anvil_server: AnvilServer) -> None:
    """With the one kernel's four call slots full, a fifth call waits in the queue; a save
    meanwhile loads a new version and stops the old pool: the waiting call moves to the
    new version instead of failing with 503, and the calls in flight finish on the old."""
    import concurrent.futures

    path = anvil_server.root / "switching.ipynb"
    write_notebook(path, version_app(1), {"kernels": {"min": 1, "max": 1}})
    wait_for(lambda: anvil_server.apps().get("switching", {}).get("status") == "ready", what="first load")
    with concurrent.futures.ThreadPoolExecutor(5) as executor:
        slow = [executor.submit(anvil_server.post, "switching", "slow_version", {"args": [8]}) for _ in range(4)]
        wait_for(lambda: anvil_server.apps()["switching"]["pool"]["in_flight"] == 4, what="four calls in flight")
        queued = executor.submit(anvil_server.post, "switching", "version")
        wait_for(lambda: anvil_server.apps()["switching"]["pool"]["queued"] == 1, what="a call in the queue")
        write_notebook(path, version_app(2), {"kernels": {"min": 1, "max": 1}})
        response = queued.result(60)
        assert response.status_code == 200, response.text
        assert response.json()["response"] == 2
        assert [f.result(60).json()["response"] for f in slow] == [1, 1, 1, 1]
    path.unlink()
