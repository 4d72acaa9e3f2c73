"""An app's requirements as its notebook reads: the metadata's list, else the file beside
the notebook (the metadata wins, and says so), bad entries a clear problem, a saved
requirements file re-read by the scanner."""

from __future__ import annotations

import os
from pathlib import Path

from notebook_files import write_notebook

from jupyter_anvil.host.notebooks import AppSpec, NotebookProblem, Scanner, read_app


def app(root: Path, metadata: dict[str, object] | None = None) -> AppSpec | NotebookProblem | None:
    path = write_notebook(root / "helpdesk.ipynb", ["x = 1"], metadata)
    return read_app(root, path)


def test_metadata_requirements_and_python(tmp_path: Path) -> None:
    spec = app(tmp_path, {"requirements": ["requests>=2.31", "tinypkg==1.0"], "python": "3.11"})
    assert isinstance(spec, AppSpec)
    assert spec.requirements == ("requests>=2.31", "tinypkg==1.0") and spec.python == "3.11"
    assert spec.requirements_source == "metadata" and spec.requirements_note is None
    assert not spec.env_request.empty


def test_no_requirements_is_the_default_kernel(tmp_path: Path) -> None:
    spec = app(tmp_path)
    assert isinstance(spec, AppSpec) and spec.env_request.empty and spec.requirements_source is None


def test_the_file_beside_the_notebook(tmp_path: Path) -> None:
    (tmp_path / "helpdesk.requirements.txt").write_text("# what the helpdesk needs\ntinypkg==1.0\n\nrequests\n")
    spec = app(tmp_path)
    assert isinstance(spec, AppSpec)
    assert spec.requirements == ("tinypkg==1.0", "requests") and spec.requirements_source == "file"


def test_metadata_wins_over_the_file_and_says_so(tmp_path: Path) -> None:
    (tmp_path / "helpdesk.requirements.txt").write_text("tinypkg==1.0\n")
    spec = app(tmp_path, {"requirements": ["tinypkg==2.0"]})
    assert isinstance(spec, AppSpec) and spec.requirements == ("tinypkg==2.0",)
    assert spec.requirements_note == "metadata.jupyter_anvil.requirements wins over helpdesk.requirements.txt"


def test_bad_entries_are_a_clear_problem(tmp_path: Path) -> None:
    for bad, says in [
        (["requests>="], "requests>="),
        ("requests", "list"),
        (["--index-url=http://x"], "env_installer_args"),
        ([1], "must be a string"),
    ]:
        problem = app(tmp_path, {"requirements": bad})
        assert isinstance(problem, NotebookProblem) and problem.name == "helpdesk", bad
        assert "requirements" in problem.message and says in problem.message, problem.message


def test_a_bad_python_is_a_clear_problem(tmp_path: Path) -> None:
    problem = app(tmp_path, {"python": "python3; rm -rf /"})
    assert isinstance(problem, NotebookProblem) and "python must be a version like" in problem.message


def test_a_bad_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "helpdesk.requirements.txt").write_text("tinypkg==1.0\nnot a requirement!!\n")
    problem = app(tmp_path)
    assert isinstance(problem, NotebookProblem) and "helpdesk.requirements.txt" in problem.message


def test_saving_the_file_changes_the_fingerprint_and_the_scanner_sees_it(tmp_path: Path) -> None:
    write_notebook(tmp_path / "helpdesk.ipynb", ["x = 1"])
    scanner = Scanner(tmp_path)
    first = scanner.scan()[0]["helpdesk"]
    file = tmp_path / "helpdesk.requirements.txt"
    file.write_text("tinypkg==1.0\n")
    second = scanner.scan()[0]["helpdesk"]
    assert second.requirements == ("tinypkg==1.0",) and second.fingerprint != first.fingerprint
    file.write_text("tinypkg==2.0\n")
    os.utime(file, ns=(1, 1))  # even a save that keeps size and (here) sets an old time
    third = scanner.scan()[0]["helpdesk"]
    assert third.requirements == ("tinypkg==2.0",)
    file.unlink()
    assert scanner.scan()[0]["helpdesk"].requirements == ()
