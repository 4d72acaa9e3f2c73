"""Editing an app's requirements in its notebook: add replaces a requirement of the same
project, remove goes by canonical project name, everything else in the notebook is kept,
bad input is refused naming what is wrong and writes nothing."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from notebook_files import write_notebook

from jupyter_anvil.host.envs.request import EnvRequestError
from jupyter_anvil.host.requirements_edit import RequirementsEditError, edit_requirements, project_name


def notebook(tmp_path: Path, metadata: dict[str, object]) -> Path:
    return write_notebook(tmp_path / "shop.ipynb", ["x = 1"], metadata, untagged_cells=["print('kept')"])


def test_project_names() -> None:
    assert project_name("Requests>=2.31") == "requests"
    assert project_name("zope.interface") == "zope-interface"
    assert project_name("./wheels/Tiny_Pkg-1.0-py3-none-any.whl") == "tiny-pkg"


def test_add_and_remove_keep_everything_else(tmp_path: Path) -> None:
    path = notebook(tmp_path, {"requirements": ["requests>=2.0", "Tiny_Pkg==1.0"], "kernels": {"min": 1}})
    before = nbformat.read(str(path), as_version=4)
    assert edit_requirements(path, ["requests>=2.31", "six"], ["tiny-pkg"]) == ["requests>=2.31", "six"]
    after = nbformat.read(str(path), as_version=4)
    assert after.metadata["jupyter_anvil"] == {"requirements": ["requests>=2.31", "six"], "kernels": {"min": 1}}
    assert [c.source for c in after.cells] == [c.source for c in before.cells]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_starts_from_the_requirements_file(tmp_path: Path) -> None:
    path = notebook(tmp_path, {})
    (tmp_path / "shop.requirements.txt").write_text("six\nrequests\n")
    assert edit_requirements(path, ["tiny==1.0"], None) == ["six", "requests", "tiny==1.0"]


@pytest.mark.parametrize(
    ("add", "remove", "says"),
    [
        (["requests>="], None, "requests>="),
        ("six", None, "add"),
        (["--index-url=http://evil"], None, "env_installer_args"),
        (None, "six", "remove must be a list"),
        (None, ["numpy"], "no requirement of 'numpy'"),
        ([f"pkg{i}" for i in range(300)], None, "200"),
    ],
)
def test_bad_changes_are_refused_and_nothing_written(tmp_path: Path, add: object, remove: object, says: str) -> None:
    path = notebook(tmp_path, {"requirements": ["six"]})
    before = path.read_bytes()
    with pytest.raises((EnvRequestError, RequirementsEditError)) as caught:
        edit_requirements(path, add, remove)
    assert says in str(caught.value)
    assert path.read_bytes() == before
