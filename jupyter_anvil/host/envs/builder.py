"""Building one environment: a venv filled by uv or pip, no shell anywhere.

Layered (the server's own Python): a venv of ``sys.executable`` that stays plain while the
installer runs, so the installer sees, upgrades and uninstalls nothing of the server's; then
``_jupyter_anvil_server.pth`` adds the server's site-packages AFTER the environment's own (an
app's pin shadows the server's version) so the kernel finds ipykernel and jupyter_anvil.
The install is constrained to the server's versions of the kernel's own packages.

Another Python ("3.12"): a plain venv of that interpreter (found on PATH as ``python3.12``; never
downloaded) with ipykernel at the server's version installed beside the requirements, and
jupyter_anvil's package linked in from a source checkout (an editable install) or copied in.

Every build ends with a smoke check: the environment's python imports ipykernel and
jupyter_anvil's kernel runtime.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import shutil
import signal
import site
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Literal

from .cache import BUILD_LOG, VENV, kernel_pins, venv_python
from .request import EnvRequest

InstallerKind = Literal["uv", "pip"]
INSTALLER_CHOICES = ("auto", "uv", "pip")
SERVER_PTH = "_jupyter_anvil_server.pth"
SMOKE_CHECK = "import ipykernel, jupyter_anvil.kernel.runtime"
ERROR_LINES = 40
# build.log is bounded: an installer in a loop must not fill the disk
MAX_LOG_BYTES = 4 * 1024 * 1024
# live output is coalesced into chunks of about this size, at most this often
OUTPUT_CHUNK = 4096
OUTPUT_INTERVAL = 0.2
# a build tells at most this much of its output live (the rest is in build.log)
MAX_LIVE_OUTPUT = 1024 * 1024


class BuildError(Exception):
    """A build step failed: str(e) is what the user needs (the installer's own message)."""


@dataclass(frozen=True)
class Installer:
    kind: InstallerKind
    uv: str | None = None  # the uv executable, for kind "uv"


def find_uv() -> str | None:
    """``uv`` on PATH, else the ``uv`` Python package's binary."""
    found = shutil.which("uv")
    if found:
        return found
    try:
        from uv import find_uv_bin  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    try:
        return str(find_uv_bin())
    except (FileNotFoundError, OSError):
        return None


def find_installer(choice: str) -> Installer:
    if choice not in INSTALLER_CHOICES:
        raise ValueError(f"env_installer must be one of {', '.join(INSTALLER_CHOICES)}, not {choice!r}")
    if choice == "pip":
        return Installer("pip")
    uv = find_uv()
    if uv is not None:
        return Installer("uv", uv)
    if choice == "uv":
        raise BuildError("env_installer is 'uv' but uv is not on PATH nor installed as a Python package")
    return Installer("pip")


async def _output_of(argv: Sequence[str], timeout: float) -> tuple[int | None, str]:
    """A short command's exit code and output (None: it did not start or took too long; it is
    killed then, and when the caller is cancelled)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as e:
        return None, str(e)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        return None, f"{argv[0]} did not answer within {timeout:g} s"
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(BaseException):
                await asyncio.shield(proc.wait())
    return proc.returncode, out.decode(errors="replace")


async def _python_version_of(executable: str) -> str | None:
    """The "3.N" an interpreter reports, or None if it does not run (a pyenv shim of a version
    that is not active, a broken link)."""
    code, out = await _output_of([executable, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], 20)
    return out.strip() if code == 0 else None


async def available_pythons() -> dict[str, str]:
    """The Python versions this machine runs (``python3.N`` on PATH that start, and the server's own)."""
    found = {f"{sys.version_info[0]}.{sys.version_info[1]}": sys.executable}
    for minor in range(8, 20):
        version = f"3.{minor}"
        path = shutil.which(f"python{version}")
        if version not in found and path and await _python_version_of(path) == version:
            found[version] = path
    return found


async def find_python(version: str) -> str:
    """The interpreter of this version, or BuildError naming it and what the machine has (never a download)."""
    path = shutil.which(f"python{version}")
    if path and await _python_version_of(path) == version:
        return path
    pythons = await available_pythons()
    if version in pythons:
        return pythons[version]
    has = ", ".join(sorted(pythons, key=lambda v: tuple(int(p) for p in v.split("."))))
    raise BuildError(
        f"python {version} is not on this machine (no working python{version} on PATH); it has python {has}"
    )


def pip_has_python_option() -> bool:
    """The server's pip installs into another environment (``pip --python``: pip 22.3 and later)."""
    try:
        version = metadata.version("pip")
    except metadata.PackageNotFoundError:
        return False
    parts = [int(p) if p.isdigit() else 0 for p in version.split(".")[:2]]
    return tuple(parts + [0] * (2 - len(parts))) >= (22, 3)


def server_site_dirs() -> list[str]:
    """The server's site-packages folders, in the order its own Python reads them."""
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        user = site.getusersitepackages()
        if os.path.isdir(user):
            dirs.append(user)
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]


def _jupyter_anvil_source() -> tuple[Path, bool]:
    """The folder holding the ``jupyter_anvil`` package, and whether it is a source checkout
    (an editable install, or a path) rather than one of the server's site-packages."""
    import jupyter_anvil

    package = Path(jupyter_anvil.__file__).resolve().parent
    parent = package.parent
    in_site = any(Path(d).resolve() == parent for d in server_site_dirs())
    return package, not in_site


class BuildLog:
    """The installer's output: appended to build.log (bounded), kept as its last lines for an
    error, and told live in coalesced chunks."""

    def __init__(self, path: Path, on_output: Callable[[str, int], None] | None) -> None:
        self.path = path
        self._file = path.open("ab")
        self._written = 0
        self._tail: deque[str] = deque(maxlen=ERROR_LINES)
        self._partial = ""
        self._on_output = on_output
        self._pending: list[str] = []
        self._pending_size = 0
        self._last_flush = time.monotonic()
        self._live = 0
        # the build.log offset after the output told live so far (raw bytes, as ``log()``
        # reads the file: an invalid byte shown as U+FFFD, or the live-only marker below, does
        # not move it), so a reader that fetched the log up to N skips what it holds
        self._read_bytes = 0  # what the decoder took in, a character cut at the end excluded
        self._pending_offset = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def write(self, data: bytes) -> None:
        if self._written < MAX_LOG_BYTES:
            room = MAX_LOG_BYTES - self._written
            self._file.write(data[:room])
            if len(data) > room:
                self._file.write(b"\n[build.log truncated]\n")
            self._written += len(data)
            self._file.flush()
        text = self._decoder.decode(data)  # a character cut between two reads is kept whole
        self._read_bytes += len(data)
        offset = self._read_bytes - len(self._decoder.getstate()[0])
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()[-2000:]
        self._tail.extend(line.rstrip("\r")[:2000] for line in lines)
        if self._on_output is not None and self._live < MAX_LIVE_OUTPUT:
            self._live += len(text)
            if self._live >= MAX_LIVE_OUTPUT:
                text += "\n[more output in the build log]\n"
            self._pending.append(text)
            self._pending_size += len(text)
            self._pending_offset = offset
            self.maybe_flush()

    def note(self, text: str) -> None:
        """A line of the builder's own (the command it runs), in the log and the live output."""
        self.write(f"{text}\n".encode())

    def maybe_flush(self, force: bool = False) -> None:
        due = self._pending_size >= OUTPUT_CHUNK or time.monotonic() - self._last_flush >= OUTPUT_INTERVAL
        if self._pending and (force or due) and self._on_output is not None:
            text = "".join(self._pending)
            self._pending.clear()
            self._pending_size = 0
            self._last_flush = time.monotonic()
            self._on_output(text, self._pending_offset)

    def new_section(self) -> None:
        """What follows is a new command's: an error quotes only its output."""
        self.maybe_flush(force=True)
        self._tail.clear()
        self._partial = ""

    def tail(self) -> str:
        lines = list(self._tail)
        if self._partial:
            lines.append(self._partial)
        return "\n".join(lines).strip()

    def close(self) -> None:
        self.maybe_flush(force=True)
        self._file.close()


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, OSError):
        if sys.platform != "win32":
            os.killpg(proc.pid, signal.SIGKILL)  # the installer and what it started
        else:
            proc.kill()


