"""protocol.py on its own (no server, no kernel): registrations by kind, the version check,
the names it owns, and the line between host and kernel it draws."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_anvil import protocol
from jupyter_anvil.kernel import registry
from jupyter_anvil.protocol import BACKGROUND_TASK, CALLABLE, KINDS, Registered

PACKAGE = Path(protocol.__file__).parent


def test_the_kinds_are_the_four_named_ones() -> None:
    assert KINDS == ("callable", "background_task", "email_handler", "schedule")
    assert protocol.log_name(CALLABLE, "f") == "f" and protocol.log_name(BACKGROUND_TASK, "t") == "task:t"


def test_ops_of_each_side() -> None:
    assert sorted(protocol.HOST_OPS) == ["call", "get_task_state", "load", "open", "reply"]
    assert sorted(protocol.KERNEL_OPS) == ["call", "hello", "log", "reply", "task_state"]


def test_registered_reads_the_wire_by_kind_and_leaves_out_junk() -> None:
    registered = Registered.from_wire(
        [
            {"name": "f", "kind": "callable"},
            {"name": "f", "kind": "background_task"},
            {"name": "t", "kind": "background_task"},
            {"name": "x", "kind": "no such kind"},
            {"name": 3, "kind": "callable"},
            {"kind": "callable"},
            ["f", "callable"],
            "f",
            None,
        ]
    )
    assert registered.callables == {"f"} and registered.background_tasks == {"f", "t"}
    assert registered.of("schedule") == frozenset()
    assert Registered.from_wire(registered.to_wire()) == registered
    assert registered.to_wire() == [
        {"name": "f", "kind": "callable"},
        {"name": "f", "kind": "background_task"},
        {"name": "t", "kind": "background_task"},
    ]
    assert registered.describe() == "callables ['f'], background_tasks ['f', 't']"
    assert hash(registered) == hash(Registered({CALLABLE: ["f"], BACKGROUND_TASK: ("t", "f")}))
    assert registered != Registered({CALLABLE: ["f"]})


@pytest.mark.parametrize("junk", [None, {}, "callable", 3, {"registrations": []}])
def test_registered_of_a_reply_without_a_list_is_empty(junk: object) -> None:
    assert Registered.from_wire(junk) == Registered()
    assert Registered().describe() == "nothing"


def test_the_version_check() -> None:
    assert protocol.version_mismatch(protocol.PROTOCOL_VERSION) is None
    assert protocol.version_mismatch(7, 7) is None
    assert protocol.version_mismatch(8, 7) == (
        "the app's kernel speaks jupyter-anvil protocol 8, this server speaks 7: "
        "install the same jupyter-anvil version in the kernel's environment"
    )
    # what is not a version number is a mismatch, never taken for one
    for odd in (None, "1", 1.0, True, [1]):
        mismatch = protocol.version_mismatch(odd, 1)
        assert mismatch is not None and "protocol ?," in mismatch


@pytest.fixture
def clean_registry() -> Iterator[None]:
    saved = {kind: dict(registry.registrations[kind]) for kind in KINDS}
    yield
    for kind in KINDS:
        registry.registrations[kind].clear()
        registry.registrations[kind].update(saved[kind])


def test_the_kernel_registry_keeps_kinds_apart(clean_registry: None, capsys: pytest.CaptureFixture[str]) -> None:
    def as_function() -> str:
        return "function"

    def as_task() -> str:
        return "task"

    registry.register("same_name", as_function)
    registry.register("same_name", as_task, kind=BACKGROUND_TASK)
    assert capsys.readouterr().err == ""  # two kinds: no name registered twice
    callable_, task = registry.lookup(CALLABLE, "same_name"), registry.lookup(BACKGROUND_TASK, "same_name")
    assert callable_ is not None and callable_.function is as_function and callable_.kind == CALLABLE
    assert task is not None and task.function is as_task and task.kind == BACKGROUND_TASK
    assert registry.functions["same_name"] is callable_  # functions: the callables
    listing = registry.listing()
    assert {"name": "same_name", "kind": "callable"} in listing
    assert {"name": "same_name", "kind": "background_task"} in listing
    registry.register("same_name", as_function, kind=BACKGROUND_TASK)
    assert "a background task with the name 'same_name' has already been registered" in capsys.readouterr().err


def test_protocol_and_the_kernel_side_import_nothing_of_the_host() -> None:
    code = (
        "import sys, jupyter_anvil.protocol as p\n"
        "assert p.COMM_TARGET == 'jupyter_anvil'\n"
        "import jupyter_anvil.kernel.runtime, jupyter_anvil.server\n"
        "bad = [m for m in sys.modules if m.startswith(('jupyter_anvil.host', 'tornado', 'jupyter_server'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_host_imports_nothing_of_the_kernel_side() -> None:
    code = (
        "import sys, jupyter_anvil.host.extension\n"
        "bad = [m for m in sys.modules if m.startswith(('jupyter_anvil.kernel', 'jupyter_anvil.server'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def _string_literals(path: Path) -> Iterator[tuple[int, str]]:
    """Every string in the code of ``path`` but its docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


@pytest.mark.parametrize(
    "contract",
    ["task:", "anvil.private.background_tasks.", "anvil.private.BackgroundTask", '"get_task_state"'],
)
def test_the_contract_is_spelled_in_protocol_only(contract: str) -> None:
    needle = contract.strip('"')
    found = [
        f"{path.relative_to(PACKAGE)}:{line}: {value!r}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "protocol.py"
        for line, value in _string_literals(path)
        if (value == needle if contract.startswith('"') else needle in value)
    ]
    assert found == []
