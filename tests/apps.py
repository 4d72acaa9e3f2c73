"""The test apps the shared server serves, beside the example notebooks."""

from __future__ import annotations

from pathlib import Path

from notebook_files import write_notebook

CORE = [
    """
    import datetime, os, sys, time
    from jupyter_anvil import server
    from jupyter_anvil.media import BlobMedia

    @server.callable
    def echo(*args, **kwargs):
        return {"args": list(args), "kwargs": kwargs}

    @server.callable("renamed")
    def _renamed():
        return "by position"

    @server.callable(name="by_keyword")
    def _by_keyword():
        return "by keyword"

    @server.callable(require_user=False)
    def with_require_user():
        return "ok"

    @server.callable(require_user=True)
    def members_only():
        return "for members"

    @server.callable("members_check", require_user=lambda user: True)
    def _members_check():
        return "for members"

    @server.callable
    def call_members_only():
        return server.call("members_only")

    @server.callable
    def add(a, b):
        return a + b
    """,
    """
    @server.callable
    def boom():
        x = 1
        raise ValueError("bad value")

    @server.callable
    def denied():
        raise server.PermissionDenied("not for you")

    @server.callable
    def missing_key():
        return {}["nope"]

    @server.callable
    def bad_return():
        return {1: "int key"}

    @server.callable
    def bytes_return():
        return b"raw"

    @server.callable
    def make_media():
        return BlobMedia("text/plain", b"hello media", name="h.txt")

    @server.callable
    def describe_media(m):
        return [m.content_type, m.name, len(m.get_bytes()), m.get_bytes()[:5].decode()]

    @server.callable
    def special_values():
        return {
            "big": 2**40, "neg_big": -(2**63), "inf": float("inf"), "ninf": float("-inf"), "nan": float("nan"),
            "when": datetime.datetime(2024, 2, 29, 12, 30, 15, 250000,
                                      tzinfo=datetime.timezone(datetime.timedelta(hours=-3))),
            "day": datetime.date(2024, 2, 29),
            "tuple": (1, 2),
        }

    @server.callable
    def inspect_args(*args, **kwargs):
        return {"types": [type(a).__name__ for a in args], "args": list(args), "kwargs": kwargs}

    @server.portable_class
    class Point:
        def __init__(self, x, y):
            self.x, self.y = x, y

    @server.callable
    def scale(p, k):
        assert isinstance(p, Point), type(p)
        return Point(p.x * k, p.y * k)

    @server.callable
    def nested(n):
        return [n] if n == 0 else [n, *server.call("nested", n - 1)]

    @server.callable
    def nested_error():
        try:
            server.call("boom")
        except ValueError as e:
            return f"caught {e}"

    @server.callable
    def nested_missing():
        server.call("no_such_function")

    @server.callable
    def chatty(word):
        print(f"chatty says {word}")
        print("to stderr", file=sys.stderr)
        return word

    @server.callable
    def sleep(seconds):
        time.sleep(seconds)
        return os.getpid()

    @server.callable
    def pid():
        return os.getpid()

    @server.callable
    def die():
        os._exit(3)

    @server.callable
    def context_info():
        return {"type": server.context.type, "app": server.context.app}

    @server.callable
    def env(name):
        return os.environ.get(name)

    @server.callable("scoped:name")
    def scoped():
        return "scoped"
    """,
]