@dataclass
class BuildContext:
    folder: Path  # the building folder; the venv goes in folder/venv
    request: EnvRequest
    installer: Installer
    installer_args: tuple[str, ...]
    log: BuildLog
    on_installer_run: Callable[[], None] = lambda: None


async def run_command(ctx: BuildContext, argv: Sequence[str], *, installer: bool = True) -> None:
    """Run argv (no shell), its output into the log as it comes; BuildError with the output's last
    lines if it fails. Cancelled (a timeout, the server stopping): the process group is killed."""
    ctx.log.note("$ " + " ".join(argv))
    ctx.log.new_section()
    if installer:
        ctx.on_installer_run()
    env = dict(os.environ)
    env.update(
        PYTHONUNBUFFERED="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
        UV_NO_PROGRESS="1",
        UV_PYTHON_DOWNLOADS="never",  # a python the machine lacks is an error, not a download
        NO_COLOR="1",
    )
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
        cwd=str(ctx.folder),
        start_new_session=sys.platform != "win32",
    )
    assert proc.stdout is not None
    try:
        while True:
            try:
                data = await asyncio.wait_for(proc.stdout.read(OUTPUT_CHUNK), OUTPUT_INTERVAL)
            except asyncio.TimeoutError:
                ctx.log.maybe_flush()
                continue
            if not data:
                break
            ctx.log.write(data)
        code = await proc.wait()
    except BaseException:
        _kill_group(proc)
        with contextlib.suppress(BaseException):
            await asyncio.shield(proc.wait())
        raise
    ctx.log.maybe_flush(force=True)
    if code != 0:
        raise BuildError(ctx.log.tail() or f"{argv[0]} exited with code {code}")


