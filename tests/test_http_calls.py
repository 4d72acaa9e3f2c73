"""Server calls over plain HTTP, as a script or browser makes them: no Jupyter token."""

from __future__ import annotations

import math

import httpx
from conftest import AnvilServer


def error_of(response: httpx.Response) -> dict[str, str]:
    body = response.json()
    assert set(body) == {"error"}, body
    return body["error"]


def test_a_registered_function_answers(anvil_server: AnvilServer) -> None:
    response = anvil_server.post("hello", "greet", {"args": ["Ada"]})
    assert response.status_code == 200
    assert response.json()["response"] == "Hello, Ada!"


def test_args_and_kwargs_are_optional_and_both_arrive(anvil_server: AnvilServer) -> None:
    assert anvil_server.post("core", "echo").json()["response"] == {"args": [], "kwargs": {}}
    assert anvil_server.call("core", "echo", 1, "two", [3], x={"y": None}) == {
        "args": [1, "two", [3]],
        "kwargs": {"x": {"y": None}},
    }


def test_every_decorator_form_registers_its_name(anvil_server: AnvilServer) -> None:
    assert anvil_server.call("core", "renamed") == "by position"
    assert anvil_server.call("core", "by_keyword") == "by keyword"
    assert anvil_server.call("core", "with_require_user") == "ok"
    assert anvil_server.post("core", "_renamed").status_code == 404


def test_special_values_come_back_in_anvil_encoding(anvil_server: AnvilServer) -> None:
    body = anvil_server.post("core", "special_values").json()
    descriptors = {tuple(o["path"]): o for o in body["objects"]}
    assert descriptors[("response", "big")] == {"type": ["Long"], "path": ["response", "big"], "value": str(2**40)}
    assert descriptors[("response", "neg_big")]["value"] == str(-(2**63))
    assert descriptors[("response", "inf")]["value"] == "Infinity"
    assert descriptors[("response", "ninf")]["value"] == "-Infinity"
    assert descriptors[("response", "nan")]["value"] == "NaN"
    assert descriptors[("response", "when")] == {
        "type": ["DateTime"], "path": ["response", "when"], "value": "2024-02-29 12:30:15.250000-0300",
    }  # fmt: skip
    assert descriptors[("response", "day")]["value"] == "2024-02-29"
    assert body["response"]["big"] is None  # the placeholder
    assert body["response"]["tuple"] == [1, 2]


def test_special_values_sent_in_are_decoded_in_the_kernel(anvil_server: AnvilServer) -> None:
    body = {
        "args": [None, None, None, None, None],
        "objects": [
            {"type": ["Long"], "path": ["args", 0], "value": "12345678901234567890"},
            {"type": ["Float"], "path": ["args", 1], "value": "-Infinity"},
            {"type": ["DateTime"], "path": ["args", 2], "value": "2023-12-31 23:59:58.250000+0530"},
            {"type": ["Date"], "path": ["args", 3], "value": "2024-02-29"},
            {"type": ["DataMedia"], "path": ["args", 4], "id": "m1", "mime-type": "text/csv", "name": "a.csv",
             "base64": "YSxiCjEsMgo="},
        ],
    }  # fmt: skip
    result = anvil_server.post("core", "inspect_args", body).json()
    assert result["response"]["types"] == ["int", "float", "datetime", "date", "BlobMedia"]
    values = {tuple(o["path"]): o for o in result["objects"]}
    assert values[("response", "args", 0)]["value"] == "12345678901234567890"
    assert values[("response", "args", 2)]["value"] == "2023-12-31 23:59:58.250000+0530"
    media = values[("response", "args", 4)]
    assert media["mime-type"] == "text/csv" and media["name"] == "a.csv" and media["base64"] == "YSxiCjEsMgo="


def test_media_round_trips_over_http(anvil_server: AnvilServer) -> None:
    body = anvil_server.post("core", "make_media").json()
    (descriptor,) = body["objects"]
    assert descriptor["type"] == ["DataMedia"] and descriptor["name"] == "h.txt"
    assert descriptor["mime-type"] == "text/plain"
    sent = {"args": [None], "objects": [{**descriptor, "path": ["args", 0]}]}
    assert anvil_server.post("core", "describe_media", sent).json()["response"] == ["text/plain", "h.txt", 11, "hello"]


def test_portable_classes_round_trip(anvil_server: AnvilServer) -> None:
    body = {
        "args": [{"x": 1, "y": 2}, 3],
        "objects": [{"type": ["ValueType"], "path": ["args", 0], "typeName": "__main__.Point"}],
    }
    result = anvil_server.post("core", "scale", body).json()
    assert result["response"] == {"x": 3, "y": 6}
    assert result["objects"] == [{"type": ["ValueType"], "path": ["response"], "typeName": "__main__.Point"}]