SESSIONS = [
    """
    import os, time
    from jupyter_anvil import server
    from jupyter_anvil.media import BlobMedia

    @server.callable
    def count():
        server.session["n"] = server.session.get("n", 0) + 1
        return [server.session["n"], os.getpid()]

    @server.callable
    def occupy(seconds):
        time.sleep(seconds)
        return os.getpid()

    @server.callable
    def put(key, value, seconds=0):
        time.sleep(seconds)
        server.session[key] = value

    @server.callable
    def append(item):
        server.session.setdefault("items", [])
        server.session["items"].append(item)  # changed in place: saved all the same

    @server.callable
    def remove(key):
        del server.session[key]

    @server.callable
    def view():
        s = server.session
        return {"id": s.session_id, "keys": sorted(s.keys()), "len": len(s), "items": dict(s.items()),
                "has_a": "a" in s, "get_default": s.get("nope", "default")}

    @server.callable
    def store_media():
        server.session["m"] = BlobMedia("text/plain", b"x")

    @server.callable
    def store_then_fail(key, value):
        server.session[key] = value
        raise ValueError("failed after storing")

    @server.callable
    def session_id():
        return server.get_session_id()
    """,
    """
    @server.callable
    def set_cookie(kind, key, value, days=30):
        getattr(server.cookies, kind).set(days, **{key: value})

    @server.callable
    def set_item(kind, key, value):
        getattr(server.cookies, kind)[key] = value

    @server.callable
    def get_cookie(kind, key):
        return getattr(server.cookies, kind).get(key, "missing")

    @server.callable
    def strict_cookie(key):
        return server.cookies.local[key]

    @server.callable
    def del_cookie(kind, key):
        del getattr(server.cookies, kind)[key]

    @server.callable
    def clear_cookies(kind):
        getattr(server.cookies, kind).clear()

    @server.callable
    def big_cookie(size):
        server.cookies.local["big"] = "x" * size

    @server.callable
    def media_cookie():
        server.cookies.local["m"] = BlobMedia("text/plain", b"x")

    @server.callable
    def context_info():
        c = server.context
        return {
            "type": c.type, "app": c.app, "task": c.background_task_id,
            "client": {"type": c.client.type, "ip": c.client.ip, "location": c.client.location},
            "remote_caller": {"type": c.remote_caller.type, "is_trusted": c.remote_caller.is_trusted},
            "stack": [f.type for f in c.call_stack],
        }

    @server.callable
    def nested_context():
        return server.call("context_info")

    @server.callable
    def nested_count():
        server.call("count")
        return server.session["n"]
    """,
]

JOBS = [
    """
    import datetime, os, time
    from jupyter_anvil import server
    from jupyter_anvil.media import BlobMedia

    @server.background_task
    def count_to(n, pause=0.1):
        for i in range(n):
            server.task_state["done"] = i + 1
            server.task_state["total"] = n
            print(f"step {i + 1}")
            time.sleep(pause)
        return {"counted": n, "day": datetime.date(2024, 1, 2)}

    @server.background_task("renamed_task")
    def _renamed():
        return "renamed"

    @server.background_task
    def fail():
        print("about to fail")
        raise ValueError("task failed on purpose")

    @server.background_task
    def crash():
        server.task_state["before"] = "crash"
        time.sleep(0.5)
        os._exit(9)

    @server.background_task
    def forever():
        server.task_state["phase"] = "looping"
        while True:
            time.sleep(0.05)
            server.task_state["ticks"] = server.task_state.get("ticks", 0) + 1

    @server.background_task
    def media_result():
        return BlobMedia("text/plain", b"made in a task", name="t.txt")

    @server.background_task
    def media_state():
        try:
            server.task_state["m"] = BlobMedia("text/plain", b"x")
        except Exception as e:
            return f"{type(e).__name__}: {e}"

    @server.background_task
    def whoami():
        c = server.context
        server.session["seen"] = True
        return {"client": c.client.type, "task": c.background_task_id, "session": server.session.session_id,
                "caller": c.remote_caller.type, "pid": os.getpid()}

    @server.background_task
    def tight_loop(n):
        for i in range(n):
            server.task_state["i"] = i
        return n

    @server.background_task
    def ordered(i):
        server.task_state["i"] = i
        time.sleep(0.3)
        return i
    """,
    """
    @server.callable
    def start(name, *args, **kwargs):
        return server.launch_background_task(name, *args, **kwargs)

    @server.callable
    def describe(task_id):
        t = server.get_background_task(task_id)
        return {"id": t.get_id(), "name": t.get_task_name(), "status": t.get_termination_status(),
                "running": t.is_running(), "state": t.get_state(), "started": t.get_start_time(),
                "value": t.get_return_value() if t.get_termination_status() != "failed" else None}

    @server.callable
    def completed(task):
        return task.is_completed()

    @server.callable
    def error_of(task):
        task.get_error()
        return "no error"

    @server.callable
    def value_of(task):
        return task.get_return_value()

    @server.callable
    def kill(task):
        task.kill()
        return task.get_termination_status()

    @server.callable
    def listing():
        return [t.get_id() for t in server.list_background_tasks()]

    @server.callable
    def state_outside():
        return server.task_state["x"]

    @server.callable
    def pid():
        return os.getpid()

    @server.callable
    def my_session():
        return server.get_session_id()
    """,
]

