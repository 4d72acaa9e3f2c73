"""jupyter-anvil: a notebook's ``server`` cells served as an Anvil-style backend."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .host.extension import AnvilApp

    return [{"module": "jupyter_anvil.host.extension", "app": AnvilApp}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """The prebuilt JupyterLab extension (the Anvil panel), for ``jupyter labextension develop``."""
    return [{"src": "labextension", "dest": "jupyter-anvil"}]
