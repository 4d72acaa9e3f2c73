"""``require_user``: with no users service, such a function refuses every call (fail closed)."""

from __future__ import annotations

import json
import time

import pytest
from conftest import AnvilServer
from websockets.sync.client import connect

REFUSED = "anvil.server.PermissionDenied"


@pytest.mark.parametrize("function", ["members_only", "members_check"])
def test_an_anonymous_http_caller_is_refused(anvil_server: AnvilServer, function: str) -> None:
    response = anvil_server.post("core", function, {"args": []})
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["type"] == REFUSED
    assert "require_user" in error["message"] and "for members" not in response.text


def test_a_websocket_caller_is_refused(anvil_server: AnvilServer) -> None:
    with connect(anvil_server.ws_url("core")) as ws:
        ws.send(json.dumps({"type": "CALL", "id": "c1", "command": "members_only", "args": [], "kwargs": {}}))
        reply = json.loads(ws.recv(timeout=30))
    assert reply["id"] == "c1" and "response" not in reply
    assert reply["error"]["type"] == REFUSED


def test_server_code_calling_it_is_refused_too(anvil_server: AnvilServer) -> None:
    response = anvil_server.post("core", "call_members_only", {"args": []})
    assert response.json()["error"]["type"] == REFUSED, response.text


def test_require_user_false_still_runs(anvil_server: AnvilServer) -> None:
    assert anvil_server.call("core", "with_require_user") == "ok"


def test_the_app_log_says_so_at_load(anvil_server: AnvilServer) -> None:
    deadline = time.monotonic() + 10
    while True:
        records = anvil_server.admin("anvil/api/logs", app="core", limit=10000)["records"]
        warnings = [r["text"] for r in records if "no users service" in r["text"]]
        if len(warnings) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert any("'members_only'" in w for w in warnings), warnings
    assert any("'members_check'" in w for w in warnings), warnings