UNTAGGED = [
    """
    from jupyter_anvil import server

    @server.callable
    def untagged():
        return "should never be served"

    raise RuntimeError("untagged cells never run on app kernels")
    """,
]


def write_sessions_app(path: Path, **metadata: object) -> None:
    write_notebook(path, SESSIONS, {"kernels": {"min": 2, "max": 2}, **metadata})


def write_jobs_app(path: Path, **metadata: object) -> None:
    write_notebook(path, JOBS, {"kernels": {"min": 1, "max": 1}, **metadata})


def write_test_apps(root: Path) -> None:
    write_jobs_app(root / "jobs.ipynb")
    write_notebook(root / "core.ipynb", CORE, {"kernels": {"min": 1, "max": 1}}, UNTAGGED)
    write_notebook(
        root / "timeouts.ipynb",
        [
            CORE[0],
            "@server.callable\ndef sleep(s):\n    time.sleep(s)\n    return os.getpid()\n\n"
            "@server.callable\ndef pid():\n    return os.getpid()\n\n"
            "@server.callable\ndef die():\n    os._exit(3)\n",
        ],
        {"kernels": {"min": 1, "max": 1}, "call_timeout": 2},
    )
    write_notebook(
        root / "shop" / "orders.ipynb",
        [
            "from jupyter_anvil import server\nimport os, time\n\n"
            "@server.callable\ndef sleep(s):\n    time.sleep(s)\n    return os.getpid()\n"
        ],
        {"kernels": {"min": 1, "max": 2}},
    )
    write_notebook(
        root / "renamed_nb.ipynb",
        ["from jupyter_anvil import server\n\n@server.callable\ndef who():\n    return 'named by metadata'\n"],
        {"app": "custom-name"},
    )
    write_notebook(
        root / "broken.ipynb",
        [
            "from jupyter_anvil import server\n\n@server.callable\ndef fine():\n    return 1\n",
            "# the second cell\nx = 1\ny = x / 0\n",
        ],
    )
    for path in (root / "dup_a.ipynb", root / "sub" / "dup_b.ipynb"):
        write_notebook(path, ["from jupyter_anvil import server\n"], {"app": "dupname"})
    write_sessions_app(root / "sessions.ipynb")
    write_notebook(
        root / "partner.ipynb",
        ["from jupyter_anvil import server\n\n@server.callable\ndef hello():\n    return 'hello, partner'\n"],
        {"kernels": {"min": 1, "max": 1}, "allowed_origins": ["http://good.example"]},
    )
    write_notebook(
        root / "elsewhere.ipynb",
        ["from jupyter_anvil import server\n"],
        {"static": "site", "kernels": {"min": 1, "max": 1}},
    )
    (root / "site").mkdir(exist_ok=True)
    (root / "site" / "index.html").write_text("<p>from metadata.static</p>")
    write_notebook(root / "bad_meta.ipynb", ["x = 1\n"], {"kernels": {"min": 3, "max": 1}})
    (root / "not_json.ipynb").write_text('{"cells": [{"metadata": {"tags": ["server"]}')
    static = root / "core"
    static.mkdir(exist_ok=True)
    (static / "index.html").write_text("<!doctype html><title>core</title><p>core app</p>")
    (static / ".secret").write_text("dotfile")
    (static / "copy.ipynb").write_text("{}")
    (root / "outside.txt").write_text("outside the static folder")
