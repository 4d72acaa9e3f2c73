"""Tiny wheels made in the test, for installs with no network (``--no-index --find-links <dir>``).

A wheel is a zip of the package's files and ``<name>-<version>.dist-info/{METADATA,WHEEL,RECORD}``:
written here by hand, so no build backend is needed and a wheel takes a millisecond.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from collections.abc import Sequence
from pathlib import Path


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def make_wheel(
    folder: Path,
    name: str,
    version: str,
    *,
    requires: Sequence[str] = (),
    module_source: str | None = None,
    extra_files: dict[str, str] | None = None,
) -> Path:
    """Write ``<name>-<version>-py3-none-any.whl`` into folder: a module ``name`` whose
    ``__version__`` is version (or module_source), depending on requires, with extra_files
    (path in the wheel -> text) beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {r}\n" for r in requires)
    files = {
        f"{dist}/__init__.py": (module_source or f"__version__ = {version!r}\n").encode(),
        f"{info}/METADATA": metadata.encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: anvil-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files.update({path: text.encode() for path, text in (extra_files or {}).items()})
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in files.items())
    record += f"{info}/RECORD,,\n"
    files[f"{info}/RECORD"] = record.encode()
    wheel = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return wheel