def _venv_argv(ctx: BuildContext, python: str) -> list[str]:
    venv = str(ctx.folder / VENV)
    if ctx.installer.kind == "uv":
        assert ctx.installer.uv is not None
        return [ctx.installer.uv, "venv", "--no-config", "--python", python, venv]
    if pip_has_python_option():
        return [python, "-m", "venv", "--without-pip", venv]
    # an older pip (or none) in the server: the environment gets its own pip, which installs into it
    return [python, "-m", "venv", venv]


def _install_argv(ctx: BuildContext, requirements: Path, constraints: Path) -> list[str]:
    target = str(venv_python(ctx.folder / VENV))
    files = ["-r", str(requirements), "-c", str(constraints)]
    if ctx.installer.kind == "uv":
        assert ctx.installer.uv is not None
        return [ctx.installer.uv, "pip", "install", "--python", target, *files, *ctx.installer_args]
    if pip_has_python_option():
        return [sys.executable, "-m", "pip", "--python", target, "install", *files, *ctx.installer_args]
    return [target, "-m", "pip", "install", *files, *ctx.installer_args]


async def _site_packages(ctx: BuildContext) -> Path:
    python = venv_python(ctx.folder / VENV)
    code, out = await _output_of([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], 60)
    path = Path(out.strip())
    if code != 0 or not path.is_dir():
        raise BuildError(f"the new environment's python does not start: {out[-2000:]}")
    return path


async def build_env(ctx: BuildContext) -> None:
    """Build the environment in ctx.folder/venv; BuildError says why not."""
    request = ctx.request
    layered = request.python is None
    python = sys.executable if layered else await find_python(request.python or "")
    requirements = list(request.requirements)
    if not layered:
        # a plain environment of another Python: the kernel itself comes from the install
        requirements.append(f"ipykernel=={metadata.version('ipykernel')}")
    requirements_file = ctx.folder / "requirements.txt"
    requirements_file.write_text("".join(f"{r}\n" for r in requirements))
    constraints_file = ctx.folder / "constraints.txt"
    constraints_file.write_text("".join(f"{pin}\n" for pin in kernel_pins()) if layered else "")

    await run_command(ctx, _venv_argv(ctx, python))
    await run_command(ctx, _install_argv(ctx, requirements_file, constraints_file))
    site_packages = await _site_packages(ctx)
    if layered:
        dirs = server_site_dirs()
        line = "import site; " + "; ".join(f"site.addsitedir({d!r})" for d in dirs)
        (site_packages / SERVER_PTH).write_text(line + "\n")
        ctx.log.note(f"layered over the server's packages: {', '.join(dirs)}")
    else:
        # jupyter_anvil is pure Python: the kernel side runs under any Python it supports.
        package, is_source = _jupyter_anvil_source()
        linked = False
        if is_source:
            # a source checkout (an editable install): linked, so the env follows edits; only the
            # package is reachable, not the checkout's other folders (tests, bench, ...)
            try:
                os.symlink(package, site_packages / package.name, target_is_directory=True)
                linked = True
            except OSError:
                linked = False  # no symlinks here (Windows without the privilege): copied
        if linked:
            ctx.log.note(f"jupyter_anvil linked from its source folder {package}")
        else:
            shutil.copytree(package, site_packages / package.name, ignore=shutil.ignore_patterns("__pycache__"))
            ctx.log.note(f"jupyter_anvil copied from {package}")
    ctx.log.note("smoke check: " + SMOKE_CHECK)
    try:
        await run_command(ctx, [str(venv_python(ctx.folder / VENV)), "-c", SMOKE_CHECK], installer=False)
    except BuildError as e:
        raise BuildError(f"the environment's kernel cannot start (smoke check failed):\n{e}") from None


def open_log(folder: Path, on_output: Callable[[str, int], None] | None) -> BuildLog:
    return BuildLog(folder / BUILD_LOG, on_output)