def test_an_exception_gives_its_class_name_and_no_traceback(anvil_server: AnvilServer) -> None:
    response = anvil_server.post("core", "boom")
    assert response.status_code == 500
    error = error_of(response)
    assert error["type"] == "ValueError" and error["message"] == "bad value"
    assert "Traceback" not in response.text and "/" not in str(error.get("trace"))
    assert error["trace"] == [["core.ipynb cell 3", 4]]  # file/line relative to the notebook's cells
    # the whole traceback goes to the app log, for the author, from their code down
    logged = [r for r in anvil_server.admin("anvil/api/logs", app="core")["records"] if r["function"] == "boom"]
    assert logged and logged[-1]["stream"] == "traceback"
    assert 'File "core.ipynb cell 3", line 4, in boom' in logged[-1]["text"]
    assert "ValueError: bad value" in logged[-1]["text"] and "runtime.py" not in logged[-1]["text"]


def test_anvil_errors_keep_their_anvil_names(anvil_server: AnvilServer) -> None:
    error = error_of(anvil_server.post("core", "denied"))
    assert error == {**error, "type": "anvil.server.PermissionDenied", "message": "not for you"}
    key_error = error_of(anvil_server.post("core", "missing_key"))
    assert key_error["type"] == "KeyError" and key_error["message"] == "'nope'"


def test_unregistered_names_are_unreachable(anvil_server: AnvilServer) -> None:
    for name in ("no_such_function", "untagged", "__import__", "os.system"):
        response = anvil_server.post("core", name)
        assert response.status_code == 404, name
        assert error_of(response) == {
            "type": "anvil.server.NoServerFunctionError",
            "message": f'No server function matching "{name}" has been registered',
            "trace": [],
        }
    response = anvil_server.post("no_such_app", "greet")
    assert response.status_code == 404 and "no_such_app" in error_of(response)["message"]


def test_scoped_names_are_refused_to_clients(anvil_server: AnvilServer) -> None:
    response = anvil_server.post("core", "scoped:name")
    assert response.status_code == 403
    assert error_of(response)["type"] == "anvil.server.PermissionDenied"


def test_malformed_requests_say_what_is_wrong(anvil_server: AnvilServer) -> None:
    url = f"{anvil_server.url}anvil/apps/core/_/call/echo"
    cases = {
        "not json": ("{nope", "application/json", "not valid JSON"),
        "a list": ("[1, 2]", "application/json", "must be a JSON object"),
        "args not a list": ('{"args": {"a": 1}}', "application/json", "'args' must be a JSON array"),
        "kwargs not an object": ('{"kwargs": [1]}', "application/json", "'kwargs' must be a JSON object"),
        "form post": ("args=1", "application/x-www-form-urlencoded", "application/json"),
        "bad objects path": (
            '{"args": [1], "objects": [{"type": ["Date"], "path": ["args", 7], "value": "2024-01-01"}]}',
                             "application/json", "does not lead to a value"),
        "bad date": ('{"args": [null], "objects": [{"type": ["Date"], "path": ["args", 0], "value": "soon"}]}',
                     "application/json", "Invalid Date value"),
        "unknown type": ('{"args": [null], "objects": [{"type": ["Martian"], "path": ["args", 0]}]}',
                         "application/json", "Unknown value type"),
        "bad base64": ('{"args": [null], "objects": [{"type": ["DataMedia"], "path": ["args", 0], "id": "m", '
                       '"mime-type": null, "base64": "***"}]}', "application/json", "invalid base64"),
    }  # fmt: skip
    for label, (body, content_type, expected) in cases.items():
        response = httpx.post(url, content=body, headers={"Content-Type": content_type}, timeout=30)
        assert response.status_code == 400, (label, response.text)
        error = error_of(response)
        assert error["type"] == "anvil.server.SerializationError", label
        assert expected in error["message"], (label, error["message"])
    assert anvil_server.call("core", "add", 2, 3) == 5  # the app is unharmed


def test_unserialisable_return_values_are_named(anvil_server: AnvilServer) -> None:
    response = anvil_server.post("core", "bad_return")
    assert response.status_code == 500
    error = error_of(response)
    assert error["type"] == "anvil.server.SerializationError"
    assert "Cannot serialize return value from function" in error["message"]
    assert "keys that aren't strings at msg['response']" in error["message"]
    assert "BlobMedia" in error_of(anvil_server.post("core", "bytes_return"))["message"]


def test_requests_over_16_mib_are_refused(anvil_server: AnvilServer) -> None:
    big = "x" * (16 * 1024 * 1024 + 10)
    response = anvil_server.post("core", "echo", {"args": [big]})
    assert response.status_code == 413
    error = error_of(response)
    assert error["type"] == "anvil.server.SerializationError" and "use Media" in error["message"]
    assert anvil_server.call("core", "echo", "still fine") == {"args": ["still fine"], "kwargs": {}}


