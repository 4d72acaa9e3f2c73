"""The scanner's memory of each notebook's last good app, without a server: an
unreadable or badly edited notebook serves on as it was; deleting it, or saving it
without server cells or under another name, ends that."""

from __future__ import annotations

import os
from pathlib import Path

from notebook_files import write_notebook

from jupyter_anvil.host.notebooks import Scanner

CELL = "from jupyter_anvil import server\n@server.callable\ndef f():\n    return 1\n"


def rewrite(path: Path, text: str) -> None:
    """Write in place (not atomically), as an editor caught mid-save leaves the file,
    and make sure the scanner sees a new modification time."""
    stat = path.stat()
    path.write_text(text)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


def test_an_unreadable_notebook_keeps_its_last_good_app(tmp_path: Path) -> None:
    path = write_notebook(tmp_path / "app.ipynb", [CELL])
    good = path.read_text()
    scanner = Scanner(tmp_path)
    specs, problems = scanner.scan()
    first = specs["app"]
    assert problems == []

    for broken in (good[: len(good) // 2], "", "{}", "not json at all"):
        rewrite(path, broken)
        specs, problems = scanner.scan()
        assert specs == {"app": first}, broken
        assert len(problems) == 1 and problems[0].name == "app" and problems[0].previous == first
        assert problems[0].message.startswith("cannot read the notebook"), problems[0].message
        specs, problems = scanner.scan()  # from the cache, the same
        assert specs == {"app": first} and problems[0].previous == first

    rewrite(path, good)
    specs, problems = scanner.scan()
    assert specs["app"].fingerprint == first.fingerprint and problems == []


def test_bad_metadata_on_a_save_keeps_the_last_good_app_but_not_on_a_first_read(tmp_path: Path) -> None:
    path = write_notebook(tmp_path / "app.ipynb", [CELL])
    scanner = Scanner(tmp_path)
    first = scanner.scan()[0]["app"]
    write_notebook(path, [CELL], {"kernels": {"min": 3, "max": 1}})
    specs, problems = scanner.scan()
    assert specs == {"app": first}
    assert problems[0].previous == first and "kernels.min (3) is greater" in problems[0].message

    fresh = write_notebook(tmp_path / "fresh.ipynb", [CELL], {"kernels": {"min": 3, "max": 1}})
    specs, problems = scanner.scan()
    assert "fresh" not in specs
    assert any(p.notebook == fresh.name and p.name == "fresh" and p.previous is None for p in problems)


def test_the_last_good_app_ends_with_deletion_no_server_cells_or_another_name(tmp_path: Path) -> None:
    path = write_notebook(tmp_path / "app.ipynb", [CELL])
    scanner = Scanner(tmp_path)
    scanner.scan()
    path.unlink()
    assert scanner.scan() == ({}, [])
    rewrite(write_notebook(path, [CELL]), "")  # a new, empty file: no good version was ever read
    assert scanner.scan() == ({}, [])

    write_notebook(path, [CELL])
    scanner.scan()
    write_notebook(path, [], untagged_cells=[CELL])  # readable, no server cells: not an app any more
    assert scanner.scan() == ({}, [])
    rewrite(path, "")
    assert scanner.scan() == ({}, [])

    write_notebook(path, [CELL])
    scanner.scan()
    write_notebook(path, [CELL], {"app": "other"})
    assert list(scanner.scan()[0]) == ["other"]
    rewrite(path, "")
    specs, problems = scanner.scan()
    assert list(specs) == ["other"] and problems[0].name == "other"
