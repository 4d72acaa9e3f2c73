"""The kernel spec that starts an ipykernel in an environment: ``anvil-env-<id>``.

The host starts an app's kernels with ``AsyncKernelManager(kernel_name="anvil-env-<id>",
kernel_spec_manager=<EnvKernelSpecs>)``; every other name goes to the normal lookup, so one
instance serves apps with and without environments.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpec, KernelSpecManager, NoSuchKernel

KERNEL_PREFIX = "anvil-env-"


def kernel_name(env_id: str) -> str:
    return f"{KERNEL_PREFIX}{env_id}"


class EnvKernelSpecs(KernelSpecManager):  # type: ignore[misc]
    """Kernel specs of the ready environments (found through ``lookup``), then the normal ones."""

    def __init__(self, lookup: Callable[[str], Path | None], on_start: Callable[[str], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # env id -> the environment's python, or None if it is not ready
        self._lookup = lookup
        # told each time a kernel spec is asked for (a kernel is about to start): the env's last use
        self._on_start = on_start

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        if not kernel_name.startswith(KERNEL_PREFIX):
            return super().get_kernel_spec(kernel_name)
        env_id = kernel_name[len(KERNEL_PREFIX) :]
        python = self._lookup(env_id)
        if python is None:
            raise NoSuchKernel(kernel_name)
        self._on_start(env_id)
        return KernelSpec(
            argv=[str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            language="python",
            display_name=f"Python (anvil environment {env_id})",
            resource_dir=str(python.parent),
            metadata={"debugger": False},
        )
