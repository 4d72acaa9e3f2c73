"""A caller names portable classes in ``objects``; only classes server code registered
are decoded, and nothing is ever imported on a caller's say-so (issue 13, 2.3)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import websockets
from conftest import AnvilServer

# The module a page would name. The kernels run in the folder of the notebook (the server
# root for 'core'), where `import <name>` would find it: importing it leaves a marker.
PROBE = """
from pathlib import Path
Path({marker!r}).write_text("imported on a caller's say-so")

class Thing:
    pass

try:
    from jupyter_anvil import server
    server.portable_class(Thing)  # registers itself if ever imported
except Exception:
    pass
"""


@pytest.fixture
def probe(anvil_server: AnvilServer) -> Any:
    name = f"anvil_probe_{uuid.uuid4().hex[:8]}"
    marker = anvil_server.root / f"{name}.imported"
    module = anvil_server.root / f"{name}.py"
    module.write_text(PROBE.format(marker=str(marker)))
    yield name, marker
    module.unlink()
    marker.unlink(missing_ok=True)


def value_type(kind: str, type_name: Any) -> dict[str, Any]:
    return {"args": [{"a": 1}], "kwargs": {}, "objects": [{"type": [kind], "path": ["args", 0], "typeName": type_name}]}


@pytest.mark.parametrize("kind", ["ValueType", "ClassType"])
def test_an_unregistered_type_is_refused_over_http_and_never_imported(
    anvil_server: AnvilServer, probe: tuple[str, Path], kind: str
) -> None:
    name, marker = probe
    response = anvil_server.post("core", "echo", value_type(kind, f"{name}.Thing"))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "anvil.server.SerializationError"
    assert f"No such serializable type: {name}.Thing" in error["message"]
    assert not marker.exists(), "the kernel imported a module a caller named"


@pytest.mark.parametrize(
    "type_name", ["os.system", "builtins.object", "__main__.nothing", "", 7, None, ["x"], {"a": 1}, "x" * 5000]
)
def test_odd_type_names_are_a_clear_400(anvil_server: AnvilServer, type_name: Any) -> None:
    response = anvil_server.post("core", "echo", value_type("ValueType", type_name))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "anvil.server.SerializationError"
    assert "No such serializable type" in error["message"] and len(error["message"]) < 600


def test_a_registered_class_still_travels(anvil_server: AnvilServer) -> None:
    body = {
        "args": [{"x": 1, "y": 2}, 3],
        "objects": [{"type": ["ValueType"], "path": ["args", 0], "typeName": "__main__.Point"}],
    }
    response = anvil_server.post("core", "scale", body)
    assert response.status_code == 200, response.text
    assert response.json()["objects"][0]["typeName"] == "__main__.Point"


async def test_an_unregistered_type_is_refused_over_the_websocket_and_never_imported(
    anvil_server: AnvilServer, probe: tuple[str, Path]
) -> None:
    name, marker = probe
    async with websockets.connect(anvil_server.ws_url("core")) as socket:
        await socket.send(json.dumps({"type": "HELLO", "session": None}))
        assert json.loads(await socket.recv())["type"] == "SESSION"
        for call_id, kind in (("1", "ValueType"), ("2", "ClassType")):
            await socket.send(
                json.dumps({"type": "CALL", "id": call_id, "command": "echo", **value_type(kind, f"{name}.Thing")})
            )
            reply = json.loads(await socket.recv())
            assert reply["id"] == call_id and reply["error"]["type"] == "anvil.server.SerializationError"
            assert f"No such serializable type: {name}.Thing" in reply["error"]["message"]
    assert not marker.exists(), "the kernel imported a module a caller named"


def test_decoding_imports_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from jupyter_anvil import errors, wire

    name = f"anvil_probe_{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "imported"
    (tmp_path / f"{name}.py").write_text(PROBE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    for kind in ("ValueType", "ClassType"):
        with pytest.raises(errors.SerializationError, match=f"No such serializable type: {name}.Thing"):
            wire.decode({"v": {}}, [{"type": [kind], "path": ["v"], "typeName": f"{name}.Thing"}])
    assert name not in sys.modules and not marker.exists()