def test_nested_calls_work_and_stop_at_depth_ten(anvil_server: AnvilServer) -> None:
    assert anvil_server.call("core", "nested", 3) == [3, 2, 1, 0]
    assert anvil_server.call("core", "nested", 10) == list(range(10, -1, -1))
    error = error_of(anvil_server.post("core", "nested", {"args": [11]}))
    assert error["type"] == "anvil.server.StackOverflow"
    assert error["message"] == "Too many nested anvil.server.call()s"
    assert anvil_server.call("core", "nested_error") == "caught bad value"
    assert error_of(anvil_server.post("core", "nested_missing"))["type"] == "anvil.server.NoServerFunctionError"


def test_call_context_and_untagged_cells(anvil_server: AnvilServer) -> None:
    assert anvil_server.call("core", "context_info") == {"type": "server_module", "app": "core"}
    # the untagged cell raises; had it run, the app would not have loaded
    assert anvil_server.apps()["core"]["status"] == "ready"


def test_kernels_never_see_the_servers_token(anvil_server: AnvilServer) -> None:
    assert anvil_server.call("core", "env", "JUPYTER_TOKEN") is None
    assert anvil_server.call("core", "env", "PATH")


def test_floats_stay_floats(anvil_server: AnvilServer) -> None:
    assert math.isclose(anvil_server.call("core", "add", 0.1, 0.2), 0.3)


# -- malformed calls found by fuzzing: each a clear 400/404, never a 500 -----------------
def post_raw(server: AnvilServer, body: bytes | str, function: str = "echo") -> httpx.Response:
    return httpx.post(
        f"{server.url}anvil/apps/core/_/call/{function}",
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=60,
    )


def test_deeply_nested_json_is_refused_naming_the_limit(anvil_server: AnvilServer) -> None:
    for depth in (150, 5000):  # past our limit; past json.loads' own recursion limit
        response = post_raw(anvil_server, '{"args": [' + "[" * depth + "]" * depth + "]}")
        assert response.status_code == 400, response.text
        assert "nested more than 100 levels" in error_of(response)["message"]
    shallow = "[" * 90 + "]" * 90
    assert post_raw(anvil_server, '{"args": [' + shallow + "]}").status_code == 200


def test_a_descriptor_type_that_is_not_a_list_of_strings_is_a_400(anvil_server: AnvilServer) -> None:
    for kinds in (5, [[1]], [{}], {"a": 1}, ["Long", 3]):
        body = {"args": [None], "objects": [{"type": kinds, "path": ["args", 0], "value": "5"}]}
        response = anvil_server.post("core", "echo", body)
        assert response.status_code == 400, (kinds, response.text)
        assert "'type' must be a list of strings" in error_of(response)["message"]
    for path in ("args", [True], [["args"]], []):
        body = {"args": [None], "objects": [{"type": ["Long"], "path": path, "value": "5"}]}
        response = anvil_server.post("core", "echo", body)
        assert response.status_code == 400, (path, response.text)


def test_a_lone_surrogate_is_a_400(anvil_server: AnvilServer) -> None:
    for body in ('{"args": ["\\ud800"]}', '{"kwargs": {"\\udfff": 1}}', '{"args": ["a\\ud83d"]}'):
        response = post_raw(anvil_server, body)
        assert response.status_code == 400, response.text
        assert "lone UTF-16 surrogate" in error_of(response)["message"]
    # a proper pair is one character, and fine
    assert post_raw(anvil_server, '{"args": ["\\ud83d\\ude00"]}').json()["response"]["args"] == ["\U0001f600"]
    assert anvil_server.call("core", "echo", "still fine") == {"args": ["still fine"], "kwargs": {}}


def test_non_finite_numbers_in_the_json_are_a_400(anvil_server: AnvilServer) -> None:
    for literal in ("NaN", "Infinity", "-Infinity", "1e999"):
        response = post_raw(anvil_server, '{"args": [' + literal + "]}")
        assert response.status_code == 400, (literal, response.text)


def test_task_errors_have_their_own_4xx(anvil_server: AnvilServer) -> None:
    tasks = "anvil.private.background_tasks."
    missing = anvil_server.post("core", f"{tasks}record", {"args": ["no-such-task"]})
    assert missing.status_code == 404
    assert error_of(missing)["type"] == "anvil.server.BackgroundTaskNotFound"
    launch = anvil_server.post("core", f"{tasks}launch", {"args": ["count_to"]})
    assert launch.status_code == 400
    assert error_of(launch)["type"] == "anvil.server.BackgroundTaskError"
