"""EnvRequest and the requirement checks: what reaches an installer is one well-formed
requirement a line, never an option, within bounds."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from jupyter_anvil.host.envs.request import (
    MAX_REQUIREMENT_CHARS,
    MAX_REQUIREMENTS,
    EnvRequest,
    EnvRequestError,
    parse_python,
    parse_requirements,
    read_requirements_file,
)


def test_valid_requirements_kept_in_order_duplicates_dropped() -> None:
    given = ["requests>=2.31", "pandas==2.2.*", " requests>=2.31 ", "numpy; python_version>'3'", "x[extra]~=1.0"]
    assert parse_requirements(given, "app") == (
        "requests>=2.31",
        "pandas==2.2.*",
        "numpy; python_version>'3'",
        "x[extra]~=1.0",
    )


@pytest.mark.parametrize(
    "entry",
    ["./wheels/pkg-1.0-py3-none-any.whl", "/abs/pkg-1.0-py3-none-any.whl", "file:///w/pkg-1.0-py3-none-any.whl"],
)
def test_local_wheels_accepted(entry: str) -> None:
    assert parse_requirements([entry], "app") == (entry,)


def test_pep508_url_requirement_accepted() -> None:
    assert parse_requirements(["pkg @ https://example.org/pkg-1.0.tar.gz"], "app")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("--index-url=https://evil.example/simple", "env_installer_args"),
        ("-e .", "env_installer_args"),
        ("-r other.txt", "env_installer_args"),
        ("pkg >= = 1", "not a valid requirement"),
        ("not a requirement!", "not a valid requirement"),
        ("pkg\n--index-url x", "one line"),
        ("pkg==1.0 \\", "one line"),
        ("./a.whl --config-settings=x ./b.whl", "env_installer_args"),
        ("./my wheels/a-1.0-py3-none-any.whl", "no spaces"),
        ("pkg @ https://example.org/${SECRET_TOKEN}/pkg.tar.gz", "environment variables"),
        ("", "empty"),
        ("   ", "empty"),
        ("x" * (MAX_REQUIREMENT_CHARS + 1), "longer than"),
        ("https://example.org/pkg-1.0-py3-none-any.whl", "not a valid requirement"),
    ],
)
def test_bad_entries_name_the_entry_and_where(entry: str, message: str) -> None:
    with pytest.raises(EnvRequestError, match=message) as e:
        parse_requirements(["ok", entry], "notebook.ipynb metadata")
    assert "notebook.ipynb metadata, entry 2" in str(e.value)


@pytest.mark.parametrize("value", ["requests", None, {"a": 1}, 3, [1], [None]])
def test_not_a_list_of_strings(value: object) -> None:
    with pytest.raises(EnvRequestError, match="where"):
        parse_requirements(value, "where")


def test_bounded_count() -> None:
    parse_requirements([f"p{i}" for i in range(MAX_REQUIREMENTS)], "w")
    with pytest.raises(EnvRequestError, match=f"at most {MAX_REQUIREMENTS}"):
        parse_requirements([f"p{i}" for i in range(MAX_REQUIREMENTS + 1)], "w")


def test_requirements_file(tmp_path: Path) -> None:
    path = tmp_path / "app.requirements.txt"
    path.write_text("# a comment\n\nrequests>=2.31  # inline comment\n  numpy\nrequests>=2.31\n")
    assert read_requirements_file(path) == ("requests>=2.31", "numpy")


def test_requirements_file_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "r.txt"
    path.write_text("requests\n--extra-index-url https://evil.example\n")
    with pytest.raises(EnvRequestError, match=r"r\.txt, line 2: .*env_installer_args"):
        read_requirements_file(path)
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(EnvRequestError, match="not UTF-8"):
        read_requirements_file(path)
    with pytest.raises(EnvRequestError, match="cannot be read"):
        read_requirements_file(tmp_path / "missing.txt")
    path.write_text("x\n" * 300_000)
    with pytest.raises(EnvRequestError, match="larger than"):
        read_requirements_file(path)


@pytest.mark.parametrize("value", ["2.7", "3.9", "3", "python3.11", "3.11.2.1", 3.11, "latest", ""])
def test_bad_python(value: object) -> None:
    with pytest.raises(EnvRequestError, match="python"):
        parse_python(value, "python")


def test_old_python_says_what_is_needed() -> None:
    with pytest.raises(EnvRequestError, match=r"2\.7 is too old.*3\.10 or later"):
        EnvRequest((), python="2.7")


def test_request_checks_and_normalises() -> None:
    assert EnvRequest(()).empty
    assert not EnvRequest(("x",)).empty
    assert not EnvRequest((), python="3.99").empty
    own = f"{sys.version_info[0]}.{sys.version_info[1]}"
    # the server's own version by name is the server's own environment (the same, layered one)
    assert EnvRequest(("x",), python=own).python is None
    assert EnvRequest(("x", "x")).requirements == ("x",)
    with pytest.raises(EnvRequestError):
        EnvRequest(("--no-deps",))
